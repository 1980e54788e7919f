"""Bad input, property-based (issue 9, part 2): the loaders either load or raise the project's
own error naming where the problem is, and never leave a file behind.

Every test feeds a loader something hypothesis built: a valid record with one field deleted or
replaced by an arbitrary JSON value (wrong types, blanks, lone surrogates, nesting), garbage
lines, files cut at an arbitrary byte, mutated and truncated image files of several formats,
image headers that claim huge sizes, and config files with a key replaced. The property checked
each time:

- the call returns normally (and what it returns is sane), or
- it raises a `mmboundary.errors.MMBoundaryError` subclass (`DataError` for data, `ConfigError`
  for config) whose message names the file and the line/record and field of the problem (the
  field is the one that was mutated, or one that depends on it);
- no other exception type escapes, and the folder holds the same files afterwards.

The config loader's non-UTF-8, huge-integer and deep-nesting cases are tested at the end.
"""

from __future__ import annotations

import io
import json
import os
import string
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from _helpers import png_header_only
from mmboundary.config import RunConfig, load_config
from mmboundary.data.images import MAX_IMAGE_PIXELS, check_image, load_image
from mmboundary.data.jsonl import write_examples
from mmboundary.data.loading import load_dataset_file
from mmboundary.errors import ConfigError, DataError, MMBoundaryError
from mmboundary.records import Example

# Modest example counts and no deadline: the whole file runs in well under 30 s on 2 cores.
# No example database (failures print their reproduction instead); hypothesis still keeps its
# own caches in .hypothesis/, which carries its own .gitignore.
FAST = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


# --- helpers ---------------------------------------------------------------------------------

def listing(folder: Path) -> list[str]:
    """Every path under `folder` (relative), hidden temporaries included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def field_of(path: tuple) -> str:
    """A mutation path as the loaders spell a field: ('chain', 0, 'text') -> 'chain[0].text'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def within(field: str | None, prefix: str) -> bool:
    """`field` is `prefix` or a part of it ('chain[0].text' is within 'chain' and 'chain[0]')."""
    return field is not None and (field == prefix or field.startswith(prefix + ".")
                                  or field.startswith(prefix + "["))


def assert_names_place(err: DataError, *, file: Path, line: int | None) -> None:
    """The error names the file (attribute and message) and, when given, the line."""
    msg = str(err)
    assert err.file == str(file), msg
    assert str(file) in msg, msg
    if line is not None:
        assert err.line == line, msg
        assert f"line {line}" in msg, msg
    if err.field is not None:
        assert f"field '{err.field}'" in msg, msg


