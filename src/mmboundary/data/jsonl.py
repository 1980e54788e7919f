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
    """Write examples as JSONL, atomically (to a temporary name, then renamed). Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(example_to_json(ex, path.parent), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


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
    - ids must be unique in the file; the file must hold at least one example;
    - `check_images`: check every image with `check_image` (exists, opens, verifies, at most
      `max_pixels` pixels);
    - `split`: when given, keep only the examples of that split; examples that name no split are
      taken to belong to it and get `split` set.

    Raises `DataError` naming the file, the line (1-based) and the field of the first problem.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("dataset file not found", file=path)
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
                obj = json.loads(text.rstrip("\r\n"), object_pairs_hook=_no_duplicate_keys)
            except _DuplicateKey as e:
                raise DataError("the key appears twice in the JSON object", file=path,
                                line=lineno, field=e.key) from None
            except json.JSONDecodeError as e:
                raise DataError(f"malformed JSON: {e.msg} (column {e.colno})", file=path,
                                line=lineno) from None
            if not isinstance(obj, dict):
                raise DataError(f"expected a JSON object, got a JSON {_JSON_NAMES[type(obj)]}",
                                file=path, line=lineno)
            image = obj.get("image")
            if isinstance(image, str):
                if not image.strip():
                    raise DataError("empty image path", file=path, line=lineno, field="image")
                obj["image"] = str(resolve_image_path(image, root))
            try:
                ex = Example.model_validate_json(json.dumps(obj), strict=True)
            except ValidationError as e:
                raise validation_error_to_data_error(e, file=path, line=lineno) from None
            for i, answer in enumerate(ex.answers):
                if not answer.strip():
                    raise DataError("blank answer", file=path, line=lineno, field=f"answers[{i}]")
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
