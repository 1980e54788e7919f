"""Dataset loaders: the JSONL format, the authors' annotated format, the image checks."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

from _helpers import LOADER_FIXTURES, LOADER_IMAGES, png_header_only
from mmboundary.data.annotated import answer_from_step, read_annotated
from mmboundary.data.images import MAX_IMAGE_PIXELS, check_image, image_problem, load_image
from mmboundary.data.jsonl import field_name, read_examples, write_examples
from mmboundary.data.loading import load_dataset_file
from mmboundary.errors import ConfigError, DataError
from mmboundary.records import Example, ReferenceStep, StepKind

FIXTURES = LOADER_FIXTURES
IMAGES = LOADER_IMAGES


def _shared_dir() -> Path | None:
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "shared", here.parents[1] / "shared"):
        if (candidate / "reference" / "annotated").is_dir():
            return candidate
    return None


def assert_names(err: DataError, *, file: Path, line: int | None, field: str | None,
                 reason: str = "") -> None:
    """The error's message names the file, the line and the field (and says `reason`)."""
    msg = str(err)
    assert file.name in msg, msg
    assert err.file == str(file)
    assert err.line == line, msg
    assert err.field == field, msg
    if line is not None:
        assert f"line {line}" in msg, msg
    if field is not None:
        assert f"field '{field}'" in msg, msg
    assert reason.lower() in msg.lower(), msg


# --- Images made on the fly ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def bad_images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_images")
    good = root / "good.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(good)
    text = root / "text.png"
    text.write_text("this is not an image\n")
    noisy = Image.effect_noise((64, 64), 50).convert("RGB")
    whole = root / "whole.png"
    noisy.save(whole)
    truncated = root / "truncated.png"
    data = whole.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    bomb = root / "bomb.png"  # 20000 x 20000 = 400 MP: over twice PIL's limit (DecompressionBombError)
    bomb.write_bytes(png_header_only(20000, 20000))
    warn = root / "warn.png"  # 10000 x 10000 = 100 MP: between PIL's limits (DecompressionBombWarning)
    warn.write_bytes(png_header_only(10000, 10000))
    folder = root / "folder.png"
    folder.mkdir()
    return {"good": good, "text": text, "truncated": truncated, "bomb": bomb, "warn": warn,
            "folder": folder, "missing": root / "missing.png", "big": whole}


# --- JSONL: good input ---------------------------------------------------------------------------

def test_good_jsonl_loads_with_values_and_absolute_image_paths():
    examples = read_examples(FIXTURES / "good.jsonl")
    assert [ex.id for ex in examples] == ["q1", "q2", "q3"]
    q1, q2, q3 = examples
    assert q1.image == IMAGES / "red.png" and q1.image.is_absolute()
    assert q2.image == IMAGES / "blue.png"
    assert q3.image == IMAGES / "red.png"  # "./images/../images/red.png", normalised
    assert q1.question == "What colour is the square?"
    assert q1.choices == ("red", "blue") and q1.answers == ("red",)
    assert [s.kind for s in q1.chain] == [StepKind.perception, StepKind.reasoning]
    assert [s.truth for s in q1.chain] == [True, None]
    assert q1.split == "test" and q2.split == "train" and q3.split is None
    assert q2.choices is None and q2.answers == ("1", "one") and q2.chain == ()
    assert q2.scene is not None and q2.scene.objects[0].shape == "circle"


def test_split_keeps_that_split_and_tags_examples_without_one(tmp_path):
    examples = read_examples(FIXTURES / "good.jsonl", split="test")
    assert [(ex.id, ex.split) for ex in examples] == [("q1", "test"), ("q3", "test")]
    assert [ex.id for ex in read_examples(FIXTURES / "good.jsonl", split="other")] == ["q3"]
    path = tmp_path / "split.jsonl"
    write_examples([ex for ex in read_examples(FIXTURES / "good.jsonl") if ex.split], path)
    with pytest.raises(DataError) as e:
        read_examples(path, split="validation")
    assert_names(e.value, file=path, line=None, field=None,
                 reason="no examples of split 'validation' (the file has splits ['test', 'train'])")