def paths_in(value, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (object keys and list indices), the value itself excluded."""
    out = []
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return out
    for key, item in items:
        out.append((*prefix, key))
        out += paths_in(item, (*prefix, key))
    return out


_DELETE = object()


def mutated(record, path: tuple, value):
    """A deep copy of `record` with the value at `path` replaced (or deleted: `_DELETE`)."""
    record = json.loads(json.dumps(record))
    node = record
    for part in path[:-1]:
        node = node[part]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return record


# Arbitrary JSON values: wrong types, blanks, NaN/inf, lone surrogates, nesting.
json_scalars = (st.none() | st.booleans() | st.integers(-10**12, 10**12)
                | st.floats(allow_nan=True, allow_infinity=True)
                | st.text(max_size=12)
                | st.sampled_from(["", " ", "\t\n", "\ud800", "ok\udfff", "0", "true", "[]"]))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6)


def image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((24, 24), 40).convert("RGB").save(buf, fmt)
    return buf.getvalue()


IMAGE_FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]
VALID_IMAGES = {fmt: image_bytes(fmt) for fmt in IMAGE_FORMATS}


def make_image_folder(root: Path) -> None:
    """The images the records below refer to: one good, and one of each kind of bad."""
    Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "good.png")
    (root / "text.png").write_text("not an image\n")
    (root / "truncated.png").write_bytes(VALID_IMAGES["PNG"][:60])
    (root / "bomb.png").write_bytes(png_header_only(20000, 20000))  # 400 MP
    (root / "folder.png").mkdir()


IMAGE_NAMES = ["good.png", "text.png", "truncated.png", "bomb.png", "folder.png", "missing.png"]


# --- the project's JSONL format --------------------------------------------------------------

JSONL_RECORD = {
    "id": "q1", "image": "good.png", "question": "What colour is the square?",
    "choices": ["red", "blue"], "answers": ["red"],
    "chain": [{"text": "The square is red.", "kind": "perception", "truth": True},
              {"text": "So the answer is red.", "kind": "reasoning"}],
    "split": "test",
    "scene": {"objects": [{"shape": "square", "color": "red", "size": "large",
                           "column": "middle", "row": "center"}], "background": "white"},
}
JSONL_PATHS = paths_in(JSONL_RECORD)
UNKNOWN_KEY = st.text(min_size=1, max_size=8).filter(lambda k: k not in JSONL_RECORD
                                                     and lone_ok(k))


def lone_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def assert_sane(examples: list[Example]) -> None:
    """What a loader returns: usable examples, nothing blank, absolute image paths."""
    assert examples
    assert len({ex.id for ex in examples}) == len(examples)
    for ex in examples:
        assert ex.id.strip() and ex.question.strip()
        assert ex.answers and all(a.strip() for a in ex.answers)
        assert all(step.text.strip() for step in ex.chain)
        assert ex.image.is_absolute()
        assert ex.choices is None or len(ex.choices) > 0
        for text in (ex.id, ex.question, *ex.answers, *(s.text for s in ex.chain)):
            text.encode("utf-8")  # writable back as UTF-8 (no lone surrogate)


mutations = st.one_of(
    st.tuples(st.sampled_from(JSONL_PATHS), st.just(_DELETE)),
    st.tuples(st.sampled_from(JSONL_PATHS), json_values),
    st.tuples(st.sampled_from([("image",)]), st.sampled_from(IMAGE_NAMES)),
    st.tuples(st.sampled_from([("question",), ("chain", 0, "text"), ("answers", 0)]),
              st.text(alphabet=" \t\u00a0\u2003", max_size=4)),  # blank or empty text
    st.tuples(UNKNOWN_KEY.map(lambda k: (k,)), json_values),
)


@FAST
@given(mutation=mutations, check_images=st.booleans())
def test_jsonl_record_with_one_bad_field(mutation, check_images):
    """One field deleted or replaced: it loads, or the error names the file, line 2 and that
    field (or a field inside it)."""
    path_in_record, value = mutation
    record = mutated(JSONL_RECORD, path_in_record, value)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_image_folder(root)
        other = {**JSONL_RECORD, "id": "other"}
        data = root / "data.jsonl"
        data.write_text(json.dumps(other) + "\n" + json.dumps(record) + "\n", encoding="utf-8")
        before = listing(root)
        try:
            examples = load_dataset_file(data, check_images=check_images)
        except DataError as e:
            assert_names_place(e, file=data, line=2)
            changed = field_of(path_in_record)
            if changed == "id" and record.get("id") == "other":
                assert "duplicate id" in str(e)
            else:  # the field changed, a field inside it, or the list/object holding it
                assert within(e.field, changed) or within(changed, e.field), (
                    f"mutated {changed!r}, error names {e.field!r}: {e}")
        else:
            assert_sane(examples)
            assert len(examples) == 2
            assert examples[1].question == record["question"]
            assert examples[1].image == Path(os.path.normpath(root / record["image"]))
            if check_images:
                assert record["image"] == "good.png"
        assert listing(root) == before


@FAST
@given(garbage=st.one_of(st.binary(max_size=80).map(lambda b: b.replace(b"\n", b" ")),
                         json_values.map(lambda v: json.dumps(v).encode())))
def test_jsonl_garbage_line(garbage):
    """A line of arbitrary bytes (or an arbitrary JSON value) between two good lines: it loads
    (a blank line is skipped), or the error names the file and line 2."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_image_folder(root)
        data = root / "data.jsonl"
        first = json.dumps({**JSONL_RECORD, "id": "a"}).encode()
        last = json.dumps({**JSONL_RECORD, "id": "c"}).encode()
        data.write_bytes(first + b"\n" + garbage + b"\n" + last + b"\n")
        before = listing(root)
        try:
            examples = load_dataset_file(data)
        except DataError as e:
            assert_names_place(e, file=data, line=e.line)
            assert e.line == 2 or (e.line == 3 and "duplicate id" in str(e)), str(e)
        else:
            assert_sane(examples)
            assert [ex.id for ex in examples][::len(examples) - 1] == ["a", "c"]
        assert listing(root) == before


@FAST
@given(cut=st.floats(0, 1, exclude_max=True))
def test_jsonl_file_cut_at_any_byte(cut):
    """A file cut at an arbitrary byte (non-ASCII text, so also inside a UTF-8 character): the
    complete lines load, or the error names the cut line; an empty prefix is an empty file."""
    records = [{**JSONL_RECORD, "id": f"q{i}", "question": f"Quelle est la couleur {i} ? ✓ café"}
               for i in range(3)]
    full = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    prefix = full[: int(cut * len(full))]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_image_folder(root)
        data = root / "data.jsonl"
        data.write_bytes(prefix)
        whole_lines = [json.dumps(r, ensure_ascii=False).encode() for r in records]
        lines = prefix.split(b"\n")
        complete = [ln for ln in lines if ln in whole_lines]
        cut_line = len(lines) if lines[-1] and lines[-1] not in whole_lines else None
        before = listing(root)
        try:
            examples = load_dataset_file(data)
        except DataError as e:
            if not prefix:
                assert_names_place(e, file=data, line=None)
                assert e.line is None and "empty dataset file" in str(e)
            else:  # the cut line, and only it, is reported (malformed JSON or broken UTF-8)
                assert cut_line is not None, f"{len(complete)} whole lines did not load: {e}"
                assert_names_place(e, file=data, line=cut_line)
        else:
            assert cut_line is None
            assert [ex.id for ex in examples] == [r["id"] for r in records[: len(complete)]]
        assert listing(root) == before


def test_jsonl_empty_and_blank_questions_and_chains(tmp_path):
    """Hand-picked cases of the brief: an empty chain loads; blank text is an error naming it."""
    make_image_folder(tmp_path)
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({**JSONL_RECORD, "chain": []}) + "\n")
    assert load_dataset_file(data)[0].chain == ()
    for change, field in [({"question": ""}, "question"), ({"question": " \t"}, "question"),
                          ({"chain": [{"text": "  ", "kind": "reasoning"}]}, "chain[0].text"),
                          ({"chain": [{"text": "", "kind": "reasoning"}]}, "chain[0].text"),
                          ({"answers": []}, "answers"), ({"answers": [""]}, "answers[0]")]:
        data.write_text(json.dumps({**JSONL_RECORD, **change}) + "\n")
        with pytest.raises(DataError) as e:
            load_dataset_file(data)
        assert_names_place(e.value, file=data, line=1)
        assert e.value.field == field, str(e.value)


