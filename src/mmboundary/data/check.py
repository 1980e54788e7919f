"""Validate a dataset folder before any training starts: every problem at once, not the first.

    mmboundary check-data -c configs/data/aokvqa.yaml -c configs/data/culturalvqa.yaml
    python -c "from mmboundary.data.check import check_data; ..."   # the same, as a function

The loaders (`data.annotated`, `data.jsonl`) stop at the first bad record; a 19K-record dataset
with 40 missing images would then take 40 runs to fix. `check_data` reads the files of a
`DataConfig` the way the `data` stage does, but records every problem it finds and goes on:

- per split: records, examples kept, questions with choices, examples with and without a
  reference chain, chain steps;
- **problems** (the `data` stage would stop on them; exit code 1): a file that cannot be read or
  parsed; a record the loader rejects (missing or mistyped field, no answer, ...); an id repeated
  with a different question/image/answers; a missing, unreadable, corrupt or oversized image;
- **warnings** (the stage goes on; `strict=True` makes them problems): a record without a
  reference chain (the authors' filter rejected every step, so F1 and R_KA have nothing to match
  against), an id repeated with the same question (another chain of it; the loader keeps the
  first), and, when `model.path` is given, a prompt-length check that could not run;
- **notes** (neither): reference steps that do not end in `.`, `!` or `?` (counted over the
  split's records, repeated ids included, like the authors' own counts: 3,110 of the 4,656 steps
  of the released A-OKVQA file) and what the pipeline does about them (`steps.as_sentence` adds
  a `.` wherever a reference chain becomes training text); steps the splitter reads as more than
  one sentence even so ("The image shows U.S. Department of Agriculture coupons.").

Each split is read as the data stage reads it: with `data.match_split`, only the records whose
`split` field names the split (or that have none). Each problem, warning and note names the split
(`[test]`) and the file, the line (a JSONL line, or the record's 1-based index in an annotated
JSON list) and the field, like the loaders' `DataError`s: a file given for two splits has its
problems listed under each. With a model checkpoint (`check_data(..., model=ModelSpec)`), every
prompt is also checked against `model.max_length` (`models.limits`): image tokens are never cut.

The JSONL format is checked line by line by the JSONL reader, which stops at the first bad line:
that line is one problem, and the images and chains of the examples are then checked only when
the file reads (`read_examples` without image checks).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mmboundary.data.annotated import IMAGE_PATTERNS, _detect_dataset, _map_record, _Record
from mmboundary.data.images import MAX_IMAGE_PIXELS, image_problem
from mmboundary.data.jsonl import not_found, parse_json_text, read_examples, resolve_image_path, select_split
from mmboundary.errors import DataError
from mmboundary.models.factory import load_processor
from mmboundary.models.limits import prompt_token_counts
from mmboundary.steps import as_sentence, ends_sentence, split_steps


@dataclass(frozen=True)
class Finding:
    """One problem, warning or note, located like a `DataError`, and labelled with its split."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    split: str | None = None

    def __str__(self) -> str:
        where = [w for w in (self.file, f"line {self.line}" if self.line is not None else None,
                             f"field '{self.field}'" if self.field is not None else None) if w]
        text = f"{', '.join(where)}: {self.message}" if where else self.message
        return f"[{self.split}] {text}" if self.split is not None else text

    @classmethod
    def of(cls, err: DataError, split: str | None = None) -> Finding:
        prefix = ", ".join(w for w in (err.file, f"line {err.line}" if err.line is not None else None,
                                       f"field '{err.field}'" if err.field is not None else None) if w)
        text = str(err)
        message = text[len(prefix) + 2:] if prefix and text.startswith(prefix + ": ") else text
        return cls(message, err.file, err.line, err.field, split)


@dataclass
class SplitReport:
    """What one split's file holds."""

    split: str
    file: str
    kind: str  # "jsonl" or the annotated dataset name
    records: int = 0
    examples: int = 0
    multiple_choice: int = 0
    with_chain: int = 0
    without_chain: int = 0
    steps: int = 0
    bad_images: int = 0
    duplicate_ids: int = 0
    rejected: int = 0
    longest_prompt: int | None = None
    reference_steps: int = 0  # in the split's records, repeated ids included
    unterminated: int = 0  # of those, steps that do not end in ".", "!" or "?"
    several_sentences: int = 0  # of those, steps the splitter reads as more than one sentence