@pytest.mark.parametrize("subdir", ["same", "elsewhere/deeper"])
def test_write_read_round_trip(tmp_path, subdir):
    examples = read_examples(FIXTURES / "good.jsonl")
    out = tmp_path / subdir / "copy.jsonl"
    assert write_examples(examples, out) == 3
    again = read_examples(out)
    assert again == examples
    # the written image paths are relative to the new file's folder
    first = json.loads(out.read_text().splitlines()[0])
    assert not Path(first["image"]).is_absolute()


def test_round_trip_of_built_examples(tmp_path):
    image = tmp_path / "imgs" / "a.png"
    image.parent.mkdir()
    Image.new("RGB", (4, 4)).save(image)
    examples = [
        Example(id="a", image=image, question="Q?", choices=("x", "", "y"), answers=("y",),
                chain=(ReferenceStep(text="See y.", kind=StepKind.perception, truth=False),
                       ReferenceStep(text="So the answer is y.", kind=StepKind.reasoning)),
                split="val"),
        Example(id="b", image=image, question="Ünïcode — ok?", answers=("ja", "oui")),
    ]
    write_examples(examples, tmp_path / "data" / "x.jsonl")
    assert read_examples(tmp_path / "data" / "x.jsonl") == examples


def test_check_images_false_skips_missing_images(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"id": "a", "image": "nope.png", "question": "q",
                                "answers": ["a"]}) + "\n")
    [ex] = read_examples(path, check_images=False)
    assert ex.image == tmp_path / "nope.png"


# --- JSONL: bad input ----------------------------------------------------------------------------

GOOD = {"id": "a", "image": "img.png", "question": "What is it?", "answers": ["cat"],
        "chain": [{"text": "A cat sits.", "kind": "perception"},
                  {"text": "So the answer is cat.", "kind": "reasoning"}]}


def _with(**changes) -> str:
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not _DROP})


_DROP = object()


def _write_dataset(tmp_path: Path, lines: list[str]) -> Path:
    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "img.png")
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


OTHER = json.dumps({**GOOD, "id": "other"})