@pytest.mark.parametrize("line,reason", [
    ('{"id": 1' + "0" * 5000 + "}", "4300 digits"),   # int() refuses over 4300 digits
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # RecursionError in json
])
def test_jsonl_unparseable_json_is_a_data_error(tmp_path, line, reason):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({**JSONL_RECORD, "id": "a"}) + "\n" + line + "\n")
    with pytest.raises(DataError) as e:
        load_dataset_file(data, check_images=False)
    assert_names_place(e.value, file=data, line=2)
    assert reason in str(e.value)


# --- the authors' annotated format -----------------------------------------------------------

AOK_FIRST = {"question_id": "first", "image_id": 1, "question": "Which is first?",
             "choices": ["x", "y"], "correct_choice_idx": 0, "direct_answers": ["x"],
             "keys_filtered": {"Reasoning_level": ["So, the answer is x."]}}
AOK_RECORD = {
    "split": "val", "image_id": 377368, "question_id": "2Aq5RiEn7eyfWjEbpuYT2o",
    "question": "Which number birthday is probably being celebrated?",
    "choices": ["one", "ten", "nine", "thirty"], "correct_choice_idx": 3,
    "direct_answers": ["thirty", "30th"],
    "keys_filtered": {"Image_level": ["The cake has the number 30 on it."],
                      "Reasoning_level": ["30 is the age.", "So, the answer is thirty"]},
}
AOK_PATHS = paths_in(AOK_RECORD)
# The fields an error may name when a given top-level field was changed: the field itself, or
# one whose meaning depends on it (no choices -> direct answers are needed; the index points
# into the choices, whose correct entry must not be blank).
AOK_DEPENDS = {"choices": {"choices", "direct_answers", "correct_choice_idx"},
               "correct_choice_idx": {"correct_choice_idx", "choices"}}


