"""The saved results of a comparison: one `RowResult` per row and seed
(`results/<row>/seed<s>.json`, format `RESULT_FORMAT`), with a `SplitResult` per split.

Formats: "mmboundary.compare.row/2" (written now) keeps each split's per-question scores
(`SplitResult.questions`), the source of every bootstrap interval and paired difference of the
report; "mmboundary.compare.row/1" (written before) has none, and is still read: its cells are
reported without intervals (`RowResult.has_questions`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmboundary.errors import RunError
from mmboundary.evaluation.bootstrap import QuestionScores
from mmboundary.evaluation.expressed import ConfidenceReport
from mmboundary.io import atomic_write_text

#: Format tag of a saved `RowResult` (the one written); `READ_FORMATS`: the ones read.
RESULT_FORMAT = "mmboundary.compare.row/2"
READ_FORMATS = ("mmboundary.compare.row/1", RESULT_FORMAT)


class SplitResult(BaseModel):
    """One row, one seed, one split: the evaluate stage's columns (`report`) and the pairs they
    were computed from: step-level (confidence, correctness) of every scored step and answer-level
    (confidence, answer correctness) of every answer with a confidence. `questions`: the same
    numbers per question (`evaluation.bootstrap.QuestionScores`: its answer's and steps'
    confidence and correctness, its steps' kinds), which the report resamples for its intervals
    and pairs across rows by question id; empty in a result of format /1. `extra`:
    method-specific numbers (a baseline's fallback counts, answer Brier score, cost per example,
    the sample equivalence of SC)."""

    model_config = ConfigDict(extra="forbid")

    report: ConfidenceReport
    step_confidence: list[float] = Field(default_factory=list)
    step_correct: list[int] = Field(default_factory=list)
    answer_confidence: list[float] = Field(default_factory=list)
    answer_correct: list[int] = Field(default_factory=list)
    questions: list[QuestionScores] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _paired(self) -> "SplitResult":
        if len(self.step_confidence) != len(self.step_correct) \
                or len(self.answer_confidence) != len(self.answer_correct):
            raise ValueError("confidences and correctness must pair up")
        ids = [q.id for q in self.questions]
        if len(set(ids)) != len(ids):
            raise ValueError("a question is scored twice")
        return self


class RowResult(BaseModel):
    """One row of the comparison for one seed, as saved in `results/<row>/seed<s>.json`.

    `status`: "ok" (per split results in `splits`), "not_applicable" (a baseline that does not
    apply to the model), "unavailable" (a row the config cannot express), "failed" (an error;
    retried by the next run). `reason` says why for every status but "ok". `source` names the run
    directory and model, or the baseline and its raw result files. `stages_reused` / `stages_run`:
    the run's stages hard-linked from the full run / computed for this row; `seconds`: the wall
    time this row took in the run that produced it. `origin`: the weights of the seed's full run
    the result was made from, as {stage: digest} for its model stages (`base`, `sft`, `rl`) the
    row depends on (`stage_digest`); empty in results saved before it was recorded. `format`:
    /2, or /1 for a result saved before per-question scores were kept (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["mmboundary.compare.row/1", "mmboundary.compare.row/2"] = RESULT_FORMAT
    row: str
    label: str
    kind: Literal["reference", "method", "ablation", "baseline", "correction"]
    seed: int
    status: Literal["ok", "not_applicable", "unavailable", "failed"]
    reason: str | None = None
    paper_row: str | None = None
    source: dict[str, Any] = Field(default_factory=dict)
    splits: dict[str, SplitResult] = Field(default_factory=dict)
    stages_reused: list[str] = Field(default_factory=list)
    stages_run: list[str] = Field(default_factory=list)
    seconds: float | None = None
    fingerprint: str | None = None
    origin: dict[str, str] = Field(default_factory=dict)
    note: str | None = None

    @model_validator(mode="after")
    def _status(self) -> "RowResult":
        if self.status == "ok" and not self.splits:
            raise ValueError(f"row {self.row!r} seed {self.seed}: status ok needs results for a split")
        if self.status != "ok" and not self.reason:
            raise ValueError(f"row {self.row!r} seed {self.seed}: status {self.status} needs a reason")
        if self.format == RESULT_FORMAT and self.status == "ok" \
                and not all(sp.questions for sp in self.splits.values()):
            raise ValueError(f"row {self.row!r} seed {self.seed}: format {RESULT_FORMAT} keeps the scores of "
                             "every question of every split")
        return self

    def has_questions(self, split: str) -> bool:
        """Whether the split's per-question scores are kept (False in a result of format /1)."""
        return split in self.splits and bool(self.splits[split].questions)


def result_path(root_dir: str | Path, row: str, seed: int) -> Path:
    return Path(root_dir) / "results" / row / f"seed{seed}.json"


def save_result(root_dir: str | Path, result: RowResult) -> Path:
    path = result_path(root_dir, result.row, result.seed)
    atomic_write_text(path, result.model_dump_json(indent=1) + "\n")
    return path


def load_result(path: str | Path) -> RowResult:
    path = Path(path)
    try:
        return RowResult.model_validate_json(path.read_text("utf-8"))
    except (ValidationError, ValueError, OSError) as e:
        raise RunError(f"{path}: not a valid comparison result: {str(e)[:500]}") from None