BAD_LINES = {
    # name: (lines, line, field, reason)
    "malformed JSON": ([OTHER, '{"id": "b", "question": '], 2, None,
                       "malformed JSON: Expecting value (column 25)"),
    "not an object": ([OTHER, "[1, 2]"], 2, None, "expected a JSON object"),
    "missing question": ([OTHER, _with(id="b", question=_DROP)], 2, "question",
                         "missing required field"),
    "answers as a number": ([_with(answers=5)], 1, "answers", "valid array"),
    "answers as a string": ([_with(answers="cat")], 1, "answers", "valid array"),
    "id as a number": ([_with(id=3)], 1, "id", "valid string"),
    "unknown field": ([OTHER, "", _with(id="b", colour="red")], 3, "colour", "unknown field"),
    "bad kind in chain": ([_with(chain=[GOOD["chain"][0], {"text": "So.", "kind": "thinking"}])],
                          1, "chain[1].kind", "'perception' or 'reasoning'"),
    "truth as a string": ([_with(chain=[{"text": "A.", "kind": "perception", "truth": "yes"}])],
                          1, "chain[0].truth", "valid boolean"),
    "unknown field in a step": ([_with(chain=[{"text": "A.", "kind": "perception", "x": 1}])],
                                1, "chain[0].x", "unknown field"),
    "empty answers": ([_with(answers=[])], 1, "answers", "must not be empty"),
    "empty id": ([_with(id="")], 1, "id", "must not be empty"),
    "blank answer": ([_with(answers=["  "])], 1, "answers[0]", "blank answer"),
    "empty image path": ([_with(image="")], 1, "image", "empty image path"),
    "image as a number": ([_with(image=7)], 1, "image", "valid string"),
    "duplicate key": ([OTHER, '{"id": "b", "id": "c", "image": "img.png", "question": "q", '
                              '"answers": ["a"]}'], 2, "id", "appears twice"),
    "duplicate id": ([_with(id="x"), OTHER, "", _with(id="x")], 4, "id",
                     "duplicate id 'x' (first on line 1)"),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_bad_line_names_file_line_and_field(tmp_path, case):
    lines, line, field, reason = BAD_LINES[case]
    path = _write_dataset(tmp_path, lines)
    with pytest.raises(DataError) as e:
        read_examples(path)
    assert_names(e.value, file=path, line=line, field=field, reason=reason)


def test_first_line_is_good_in_the_bad_line_cases(tmp_path):
    """The cases above fail on their line, not earlier: the good record alone loads."""
    assert len(read_examples(_write_dataset(tmp_path, [OTHER, _with()]))) == 2


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as e:
        read_examples(path)
    assert_names(e.value, file=path, line=None, field=None, reason="empty dataset file")


def test_missing_dataset_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_examples(tmp_path / "nope.jsonl")


def test_invalid_utf8_names_line(tmp_path):
    path = _write_dataset(tmp_path, [OTHER])
    path.write_bytes(OTHER.encode() + b"\n"
                     + b'{"id": "b", "image": "img.png", "question": "caf\xe9?", "answers": ["a"]}' + b"\n")
    with pytest.raises(DataError) as e:
        read_examples(path)
    assert_names(e.value, file=path, line=2, field=None, reason="UTF-8")


@pytest.mark.parametrize("image,reason,kw", [
    ("missing", "not found", {}),
    ("folder", "not a regular file", {}),
    ("text", "not an image", {}),
    ("truncated", "truncated", {}),
    ("big", "too large", {"max_pixels": 64 * 64 - 1}),
    ("bomb", "too large", {}),
    ("warn", "too large", {"max_pixels": None}),  # PIL's warning, turned into an error
])
def test_bad_image_names_file_line_and_field(tmp_path, bad_images, image, reason, kw):
    lines = [OTHER, _with(id="b", image=str(bad_images[image]))]
    path = _write_dataset(tmp_path, lines)
    with pytest.raises(DataError) as e:
        read_examples(path, **kw)
    assert_names(e.value, file=path, line=2, field="image", reason=reason)
    assert str(bad_images[image]) in str(e.value)


def test_image_at_the_limit_passes(bad_images):
    assert image_problem(bad_images["big"], max_pixels=64 * 64) is None
    assert image_problem(bad_images["bomb"], max_pixels=None) is not None  # PIL's guard remains
    assert MAX_IMAGE_PIXELS == 40_000_000


def test_check_image_direct(bad_images):
    check_image(bad_images["good"], file="d.jsonl", line=3)
    with pytest.raises(DataError) as e:
        check_image(bad_images["text"], file="d.jsonl", line=3, field="img")
    assert str(e.value).startswith("d.jsonl, line 3, field 'img': not an image")


def test_load_image_is_rgb_and_composites_transparency_on_white(bad_images):
    img = load_image(IMAGES / "2.png")  # fully transparent RGBA
    assert img.mode == "RGB" and img.size == (8, 8)
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert load_image(bad_images["good"]).getpixel((3, 3)) == (1, 2, 3)
    with pytest.raises(DataError, match="truncated"):
        load_image(bad_images["truncated"])
    with pytest.raises(DataError, match="too large"):
        load_image(bad_images["bomb"])


def test_field_name():
    assert field_name(("chain", 2, "kind")) == "chain[2].kind"
    assert field_name(("scene", "objects", 0, "shape")) == "scene.objects[0].shape"
    assert field_name(()) == "(record)"


# --- Annotated format ----------------------------------------------------------------------------

def test_aokvqa_fixture(caplog):
    with caplog.at_level(logging.WARNING):
        examples = read_annotated(FIXTURES / "aokvqa_small.json", IMAGES)
    assert "repeat an earlier record's id" in caplog.text  # record 3 repeats record 1
    assert [ex.id for ex in examples] == ["2Aq5RiEn7eyfWjEbpuYT2o", "WapXzWUgE3zgx5n3fVGUjS"]
    mc, open_q = examples
    assert mc.image == IMAGES / "000000377368.jpg"
    assert mc.choices == ("one", "ten", "nine", "thirty")
    # correct choice first; direct answers deduplicated, without the blank one and without
    # "ten" (another choice)
    assert mc.answers == ("thirty", "30th")
    assert [s.kind for s in mc.chain] == [StepKind.perception, StepKind.reasoning,
                                         StepKind.reasoning]
    assert mc.chain[0].text == "The image features a birthday cake with the number 30 on it"
    assert all(s.truth is None for s in mc.chain)
    assert mc.split == "val"
    # no keys_filtered: falls back to keys; no Image_level: reasoning steps only; open question
    assert open_q.image == IMAGES / "000000004134.jpg"
    assert open_q.choices is None and open_q.answers == ("hole punch", "was punched")
    assert [s.kind for s in open_q.chain] == [StepKind.reasoning, StepKind.reasoning]


def test_aokvqa_direct_answers_can_be_left_out():
    mc = read_annotated(FIXTURES / "aokvqa_small.json", IMAGES, include_direct_answers=False)[0]
    assert mc.answers == ("thirty",)


def test_culturalvqa_fixture():
    examples = read_annotated(FIXTURES / "culturalvqa_small.json", IMAGES,
                              dataset="culturalvqa", image_pattern="{id}.png")
    first, second = examples
    assert first.id == "2" and first.image == IMAGES / "2.png"
    assert first.answers == ("warm",)  # from the chain, not general_output's "hot"
    assert first.choices is None
    assert [s.kind for s in first.chain] == [StepKind.perception, StepKind.reasoning,
                                            StepKind.reasoning]
    # the last step says no "the answer is": general_output's answer
    assert second.id == "7" and second.answers == ("Diwali",)
    assert [s.kind for s in second.chain] == [StepKind.reasoning, StepKind.reasoning]
    # detection without `dataset`: no question_id / image_id -> culturalvqa
    assert read_annotated(FIXTURES / "culturalvqa_small.json", IMAGES, image_pattern="{id}.png",
                          check_images=False) == examples


def test_default_image_patterns(tmp_path):
    cult = read_annotated(FIXTURES / "culturalvqa_small.json", tmp_path, check_images=False)
    assert cult[0].image == tmp_path / "2.jpg"
    sci = read_annotated(FIXTURES / "aokvqa_small.json", tmp_path, dataset="scienceqa",
                         check_images=False)
    assert sci[0].image == tmp_path / "377368" / "image.png"
    # any field of the record can name the file
    [ex] = read_annotated(_annotated(tmp_path, [{**AOK, "split": "val"}]), tmp_path,
                          image_pattern="{split}/{question_id}.png", check_images=False, split="val")
    assert ex.image == tmp_path / "val" / "q.png" and ex.split == "val"
    with pytest.raises(DataError) as e:
        read_annotated(_annotated(tmp_path, [AOK]), tmp_path,
                       image_pattern="{question_id:d}.png", check_images=False)
    assert e.value.field == "question_id"
    # a record's own `image` wins, relative to image_dir
    path = _annotated(tmp_path, [{**AOK, "image": "sub/x.png"}])
    assert read_annotated(path, tmp_path, check_images=False)[0].image == tmp_path / "sub/x.png"


def test_image_dir_none_means_the_files_folder(tmp_path):
    path = _annotated(tmp_path, [AOK])
    [ex] = read_annotated(path, None, check_images=False)
    assert ex.image == tmp_path / "000000000001.jpg"


AOK = {"question_id": "q", "image_id": 1, "question": "Q?", "choices": ["a", "b"],
       "correct_choice_idx": 1, "direct_answers": ["b"],
       "keys_filtered": {"Image_level": ["I see b."], "Reasoning_level": ["So, the answer is b"]}}
CULT = {"id": 5, "question": "Q?",
        "keys_filtered": {"Image_level": ["I see b."], "Reasoning_level": ["So, the answer is b"]}}


def _annotated(tmp_path: Path, records) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(records, indent=1))
    return path