@FAST
@given(mutation=st.one_of(
    st.tuples(st.sampled_from(AOK_PATHS), st.just(_DELETE)),
    st.tuples(st.sampled_from(AOK_PATHS), json_values),
    st.tuples(st.sampled_from([("question",), ("keys_filtered", "Reasoning_level", 0)]),
              st.text(alphabet=" \t\u3000", max_size=3)),
    st.tuples(st.sampled_from([("keys_filtered", "Reasoning_level")]), st.just([])),
    st.tuples(st.sampled_from([("image",)]), st.sampled_from(IMAGE_NAMES) | json_values),
    st.tuples(st.sampled_from([("image_id",)]),
              st.sampled_from(["\u00b2", "٣", "7" * 5000, " 12 ", "-1", "1e3"])),
    st.tuples(st.text(min_size=1, max_size=8).filter(lone_ok).map(lambda k: (k,)), json_values),
), check_images=st.booleans())
def test_annotated_record_with_one_bad_field(mutation, check_images):
    """One field of an A-OKVQA record deleted or replaced: it loads, or the error names the file,
    record 2 and that field (or one that depends on it)."""
    path_in_record, value = mutation
    record = mutated(AOK_RECORD, path_in_record, value)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_image_folder(root)
        for image_id in (1, 377368):
            (root / f"{image_id:012d}.jpg").write_bytes((root / "good.png").read_bytes())
        data = root / "ann.json"
        data.write_text(json.dumps([AOK_FIRST, record]), encoding="utf-8")
        before = listing(root)
        try:
            examples = load_dataset_file(data, fmt="annotated", image_dir=root,
                                         dataset="aokvqa", check_images=check_images)
        except DataError as e:
            assert_names_place(e, file=data, line=2)
            assert "record 2:" in str(e)
            top = path_in_record[0]
            allowed = AOK_DEPENDS.get(top, {top})
            if top == "question_id" and record.get("question_id") == "first":
                assert "repeats the id" in str(e)
            assert e.field is not None, str(e)
            assert any(within(e.field, a) for a in allowed), (
                f"mutated {field_of(path_in_record)!r}, error names {e.field!r}: {e}")
        else:
            assert_sane(examples)
            assert len(examples) in (1, 2)  # a repeat of record 1's id with equal fields is dropped
            assert examples[0].id == "first"
        assert listing(root) == before