@dataclass
class DataReport:
    splits: list[SplitReport] = field(default_factory=list)
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    note: str | None = None

    def ok(self, strict: bool = False) -> bool:
        return not self.problems and not (strict and self.warnings)


def _load_json_list(path: Path, split: str, report: DataReport) -> list | None:
    def problem(message: str, line: int | None = None) -> None:
        report.problems.append(Finding(message, str(path), line, split=split))

    if not path.is_file():
        problem(not_found("annotation file", path) if not path.exists() else "annotation path is not a regular file")
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
        records = parse_json_text(text)
    except UnicodeDecodeError as e:
        problem(f"not valid UTF-8 text (byte {e.start + 1} of the file)")
        return None
    except json.JSONDecodeError as e:
        problem(f"malformed JSON: {e.msg} (column {e.colno}; the file must be one JSON list)", e.lineno)
        return None
    except OSError as e:
        problem(f"cannot read the annotation file: {e}")
        return None
    if not isinstance(records, list) or not records:
        problem("expected a non-empty JSON list of records")
        return None
    return records


def _in_split(rows: list, split: str, match_split: bool, path: Path, report: DataReport) -> list | None:
    """The rows (line, example, ...) of `split` as the loaders keep them (`jsonl.select_split`,
    examples without a split tagged with it); all rows without `match_split`. None, and a problem,
    when the file has no example of the split."""
    if not match_split or not rows:
        return rows
    try:
        kept = dict(select_split([(n, ex) for n, ex, *_ in rows], split, file=path))
    except DataError as e:
        report.problems.append(Finding.of(e, split))
        return None
    return [(n, kept[n], *rest) for n, _, *rest in rows if n in kept]


def _count_steps(sr: SplitReport, examples) -> None:
    """The reference-step counts of a split (module docstring, notes)."""
    for ex in examples:
        for step in ex.chain:
            sr.reference_steps += 1
            sr.unterminated += not ends_sentence(step.text)
            sr.several_sentences += len(split_steps(as_sentence(step.text))) > 1


def _check_annotated(path: Path, split: str, dataset: str | None, image_dir: Path | None,
                     report: DataReport, max_pixels: int | None, match_split: bool) -> tuple[SplitReport, list]:
    records = _load_json_list(path, split, report)
    sr = SplitReport(split, str(path), dataset or "annotated")
    if records is None:
        return sr, []
    dataset = dataset or _detect_dataset(records)
    sr.kind = dataset
    sr.records = len(records)
    root = Path(resolve_image_path(str(image_dir if image_dir is not None else path.parent), Path.cwd()))
    first_of: dict[str, tuple[int, object]] = {}
    kept: list[tuple[int, object, str]] = []
    repeats: list[tuple[int, object]] = []
    for index, data in enumerate(records, start=1):
        try:
            ex, image_field = _map_record(_Record(data, index, path), dataset=dataset, image_dir=root,
                                          image_pattern=IMAGE_PATTERNS[dataset], include_direct_answers=True)
        except DataError as e:
            sr.rejected += 1
            report.problems.append(Finding.of(e, split))
            continue
        id_key = "id" if dataset == "culturalvqa" else "question_id"
        if ex.id in first_of:
            sr.duplicate_ids += 1
            repeats.append((index, ex))
            first_index, first = first_of[ex.id]
            if first.model_dump(exclude={"chain"}) == ex.model_dump(exclude={"chain"}):
                report.warnings.append(Finding(f"record {index}: repeats the id {ex.id!r} of record {first_index} "
                                               "with the same question (another chain; the first is kept)",
                                               str(path), index, id_key, split))
            else:
                report.problems.append(Finding(f"record {index}: repeats the id {ex.id!r} of record {first_index} "
                                               "with a different question, image, choices or answers",
                                               str(path), index, id_key, split))
            continue
        first_of[ex.id] = (index, ex)
        kept.append((index, ex, image_field))
    kept = _in_split(kept, split, match_split, path, report)
    if kept is None:
        return sr, []
    in_split = [ex for _, ex in repeats if not match_split or ex.split in (None, split)]
    _count_steps(sr, [ex for _, ex, _ in kept] + in_split)
    return sr, kept


