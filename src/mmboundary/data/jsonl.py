"""The project's JSONL dataset format (documented in docs/data-format.md).

One JSON object per line, the fields of `mmboundary.records.Example`; `image` is relative to
the folder of the JSONL file (or absolute). `write_examples` writes it, `read_examples` reads it
back; every bad input stops the read with a `DataError` naming the file, the line and the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from mmboundary.data.images import MAX_IMAGE_PIXELS, check_image
from mmboundary.errors import DataError
from mmboundary.io import atomic_write_text
from mmboundary.records import Example


def example_to_json(example: Example, root: Path) -> dict:
    """The JSON object of one example, its image path made relative to `root` where possible."""
    data = example.model_dump(mode="json", exclude_none=True)
    try:
        data["image"] = Path(os.path.relpath(example.image, root)).as_posix()
    except ValueError:  # another drive on Windows
        data["image"] = str(example.image)
    if not data.get("chain"):
        data.pop("chain", None)
    return data


def write_examples(examples: Iterable[Example], path: str | Path) -> int:
    """Write examples as JSONL, atomically (to a temporary name, then renamed). Returns the count.

    If anything fails part-way (an example that cannot be written, a full disk, an exception
    from the `examples` iterable), the temporary file is removed and `path` is left as it was:
    no partial output is ever left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(example_to_json(ex, path.parent), ensure_ascii=False) + "\n" for ex in examples]
    atomic_write_text(path, "".join(lines))
    return len(lines)


# --- Reading -------------------------------------------------------------------------------------

def field_name(loc: tuple) -> str:
    """A pydantic error location as a field name: ('chain', 2, 'kind') -> 'chain[2].kind'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(record)"


def validation_error_to_data_error(err: ValidationError, *, file: str | Path,
                                   line: int) -> DataError:
    """The first error of a pydantic `ValidationError` as a `DataError` naming its field."""
    errors = err.errors(include_url=False)
    first = errors[0]
    field = field_name(tuple(first["loc"]))
    kind = first["type"]
    if kind == "missing":
        reason = "missing required field"
    elif kind == "extra_forbidden":
        reason = "unknown field (not part of the format)"
    elif kind in ("too_short", "string_too_short") and first.get("ctx", {}).get("min_length") == 1:
        reason = "must not be empty"
    else:
        value = json.dumps(first.get("input"), ensure_ascii=False, default=str)
        if len(value) > 60:
            value = value[:57] + "..."
        reason = f"{first['msg']} (got {value})"
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''} in this record)"
    return DataError(reason, file=file, line=line, field=field)


def lone_surrogate_field(value: object, loc: tuple = ()) -> str | None:
    """The field (as `field_name` spells it) of the first string, or object key, that holds a
    lone UTF-16 surrogate, or None.

    JSON allows escapes such as `"\\ud800"` that decode to a lone surrogate: a Python string
    that cannot be encoded as UTF-8, so it could be read but never written back (or validated
    as JSON by pydantic). The loaders reject it naming the field.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return field_name(loc)
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and lone_surrogate_field(key) is not None:
                return field_name((*loc, key))
            found = lone_surrogate_field(item, (*loc, key))
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = lone_surrogate_field(item, (*loc, i))
            if found is not None:
                return found
    return None


def parse_json_text(text: str, **kw) -> object:
    """`json.loads(text, **kw)`, with the errors that are not `JSONDecodeError` made into one.

    `json.loads` also raises a plain `ValueError` for an integer of more than 4300 digits
    (Python's int/str conversion limit) and `RecursionError` for deeply nested arrays or
    objects; both are malformed input here, reported like a syntax error (line and column 1,
    since the position is unknown).
    """
    try:
        return json.loads(text, **kw)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("arrays or objects nested too deeply", text, 0) from None
    except ValueError as e:
        if isinstance(e, _DuplicateKey):
            raise
        reason = str(e).split(":")[0]  # drop Python's advice on sys.set_int_max_str_digits
        raise json.JSONDecodeError(f"unreadable value ({reason})", text, 0) from None


def not_found(what: str, path: Path) -> str:
    """`"<what> not found"`; for a relative `path`, with the absolute path that was looked for and
    where relative paths are read from (docs/data-format.md, "Paths in a config")."""
    if path.is_absolute():
        return f"{what} not found"
    return (f"{what} not found: {os.path.normpath(path.absolute())} (a relative path is read from the working "
            "directory; in a config file, from the file's folder when it exists there)")


def resolve_image_path(image: str, root: Path) -> Path:
    """`image` made absolute against `root` (the JSONL file's folder), normalised lexically.

    Lexical normalisation (no symlink resolution) keeps `write_examples` -> `read_examples` an
    exact round trip.
    """
    p = Path(image)
    if not p.is_absolute():
        p = root / p
    return Path(os.path.normpath(p.absolute()))