@FAST
@given(content=st.one_of(
    st.binary(max_size=120),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.floats(0, 1, exclude_max=True).map(
        lambda cut: (s := json.dumps([AOK_FIRST, AOK_RECORD], indent=1).encode())[: int(cut * len(s))]),
))
def test_annotated_garbage_or_cut_file(content):
    """Arbitrary bytes, an arbitrary JSON value, or a valid file cut at any byte: it loads, or
    the error names the file (and, for broken JSON, the line)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "ann.json"
        data.write_bytes(content)
        before = listing(root)
        try:
            examples = load_dataset_file(data, fmt="annotated", check_images=False)
        except DataError as e:
            assert_names_place(e, file=data, line=e.line)
            if "malformed JSON" in str(e):
                assert e.line is not None and 1 <= e.line <= content.count(b"\n") + 1
        else:
            assert_sane(examples)
        assert listing(root) == before


@pytest.mark.parametrize("image_id", ["\u00b2", "7" * 5000])
def test_annotated_odd_digit_image_ids(tmp_path, image_id):
    """Found by the property test: "²" passes `str.isdigit` but not `int`, and 5000 digits pass
    neither `int` nor the file-name pattern; both are now a DataError naming image_id."""
    data = tmp_path / "ann.json"
    data.write_text(json.dumps([{**AOK_RECORD, "image_id": image_id}]))
    with pytest.raises(DataError) as e:
        load_dataset_file(data, fmt="annotated", image_dir=tmp_path, check_images=False)
    assert_names_place(e.value, file=data, line=1)
    assert e.value.field == "image_id"


def test_annotated_lone_surrogate_names_the_field(tmp_path):
    """A lone surrogate (JSON escape "\\ud800") is refused naming the record's own field (before,
    the error named the field of the built `Example`, 'chain[0].text')."""
    record = mutated(AOK_RECORD, ("keys_filtered", "Reasoning_level", 0), "a\ud800b")
    data = tmp_path / "ann.json"
    data.write_text(json.dumps([record]))
    with pytest.raises(DataError) as e:
        load_dataset_file(data, fmt="annotated", image_dir=tmp_path, check_images=False)
    assert e.value.field == "keys_filtered.Reasoning_level[0]", str(e.value)
    assert "surrogate" in str(e.value)


# --- images -----------------------------------------------------------------------------------

@FAST
@given(fmt=st.sampled_from(IMAGE_FORMATS), how=st.sampled_from(["cut", "flip", "splice"]),
       where=st.floats(0, 1, exclude_max=True), noise=st.binary(min_size=1, max_size=16))
def test_damaged_image_file(fmt, how, where, noise):
    """An image file truncated or with bytes overwritten: `check_image` passes or raises a
    DataError naming the dataset file, line and field; `load_image` returns an RGB image or
    raises a DataError naming the image file."""
    data = bytearray(VALID_IMAGES[fmt])
    at = int(where * len(data))
    if how == "cut":
        data = data[:at]
    elif how == "flip":
        data[at:at + len(noise)] = noise
    else:
        data[at:at] = noise
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        image = root / f"damaged.{fmt.lower()}"
        image.write_bytes(bytes(data))
        dataset = root / "data.jsonl"
        before = listing(root)
        try:
            check_image(image, file=dataset, line=7, field="image")
        except DataError as e:
            assert_names_place(e, file=dataset, line=7)
            assert e.field == "image" and str(image) in str(e)
        try:
            img = load_image(image)
        except DataError as e:
            assert e.file == str(image) and str(image) in str(e)
        else:
            assert img.mode == "RGB" and img.size[0] * img.size[1] <= MAX_IMAGE_PIXELS
        assert listing(root) == before


@FAST
@given(content=st.binary(max_size=200))
def test_non_image_bytes(content):
    """Arbitrary bytes as an image: a DataError naming the dataset file, line and field (or, in
    the unlikely case hypothesis writes a valid image, it passes)."""
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "x.jpg"
        image.write_bytes(content)
        try:
            check_image(image, file="d.jsonl", line=3, field="image")
        except DataError as e:
            assert (e.file, e.line, e.field) == ("d.jsonl", 3, "image")
            assert str(image) in str(e)
        try:
            load_image(image)
        except DataError as e:
            assert e.file == str(image)


@FAST
@given(width=st.integers(1, 2**16), height=st.integers(1, 2**16),
       limit=st.sampled_from([None, 1, 64 * 64, 10**6, MAX_IMAGE_PIXELS]))
def test_huge_image_headers_are_refused_before_decoding(width, height, limit):
    """A PNG header claiming up to 65536 x 65536 pixels (no pixel data): over the project's
    limit, or over PIL's decompression-bomb guard when the limit is off (None), it is "too
    large"; otherwise it opens and fails as truncated. Never decoded, never allocated."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    assert pil_limit is not None  # PIL's guard is on (nobody turned it off globally)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "big.png"
        image.write_bytes(png_header_only(width, height))
        with pytest.raises(DataError) as e:
            check_image(image, file="d.jsonl", line=1, field="image", max_pixels=limit)
        over = width * height > (limit if limit is not None else pil_limit)
        assert ("too large" in str(e.value)) == over, str(e.value)
        if not over:
            assert "corrupt or truncated" in str(e.value)
        with pytest.raises(DataError) as e2:
            load_image(image, max_pixels=limit)
        assert ("too large" in str(e2.value)) == over, str(e2.value)


# --- writing examples: no partial output ------------------------------------------------------

def _example(root: Path, i: int) -> Example:
    return Example(id=f"e{i}", image=root / "good.png", question="What is it?", answers=("x",))


def test_write_examples_leaves_no_partial_output(tmp_path):
    """A failure part-way through `write_examples` (here the source of examples breaks after one)
    leaves the earlier file as it was and no temporary file behind."""
    make_image_folder(tmp_path)
    out = tmp_path / "out" / "train.jsonl"
    write_examples([_example(tmp_path, 0)], out)
    old = out.read_bytes()

    def examples():
        yield _example(tmp_path, 1)
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        write_examples(examples(), out)
    assert out.read_bytes() == old
    assert listing(out.parent) == ["train.jsonl"]
    assert write_examples([_example(tmp_path, 1), _example(tmp_path, 2)], out) == 2


# --- config files -----------------------------------------------------------------------------

def _flat(value, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(value, dict):
        for key, item in value.items():
            out.append((*prefix, key))
            out += _flat(item, (*prefix, key))
    return out


CONFIG_DEFAULT = RunConfig().model_dump(mode="json")
CONFIG_KEYS = _flat(CONFIG_DEFAULT)
config_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
    | st.text(alphabet=string.printable, max_size=10),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(alphabet=string.ascii_letters, min_size=1, max_size=6), inner,
                      max_size=3),
    max_leaves=5)