def _check_jsonl(path: Path, split: str, report: DataReport, match_split: bool) -> tuple[SplitReport, list]:
    sr = SplitReport(split, str(path), "jsonl")
    try:
        examples = read_examples(path, check_images=False)
    except DataError as e:
        report.problems.append(Finding.of(e, split))
        return sr, []
    sr.records = len(examples)
    kept = _in_split([(i, ex, "image") for i, ex in enumerate(examples, start=1)], split, match_split, path, report)
    if kept is None:
        return sr, []
    _count_steps(sr, [ex for _, ex, _ in kept])
    return sr, kept


def check_split(path: str | Path, split: str, *, fmt: str, dataset: str | None = None,
                image_dir: str | Path | None = None, report: DataReport | None = None,
                max_pixels: int | None = MAX_IMAGE_PIXELS, match_split: bool = False) -> tuple[SplitReport, list]:
    """Check one split file; findings go to `report`, labelled with `split`. Returns the split's
    summary and the examples that were read (with their line and image field). `match_split`:
    keep only the records of `split` (and those naming none), as the data stage does with
    `data.match_split`."""
    report = report if report is not None else DataReport()
    path = Path(path)
    if fmt == "annotated":
        sr, kept = _check_annotated(path, split, dataset, Path(image_dir) if image_dir is not None else None,
                                    report, max_pixels, match_split)
    else:
        sr, kept = _check_jsonl(path, split, report, match_split)
    if sr.unterminated:
        report.notes.append(Finding(
            f"{sr.unterminated:,} of the {sr.reference_steps:,} reference steps do not end in '.', '!' or '?'; the "
            "pipeline adds '.' to each where a reference chain becomes training text, so the steps stay sentences "
            "of their own (docs/data-format.md, 'Step boundaries')", str(path), split=split))
    if sr.several_sentences:
        report.notes.append(Finding(
            f"{sr.several_sentences:,} reference step(s) read as more than one sentence by the step splitter "
            "(e.g. an initialism before a capital, 'U.S. Department'): each counts as several steps when generated",
            str(path), split=split))
    good = []
    first_image_problem = len(report.problems)
    for line, ex, image_field in kept:
        sr.examples += 1
        sr.multiple_choice += bool(ex.choices)
        if ex.chain:
            sr.with_chain += 1
            sr.steps += len(ex.chain)
        else:
            sr.without_chain += 1
            report.warnings.append(Finding(f"example {ex.id!r} has no reference chain", str(path), line,
                                           "keys_filtered.Reasoning_level" if fmt == "annotated" else "chain",
                                           split))
        reason = image_problem(ex.image, max_pixels=max_pixels)
        if reason is not None:
            sr.bad_images += 1
            report.problems.append(Finding(f"example {ex.id!r}: {reason}", str(path), line, image_field, split))
        else:
            good.append((line, ex))
    if sr.examples and sr.bad_images == sr.examples:  # most likely the wrong folder: say so first
        first = report.problems[first_image_problem]
        report.problems.insert(first_image_problem, Finding(
            f"none of the {sr.examples} images can be used (the first: {first.message}); is the image folder "
            f"(data.image_dir / data.ood_image_dir) right?", str(path), None, first.field, split))
    report.splits.append(sr)
    return sr, good