_JSON_NAMES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null", dict: "object"}


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def select_split(examples: list[tuple[int, Example]], split: str | None, *,
                 file: Path) -> list[tuple[int, Example]]:
    """Keep the examples of `split` (those with no split are taken to be of it, and tagged)."""
    if split is None:
        return examples
    kept = [(n, ex if ex.split is not None else ex.model_copy(update={"split": split}))
            for n, ex in examples if ex.split in (None, split)]
    if not kept:
        found = sorted({ex.split for _, ex in examples if ex.split is not None})
        raise DataError(f"no examples of split {split!r} (the file has splits {found})", file=file)
    return kept


def read_examples(path: str | Path, *, check_images: bool = True, split: str | None = None,
                  max_pixels: int | None = MAX_IMAGE_PIXELS) -> list[Example]:
    """Read a JSONL dataset written in the project's format (see docs/data-format.md).

    - one JSON object per line, the fields of `Example`; blank lines are skipped;
    - `image` relative to the JSONL file's folder (or absolute) becomes an absolute path;
    - unknown fields, missing required fields and wrong types are errors (JSON types are taken
      strictly: `"truth": "yes"` is not a boolean, `"id": 3` is not a string);
    - the question, every answer and every chain step's text must not be blank (whitespace
      only); an empty chain (`[]`) is allowed;
    - a string holding a lone UTF-16 surrogate (e.g. `"\\ud800"`), an integer of more than
      4300 digits and arrays/objects nested too deeply to parse are errors;
    - ids must be unique in the file; the file must hold at least one example;
    - `check_images`: check every image with `check_image` (exists, opens, verifies, at most
      `max_pixels` pixels);
    - `split`: when given, keep only the examples of that split; examples that name no split are
      taken to belong to it and get `split` set.

    Raises `DataError` naming the file, the line (1-based) and the field of the first problem.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(not_found("dataset file", path), file=path)
    if not path.is_file():
        raise DataError("dataset path is not a regular file", file=path)
    root = path.parent.absolute()
    examples: list[tuple[int, Example]] = []
    first_line_of: dict[str, int] = {}
    try:
        f = path.open("rb")
    except OSError as e:
        raise DataError(f"cannot read the dataset file: {e}", file=path) from e
    with f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"not valid UTF-8 text (byte {e.start + 1} of the line)",
                                file=path, line=lineno) from e
            if lineno == 1:
                text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark
            if not text.strip():
                continue
            try:
                obj = parse_json_text(text.rstrip("\r\n"), object_pairs_hook=_no_duplicate_keys)
            except _DuplicateKey as e:
                raise DataError("the key appears twice in the JSON object", file=path,
                                line=lineno, field=e.key) from None
            except json.JSONDecodeError as e:
                raise DataError(f"malformed JSON: {e.msg} (column {e.colno})", file=path,
                                line=lineno) from None
            if not isinstance(obj, dict):
                raise DataError(f"expected a JSON object, got a JSON {_JSON_NAMES[type(obj)]}",
                                file=path, line=lineno)
            where = lone_surrogate_field(obj)
            if where is not None:
                raise DataError("a string holds a lone UTF-16 surrogate (an escape such as "
                                "\\ud800 with no pair), which is not text", file=path,
                                line=lineno, field=where)
            image = obj.get("image")
            if isinstance(image, str):
                if not image.strip():
                    raise DataError("empty image path", file=path, line=lineno, field="image")
                obj["image"] = str(resolve_image_path(image, root))
            try:
                ex = Example.model_validate_json(json.dumps(obj), strict=True)
            except ValidationError as e:
                raise validation_error_to_data_error(e, file=path, line=lineno) from None
            if not ex.question.strip():
                raise DataError("blank question", file=path, line=lineno, field="question")
            for i, answer in enumerate(ex.answers):
                if not answer.strip():
                    raise DataError("blank answer", file=path, line=lineno, field=f"answers[{i}]")
            for i, step in enumerate(ex.chain):
                if not step.text.strip():
                    raise DataError("blank step", file=path, line=lineno, field=f"chain[{i}].text")
            if ex.choices is not None:
                if not ex.choices:
                    raise DataError("empty list of choices (use null or leave the field out for "
                                    "an open question)", file=path, line=lineno, field="choices")
            if ex.id in first_line_of:
                raise DataError(f"duplicate id {ex.id!r} (first on line {first_line_of[ex.id]})",
                                file=path, line=lineno, field="id")
            first_line_of[ex.id] = lineno
            examples.append((lineno, ex))
    if not examples:
        raise DataError("empty dataset file: no examples (every line is blank)"
                        if path.stat().st_size else "empty dataset file: no examples", file=path)
    examples = select_split(examples, split, file=path)
    if check_images:
        for lineno, ex in examples:
            check_image(ex.image, file=path, line=lineno, field="image", max_pixels=max_pixels)
    return [ex for _, ex in examples]
