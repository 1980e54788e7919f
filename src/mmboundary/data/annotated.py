"""The MMBoundary authors' annotated format (A-OKVQA, ScienceQA, CulturalVQA reference chains).

The file is one JSON list; each element (a "record") is one question. The mapping to `Example`
is documented in docs/data-format.md; in short:

- id: `question_id` (A-OKVQA, ScienceQA) or `id` (CulturalVQA), either one as a fallback;
- question: `question`;
- multiple choice (`choices` present): choices = `choices`, answers = the correct choice
  `choices[correct_choice_idx]` first, then the distinct `direct_answers` that are not another
  choice; open question: answers = the distinct `direct_answers`; CulturalVQA (no answer field):
  the X of the last reasoning step "So, the answer is X" (fallbacks below);
- chain: `keys_filtered.Image_level` as perception steps, then `keys_filtered.Reasoning_level`
  as reasoning steps; `keys` is used only when the record has no `keys_filtered` at all (an
  empty `keys_filtered` means the authors' filter rejected every step: the chain is empty); a
  missing `Image_level` is allowed;
- image: a record's own `image` field, else `image_pattern` (per-dataset default, see
  `IMAGE_PATTERNS`) filled from the record, joined with `image_dir`.

Errors name the file, the record (1-based index into the list, given as the "line" of the
`DataError` and spelled "record N" in the message) and the field.

**[choice]** ScienceQA: the authors released no ScienceQA file; its records are assumed to have
the A-OKVQA shape (`question_id`, `image_id`, `question`, `choices`, `correct_choice_idx`,
optional `direct_answers`, `keys`/`keys_filtered`).

**[choice]** Repeated ids: the released A-OKVQA file repeats 5 question ids (13 records, 8
repeats) with the same question and answers and different chains. Records that repeat an id with the same question,
image, choices and answers are alternative chains of one question: the first is kept and a
warning is logged (`on_duplicate="first"`, the default); `on_duplicate="error"` makes any repeat
an error. Repeats that differ in those fields are always an error naming both records.
"""

from __future__ import annotations

import json
import logging
import re
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from mmboundary.data.images import MAX_IMAGE_PIXELS, image_problem
from mmboundary.data.jsonl import (
    field_name,
    lone_surrogate_field,
    not_found,
    parse_json_text,
    resolve_image_path,
    select_split,
)
from mmboundary.errors import DataError
from mmboundary.records import Example, ReferenceStep, StepKind
from mmboundary.steps import require_text

log = logging.getLogger(__name__)

Dataset = Literal["aokvqa", "scienceqa", "culturalvqa"]

IMAGE_PATTERNS: dict[str, str] = {
    # COCO 2017 file names, as the A-OKVQA toolkit builds them: image_dir is e.g. coco/val2017.
    "aokvqa": "{image_id:012d}.jpg",
    # ScienceQA ships images as <split>/<problem id>/image.png: image_dir is e.g. images/test,
    # and image_id is the problem id (the record's question_id when it has no image_id).
    "scienceqa": "{image_id}/image.png",
    # CulturalVQA images exported one file per question, named by the record's id.
    "culturalvqa": "{id}.jpg",
}
"""Default `image_pattern` per dataset. A pattern is a `str.format` template over the record's
fields (`image_id`, `question_id`, `id`, `split`, ...); `{id}` is the example id."""

# "So, the answer is X" / "So the answer is X" (case-insensitive, optional ":" after "is").
_ANSWER_RE = re.compile(r"\bso,?\s+the\s+(?:final\s+)?answer\s+is\s*:?\s*(.+?)\s*$",
                        re.IGNORECASE | re.DOTALL)
_QUOTES = {"'": "'", '"': '"', "\u2018": "\u2019", "\u201c": "\u201d", "`": "`"}


def answer_from_step(step: str) -> str | None:
    """The X of a step "So, the answer is X." (trailing full stop and enclosing quotes removed)."""
    m = _ANSWER_RE.search(require_text(step, "step", "answer_from_step"))
    if not m:
        return None
    answer = m.group(1).strip()
    answer = re.sub(r"[.!]+$", "", answer).strip()
    while len(answer) >= 2 and _QUOTES.get(answer[0]) == answer[-1]:
        answer = answer[1:-1].strip()
    return answer or None


def _norm(text: str) -> str:
    """Loose form for comparing answers: case, surrounding space and punctuation ignored."""
    return " ".join(text.casefold().strip(string.whitespace + string.punctuation).split())