def check_data(cfg, *, model=None, max_pixels: int | None = MAX_IMAGE_PIXELS) -> DataReport:
    """Check every split file of a `DataConfig` (see the module docstring). `model`: a `ModelSpec`
    whose checkpoint's processor checks each readable example's prompt length."""
    report = DataReport()
    if cfg.source == "benchmark":
        report.note = ("data.source is 'benchmark': the built-in benchmark is drawn by the data stage, there is "
                       "no folder to check")
        return report
    read: dict[str, list] = {}
    for split, src, image_dir, dataset in cfg.split_files():
        _, read[split] = check_split(src, split, fmt=cfg.source, dataset=dataset, image_dir=image_dir,
                                     report=report, max_pixels=max_pixels, match_split=cfg.match_split)
    ids = Counter(ex.id for split in ("train",) for _, ex in read.get("train", []))
    for split in ("test", "ood"):
        leaked = [ex.id for _, ex in read.get(split, []) if ex.id in ids]
        if leaked:
            report.warnings.append(Finding(f"{len(leaked)} {split} example id(s) also in train: "
                                           + ", ".join(repr(i) for i in leaked[:5])
                                           + (" ..." if len(leaked) > 5 else ""),
                                           str(getattr(cfg, split)), split=split))
    if model is not None and model.path is not None:
        _check_prompts(model, read, report)
    return report


def _check_prompts(model, read: dict[str, list], report: DataReport) -> None:
    try:
        processor = load_processor(model.path, model)
    except Exception as e:  # noqa: BLE001 - no download here, a missing checkpoint is reported, not fatal
        report.warnings.append(Finding(f"prompt lengths not checked: the processor of {model.path!r} cannot be "
                                       f"loaded ({type(e).__name__}: {str(e)[:200]})"))
        return
    for sr in report.splits:
        rows = read.get(sr.split, [])
        try:
            counts = prompt_token_counts(processor, [ex for _, ex in rows])
        except ValueError as e:  # a processor that names no image token
            report.warnings.append(Finding(f"prompt lengths not checked: {e}"))
            return
        known = [c for c in counts if c is not None]
        sr.longest_prompt = max((c[0] for c in known), default=None)
        for (line, ex), c in zip(rows, counts):
            if c is not None and c[0] >= model.max_length:
                report.problems.append(Finding(
                    f"example {ex.id!r}: the prompt takes {c[0]} tokens ({c[1]} of them image tokens), no room "
                    f"for a response within model.max_length={model.max_length} (image tokens are never cut)",
                    sr.file, line, "image", sr.split))


def print_report(report: DataReport, console=None, *, strict: bool = False, limit: int = 50) -> None:
    """The summary table, then the problems and warnings (at most `limit` of each)."""
    console = console or Console()
    if report.note:
        console.print(report.note)
    if report.splits:
        table = Table(title="dataset check")
        for col in ("split", "file", "format", "records", "examples", "choice", "chain", "no chain",
                    "steps", "bad img", "rep. id", "rejected", "prompt"):
            table.add_column(col, justify="left" if col in ("split", "file", "format") else "right")
        for s in report.splits:
            table.add_row(s.split, escape(Path(s.file).name), s.kind, str(s.records), str(s.examples),
                          str(s.multiple_choice),
                          str(s.with_chain), str(s.without_chain),
                          f"{s.steps / s.with_chain:.1f}" if s.with_chain else "-", str(s.bad_images),
                          str(s.duplicate_ids), str(s.rejected),
                          str(s.longest_prompt) if s.longest_prompt is not None else "-")
        console.print(table)
        console.print("[dim]choice: multiple-choice examples; chain / no chain: with / without a reference chain; "
                      "steps: mean steps per chain; bad img: missing or unusable images; rep. id: repeated ids; "
                      "rejected: records the loader refuses; prompt: longest prompt in tokens (with model.path)[/dim]")
    for title, items, style in (("problems", report.problems, "red"), ("warnings", report.warnings, "yellow"),
                                ("notes", report.notes, "blue")):
        if items:
            console.print(f"[bold {style}]{len(items)} {title}[/bold {style}]")
            for f in items[:limit]:
                console.print(f"  {escape(str(f))}", soft_wrap=True)
            if len(items) > limit:
                console.print(f"  ... and {len(items) - limit} more")
    verdict = report.ok(strict)
    console.print("[bold green]ok[/bold green]" if verdict else
                  "[bold red]not ok[/bold red]" + (" (warnings count as problems: --strict)" if strict and
                                                     not report.problems else ""))