def test_culturalvqa_without_an_answer_names_reasoning_level(tmp_path):
    no_answer = {**CULT, "id": 6, "keys_filtered": {"Reasoning_level": ["So, it is b."]}}
    path = _annotated(tmp_path, [CULT, no_answer])
    with pytest.raises(DataError) as e:
        read_annotated(path, tmp_path, dataset="culturalvqa", check_images=False)
    assert_names(e.value, file=path, line=2, field="keys_filtered.Reasoning_level",
                 reason="record 2: no answer")


BAD_RECORDS = {
    # name: (records, kwargs, record, field, reason)
    "missing question": ([AOK, {**AOK, "question_id": "r", "question": None}], {}, 2,
                         "question", "missing required field"),
    "question not a string": ([{**AOK, "question": 3}], {}, 1, "question", "expected a string"),
    "choice index out of range": ([{**AOK, "correct_choice_idx": 2}], {}, 1,
                                  "correct_choice_idx", "out of range"),
    "choice index a string": ([{**AOK, "correct_choice_idx": "1"}], {}, 1, "correct_choice_idx",
                              "expected an integer"),
    "blank correct choice": ([{**AOK, "choices": ["a", " "]}], {}, 1, "choices[1]", "blank"),
    "open question without answers": ([{**AOK, "choices": None, "direct_answers": []}], {}, 1,
                                      "direct_answers", "needs accepted answers"),
    "no chain": ([AOK, AOK, {**AOK, "question_id": "z", "keys_filtered": None}],
                 {"on_duplicate": "first"}, 3, "keys_filtered", "missing required field"),
    "no reasoning level": ([{**AOK, "keys_filtered": {"Image_level": ["x"]}}], {}, 1,
                           "keys_filtered.Reasoning_level", "missing required field"),
    "step not a string": ([{**AOK, "keys_filtered": {"Reasoning_level": ["a", 3]}}], {}, 1,
                          "keys_filtered.Reasoning_level[1]", "expected a string"),
    "missing id": ([{k: v for k, v in AOK.items() if k != "question_id"}], {"dataset": "aokvqa"},
                   1, "question_id", "missing required field"),
    "missing image_id": ([{k: v for k, v in AOK.items() if k != "image_id"}], {}, 1, "image_id",
                         "needed by the image pattern"),
    "image_id not a number": ([{**AOK, "image_id": "abc"}], {}, 1, "image_id",
                              "cannot build the image file name"),
    "record not an object": ([AOK, 3], {}, 2, None, "expected a JSON object"),
    "repeated id, on_duplicate=error": ([AOK, {**AOK, "keys_filtered": CULT["keys_filtered"]}],
                                        {"on_duplicate": "error"}, 2, "question_id",
                                        "repeats the id 'q' of record 1"),
    "repeated id, different answers": ([AOK, {**AOK, "correct_choice_idx": 0}], {}, 2,
                                       "question_id", "with a different question"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_bad_record_names_file_record_and_field(tmp_path, case):
    records, kw, record, field, reason = BAD_RECORDS[case]
    path = _annotated(tmp_path, records)
    with pytest.raises(DataError) as e:
        read_annotated(path, tmp_path, check_images=False, **kw)
    assert_names(e.value, file=path, line=record, field=field, reason=reason)
    assert f"record {record}:" in str(e.value)


@pytest.mark.parametrize("text,reason,line", [
    ("", "empty annotation file", None),
    ("[]", "holds no records", None),
    ('{"a": 1}', "expected a JSON list", None),
    ('[\n {"id": 1,\n  "question": }\n]', "malformed JSON", 3),
])
def test_bad_annotation_file(tmp_path, text, reason, line):
    path = tmp_path / "ann.json"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        read_annotated(path, tmp_path, check_images=False)
    assert_names(e.value, file=path, line=line, field=None, reason=reason)


def test_annotated_missing_image_names_record_and_field(tmp_path, bad_images):
    path = _annotated(tmp_path, [AOK, {**AOK, "question_id": "r", "image_id": 2}])
    shutil.copy(bad_images["good"], tmp_path / "000000000001.jpg")
    with pytest.raises(DataError) as e:
        read_annotated(path, tmp_path)
    assert_names(e.value, file=path, line=2, field="image_id", reason="record 2: image file not found")
    (tmp_path / "000000000002.jpg").write_text("text")
    with pytest.raises(DataError) as e:
        read_annotated(path, tmp_path)
    assert_names(e.value, file=path, line=2, field="image_id", reason="not an image")


@pytest.mark.parametrize("step,answer", [
    ("So, the answer is thirty", "thirty"),
    ("So the answer is 'warm'.", "warm"),
    ("so, the answer is: \u201cSt. Mark's Square\u201d.", "St. Mark's Square"),
    ("So, the answer is December 25th.", "December 25th"),
    ("Therefore the answer is x.", None),
    ("So, the occasion is Diwali.", None),
    ("So, the answer is .", None),
])
def test_answer_from_step(step, answer):
    assert answer_from_step(step) == answer


# --- The authors' released files -----------------------------------------------------------------

@pytest.mark.skipif(_shared_dir() is None, reason="the shared reference folder is not present")
def test_real_annotated_files_parse():
    folder = _shared_dir() / "reference" / "annotated"
    aok = read_annotated(folder / "aokvqa_val_mmb.json", "/coco/val2017", check_images=False)
    # 1,152 records, 5 question ids repeated (8 repeats): 1,144 examples
    assert len(aok) == 1144 and len({ex.id for ex in aok}) == 1144
    assert aok[0].image == Path("/coco/val2017/000000377368.jpg")
    assert aok[0].answers[0] == "thirty" and aok[0].choices == ("one", "ten", "nine", "thirty")
    assert all(ex.answers[0] in ex.choices for ex in aok)
    assert sum(1 for ex in aok if not ex.chain) == 1  # record 587: every step filtered out
    # 28 records have no (or an empty) Image_level: reasoning steps only
    assert sum(1 for ex in aok if ex.chain and ex.chain[0].kind is StepKind.reasoning) == 28
    cult = read_annotated(folder / "culturalvqa_mmb.json", "/cvqa", check_images=False)
    assert len(cult) == 800
    assert cult[0].id == "2" and cult[0].answers == ("warm",)
    assert cult[0].image == Path("/cvqa/2.jpg")
    assert all(ex.chain and ex.chain[-1].kind is StepKind.reasoning for ex in cult)
    with pytest.raises(DataError) as e:
        read_annotated(folder / "aokvqa_val_mmb.json", "/coco", check_images=False,
                       on_duplicate="error")
    assert e.value.line == 1045 and "record 699" in str(e.value)


# --- One entry point -----------------------------------------------------------------------------

def test_load_dataset_file_dispatches():
    assert load_dataset_file(FIXTURES / "good.jsonl") == read_examples(FIXTURES / "good.jsonl")
    assert [ex.id for ex in load_dataset_file(FIXTURES / "good.jsonl", split="train")] == ["q2", "q3"]
    ann = load_dataset_file(FIXTURES / "culturalvqa_small.json", fmt="annotated",
                            image_dir=IMAGES, image_pattern="{id}.png")
    assert [ex.answers for ex in ann] == [("warm",), ("Diwali",)]


def test_load_dataset_file_bad_arguments():
    with pytest.raises(ConfigError, match="image_dir"):
        load_dataset_file(FIXTURES / "good.jsonl", image_dir=IMAGES)
    with pytest.raises(ConfigError, match="fmt"):
        load_dataset_file(FIXTURES / "good.jsonl", fmt="csv")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dataset"):
        load_dataset_file(FIXTURES / "good.jsonl", dataset="aokvqa")
    with pytest.raises(ConfigError, match="colour"):
        load_dataset_file(FIXTURES / "aokvqa_small.json", fmt="annotated", colour=1)