class _Record:
    """One record being mapped; `error` builds a DataError that names the file and record."""

    def __init__(self, data: Any, index: int, file: Path):
        self.data = data
        self.index = index
        self.file = file

    def error(self, reason: str, field: str | None = None) -> DataError:
        return DataError(f"record {self.index}: {reason}", file=self.file, line=self.index,
                         field=field)

    def get(self, key: str, types: type | tuple[type, ...], *, required: bool = True,
            what: str = "") -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.error("missing required field", key)
            return None
        value = self.data[key]
        if not isinstance(value, types) or isinstance(value, bool) and bool not in _tuple(types):
            raise self.error(f"expected {what or _type_names(types)}, got "
                             f"{_json_type(value)}", key)
        return value

    def strings(self, container: dict, key: str, field: str, *, required: bool,
                blank: Literal["error", "keep", "drop"] = "error") -> list[str]:
        """A list of strings under container[key] (`field` names it in errors).

        `blank`: what to do with a blank string: an error, keep it, or drop it.
        """
        if key not in container or container[key] is None:
            if required:
                raise self.error("missing required field", field)
            return []
        value = container[key]
        if not isinstance(value, list):
            raise self.error(f"expected a list of strings, got {_json_type(value)}", field)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"expected a string, got {_json_type(item)}", f"{field}[{i}]")
            if not item.strip() and blank == "error":
                raise self.error("blank string", f"{field}[{i}]")
        return value if blank != "drop" else [s for s in value if s.strip()]


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types) -> str:
    names = {str: "a string", int: "an integer", list: "a list", dict: "an object",
             float: "a number", bool: "a boolean"}
    return " or ".join(names.get(t, t.__name__) for t in _tuple(types))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({json.dumps(shown, ensure_ascii=False)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _detect_dataset(records: list) -> str:
    first = records[0] if isinstance(records[0], dict) else {}
    return "aokvqa" if ("question_id" in first or "image_id" in first) else "culturalvqa"


def _map_record(rec: _Record, *, dataset: str, image_dir: Path, image_pattern: str,
                include_direct_answers: bool) -> tuple[Example, str]:
    """Map one record to an Example; also return the field that names its image (for errors)."""
    if not isinstance(rec.data, dict):
        raise rec.error(f"expected a JSON object, got {_json_type(rec.data)}")
    data = rec.data
    where = lone_surrogate_field(data)
    if where is not None:
        raise rec.error("a string holds a lone UTF-16 surrogate (an escape such as \\ud800 "
                        "with no pair), which is not text", where)

    # id
    id_keys = ("id", "question_id") if dataset == "culturalvqa" else ("question_id", "id")
    id_key = next((k for k in id_keys if data.get(k) is not None), None)
    if id_key is None:
        raise rec.error(f"missing required field (or {id_keys[1]!r})", id_keys[0])
    raw_id = rec.get(id_key, (str, int))
    example_id = str(raw_id).strip()
    if not example_id:
        raise rec.error("blank id", id_key)

    question = rec.get("question", str)
    if not question.strip():
        raise rec.error("blank question", "question")

    # chain
    if data.get("keys_filtered") is not None:
        chain_key = "keys_filtered"
    elif data.get("keys") is not None:
        chain_key = "keys"
    else:
        raise rec.error("missing required field (or 'keys'): the reference chain",
                        "keys_filtered")
    levels = rec.get(chain_key, dict)
    perception = rec.strings(levels, "Image_level", f"{chain_key}.Image_level", required=False)
    reasoning = rec.strings(levels, "Reasoning_level", f"{chain_key}.Reasoning_level",
                            required=True)
    chain = tuple(ReferenceStep(text=t, kind=StepKind.perception) for t in perception) + tuple(
        ReferenceStep(text=t, kind=StepKind.reasoning) for t in reasoning)

    # answers
    choices: tuple[str, ...] | None = None
    if dataset in ("aokvqa", "scienceqa"):
        # The released A-OKVQA file has a blank choice (record 945) and a blank direct answer
        # (record 1009): a blank choice is kept (the options are shown as given), a blank
        # direct answer dropped; only the correct choice must not be blank.
        direct = rec.strings(data, "direct_answers", "direct_answers", required=False,
                             blank="drop")
        if data.get("choices") is not None:
            choices = tuple(rec.strings(data, "choices", "choices", required=True, blank="keep"))
            if not choices:
                raise rec.error("empty list of choices", "choices")
            idx = rec.get("correct_choice_idx", int, what="an integer index into choices")
            if not 0 <= idx < len(choices):
                raise rec.error(f"index {idx} is out of range for {len(choices)} choices",
                                "correct_choice_idx")
            correct = choices[idx]
            if not correct.strip():
                raise rec.error(f"the correct choice (index {idx}) is blank", f"choices[{idx}]")
            others = {_norm(c) for i, c in enumerate(choices) if i != idx} - {_norm(correct)}
            answers = [correct]
            if include_direct_answers:
                answers += [a for a in direct if _norm(a) not in others]
        else:
            if not direct:
                raise rec.error("an open question (no choices) needs accepted answers",
                                "direct_answers")
            answers = list(direct)
    else:
        answers = [_chain_answer(rec, chain_key, reasoning)]
    answers = list(dict.fromkeys(a.strip() for a in answers))

    # image
    image_field = "image"
    if data.get("image") is not None:
        image_value = rec.get("image", str)
        if not image_value.strip():
            raise rec.error("empty image path", "image")
        image = resolve_image_path(image_value, image_dir)
    else:
        fields = {k: v for k, v in data.items() if isinstance(k, str) and k.isidentifier()}
        fields["id"] = example_id
        raw_image_id = fields.get("image_id")
        if isinstance(raw_image_id, str) and raw_image_id.strip().isdecimal():
            try:  # isdecimal, not isdigit: int() rejects digits such as "²"
                fields["image_id"] = int(raw_image_id)
            except ValueError:  # over Python's 4300-digit int/str limit: left as a string
                pass
        if dataset == "scienceqa" and fields.get("image_id") is None:
            fields["image_id"] = example_id
        try:
            used = [f for _, f, _, _ in string.Formatter().parse(image_pattern) if f]
        except ValueError as e:
            raise rec.error(f"bad image pattern {image_pattern!r}: {e}", "image") from None
        image_field = re.split(r"[.\[]", used[0])[0] if used else "image"
        try:
            name = image_pattern.format(**fields)
        except KeyError as e:
            key = e.args[0]
            raise rec.error(f"missing field needed by the image pattern {image_pattern!r}",
                            str(key)) from None
        except (ValueError, TypeError, IndexError, AttributeError) as e:
            raise rec.error(f"cannot build the image file name with pattern {image_pattern!r} "
                            f"from this record: {e}", image_field) from None
        image = resolve_image_path(name, image_dir)

    split = data.get("split")
    if split is not None and not isinstance(split, str):
        raise rec.error(f"expected a string, got {_json_type(split)}", "split")

    try:
        example = Example(id=example_id, image=image, question=question, choices=choices,
                          answers=tuple(answers), chain=chain, split=split)
    except ValidationError as e:  # should not happen after the checks above
        first = e.errors(include_url=False)[0]
        raise rec.error(first["msg"], field_name(tuple(first["loc"]))) from None
    return example, image_field


def _chain_answer(rec: _Record, chain_key: str, reasoning: list[str]) -> str:
    """The answer of a record with no answer field (CulturalVQA).

    In order: the last step of the chain's Reasoning_level, "So, the answer is X"; when the
    chain came from `keys_filtered`, the last step of `keys.Reasoning_level`; the last
    "So the answer is X" of `general_output` (the authors' raw model output the chain was cut
    from). None found: an error naming `<chain_key>.Reasoning_level`.
    """
    if reasoning:
        answer = answer_from_step(reasoning[-1])
        if answer:
            return answer
    data = rec.data
    keys = data.get("keys")
    if chain_key == "keys_filtered" and isinstance(keys, dict):
        fallback = keys.get("Reasoning_level")
        if isinstance(fallback, list) and fallback and isinstance(fallback[-1], str):
            answer = answer_from_step(fallback[-1])
            if answer:
                return answer
    output = data.get("general_output")
    if isinstance(output, str):
        lines = [ln for ln in output.splitlines() if _ANSWER_RE.search(ln)]
        if lines:
            answer = answer_from_step(lines[-1])
            if answer:
                return answer
    last = json.dumps(reasoning[-1], ensure_ascii=False) if reasoning else "(no steps)"
    raise rec.error(f"no answer: the record has no answer field and its last reasoning step "
                    f"{last} does not say \"So, the answer is X\"", f"{chain_key}.Reasoning_level")


def read_annotated(path: str | Path, image_dir: str | Path | None, *,
                   dataset: Dataset | None = None, image_pattern: str | None = None,
                   check_images: bool = True, split: str | None = None,
                   on_duplicate: Literal["first", "error"] = "first",
                   include_direct_answers: bool = True,
                   max_pixels: int | None = MAX_IMAGE_PIXELS) -> list[Example]:
    """Read a file in the authors' annotated format (a JSON list of records) as Examples.

    - `image_dir`: the folder the image file names are relative to (None: the annotation file's
      folder);
    - `dataset`: picks the id field, the answer rule and the default image pattern; None detects
      it from the first record (`question_id` or `image_id` present: "aokvqa", else
      "culturalvqa"); ScienceQA must be named;
    - `image_pattern`: overrides `IMAGE_PATTERNS[dataset]`;
    - `check_images`: check every image with `check_image` (field "image" or "image_id"/"id");
    - `split`: keep only records of that split (records without one are taken to be of it);
    - `on_duplicate`: see the module docstring;
    - `include_direct_answers`: for multiple choice, also accept the direct answers (never one
      that equals another choice).

    Raises `DataError` naming the file, the record (as the line; "record N" in the message) and
    the field of the first problem.
    """
    path = Path(path)
    if dataset is not None and dataset not in IMAGE_PATTERNS:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {sorted(IMAGE_PATTERNS)}",
                        file=path)
    if on_duplicate not in ("first", "error"):
        raise ValueError(f"on_duplicate must be 'first' or 'error', not {on_duplicate!r}")
    if not path.exists():
        raise DataError(not_found("annotation file", path), file=path)
    if not path.is_file():
        raise DataError("annotation path is not a regular file", file=path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 text (byte {e.start + 1} of the file)", file=path) from e
    except OSError as e:
        raise DataError(f"cannot read the annotation file: {e}", file=path) from e
    if not text.strip():
        raise DataError("empty annotation file: no records", file=path)
    try:
        records = parse_json_text(text)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON: {e.msg} (column {e.colno}; the file must be one JSON "
                        f"list)", file=path, line=e.lineno) from None
    if not isinstance(records, list):
        raise DataError(f"expected a JSON list of records, got {_json_type(records)}", file=path)
    if not records:
        raise DataError("empty annotation file: the list holds no records", file=path)

    dataset = dataset or _detect_dataset(records)
    pattern = image_pattern if image_pattern is not None else IMAGE_PATTERNS[dataset]
    root = Path(image_dir) if image_dir is not None else path.parent
    root = Path(resolve_image_path(str(root), Path.cwd()))

    examples: list[tuple[int, Example]] = []
    image_fields: dict[int, str] = {}
    first_of: dict[str, tuple[int, Example]] = {}
    repeated: list[tuple[str, int, int]] = []
    for index, data in enumerate(records, start=1):
        rec = _Record(data, index, path)
        ex, image_field = _map_record(rec, dataset=dataset, image_dir=root,
                                      image_pattern=pattern,
                                      include_direct_answers=include_direct_answers)
        if ex.id in first_of:
            first_index, first = first_of[ex.id]
            same = first.model_dump(exclude={"chain"}) == ex.model_dump(exclude={"chain"})
            if on_duplicate == "error" or not same:
                reason = f"repeats the id {ex.id!r} of record {first_index}"
                if not same:
                    reason += " with a different question, image, choices or answers"
                id_key = "id" if dataset == "culturalvqa" else "question_id"
                raise rec.error(reason, id_key)
            repeated.append((ex.id, first_index, index))
            continue
        first_of[ex.id] = (index, ex)
        examples.append((index, ex))
        image_fields[index] = image_field
    if repeated:
        log.warning("%s: %d record(s) repeat an earlier record's id with the same question and "
                    "answers (another reference chain); kept the first of each: %s", path,
                    len(repeated), ", ".join(f"{i} (record {b}, first {a})"
                                             for i, a, b in repeated))
    empty = [i for i, ex in examples if not ex.chain]
    if empty:
        log.warning("%s: %d record(s) have an empty reference chain (the authors' filter "
                    "rejected every step): %s", path, len(empty),
                    ", ".join(f"record {i}" for i in empty))
    examples = select_split(examples, split, file=path)
    if check_images:
        for index, ex in examples:
            reason = image_problem(ex.image, max_pixels=max_pixels)
            if reason is not None:
                raise DataError(f"record {index}: {reason}", file=path, line=index,
                                field=image_fields[index])
    return [ex for _, ex in examples]