@FAST
@given(key=st.sampled_from(CONFIG_KEYS)
       | st.tuples(st.sampled_from([k for k in CONFIG_KEYS if len(k) == 1] + [()]),
                   st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8))
       .map(lambda t: (*t[0], t[1])),
       value=config_values, via=st.sampled_from(["file", "override"]))
def test_config_with_one_bad_key(key, value, via):
    """A config (file or `--set` override) with one key set to an arbitrary value, or an unknown
    key: it loads, or the ConfigError names the file and that key (or a section holding it)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "config.yaml"
        tree: dict = {}
        node = tree
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = value
        overrides = None
        if via == "file":
            path.write_text(yaml.safe_dump(tree), encoding="utf-8")
        else:
            path.write_text("name: from-file\n", encoding="utf-8")
            overrides = [f"{'.'.join(key)}={yaml.safe_dump(value, default_flow_style=True).strip()}"]
        before = listing(root)
        try:
            cfg = load_config(path, overrides)
        except ConfigError as e:
            msg = str(e)
            assert str(path) in msg, msg
            dotted = [".".join(key[:i]) for i in range(1, len(key) + 1)]
            assert any(f"'{d}" in msg for d in dotted), f"set {'.'.join(key)!r}: {msg}"
        else:
            assert isinstance(cfg, RunConfig)
        assert listing(root) == before


@FAST
@given(text=st.text(max_size=200))
def test_config_arbitrary_text(text):
    """Arbitrary text as a config file: it loads or raises ConfigError naming the file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path)
        except ConfigError as e:
            assert str(path) in str(e)


def test_config_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(path)


def test_config_huge_integer_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1" + "0" * 5000 + "\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(path)


def test_config_deep_nesting_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(path)


def test_errors_are_the_projects_own():
    """The two error types the properties above accept are the project's own."""
    assert issubclass(DataError, MMBoundaryError) and issubclass(ConfigError, MMBoundaryError)


# --- public functions that take text ---------------------------------------------------------------

def _text_calls():
    from mmboundary.answers import extract_answer, is_correct, normalize_answer
    from mmboundary.data.annotated import answer_from_step
    from mmboundary.statements.chain_format import parse_chain, parse_chains, write_chain, write_step
    from mmboundary.statements.mapping import NumericMapper, StatementMapper
    from mmboundary.statements.pool import normalise
    from mmboundary.steps import as_sentence, split_sentences, split_steps

    statements, numeric = StatementMapper(), NumericMapper()  # no encoder is loaded: the checks come first
    return [
        (lambda: split_steps(None), "text"), (lambda: split_steps(3), "text"),
        (lambda: split_sentences(["a."]), "text"), (lambda: as_sentence(None), "step"),
        (lambda: statements.level_of(None), "text"), (lambda: statements.level_of(5), "text"),
        (lambda: statements.levels_of("I am sure"), "texts"), (lambda: statements.levels_of(["ok", 4]), r"texts\[1\]"),
        (lambda: numeric.level_of(None), "text"), (lambda: numeric.level_of(5), "text"),
        (lambda: numeric.levels_of("confidence 4/5"), "texts"),
        (lambda: statements.statement("3"), "level"), (lambda: statements.statement(None), "level"),
        (lambda: numeric.statement("3"), "level"),
        (lambda: extract_answer(None), "chain_text"), (lambda: extract_answer(b"So the answer is 3."), "chain_text"),
        (lambda: normalize_answer(3), "text"), (lambda: is_correct("3", "3"), "answers"),
        (lambda: is_correct(3, ["3"]), "predicted"), (lambda: answer_from_step(None), "step"),
        (lambda: normalise(None), "statement"),
        (lambda: parse_chain(None, numeric), "response"), (lambda: parse_chains("a. b.", numeric), "responses"),
        (lambda: parse_chains(["a.", None], numeric), r"responses\[1\]"),
        (lambda: write_step(3, None), "step"), (lambda: write_step("A step.", 4), "statement"),
        (lambda: write_chain("A step.", [None] * 7), "steps"), (lambda: write_chain(["a", 1], [None, None]), "steps"),
        (lambda: write_chain(["a."], "confidence 4/5"), "statements"),
    ]


def test_text_functions_reject_non_text_naming_the_argument():
    for call, name in _text_calls():
        with pytest.raises(TypeError, match=name):
            call()
