"""What the comparison's report is made of: its columns (`COLUMNS`), the paper's numbers
(`PAPER_TABLE`, `PAPER_DATASETS`), and the report itself (`Report` of `SplitTable`s of
`ReportRow`s, each column a `Stat` over seeds with its pooled bootstrap interval, and the
`Paired` differences between rows), built by `report.build_report`."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmboundary.evaluation.bootstrap import Interval, QuestionScores

#: The report's columns: (name, header, better direction; "none": a property of the data, not of
#: the confidence). The name is a `ConfidenceReport` field for the first six (the cell's mean is
#: over the saved reports), and an `evaluation.bootstrap` metric for the Brier score's parts
#: (reliability: lower is better; resolution: higher; uncertainty: the steps' base rate
#: p (1 - p), Brier = reliability - resolution + uncertainty), computed from the per-question
#: scores (none for results of format /1). Every column but F1 is a bootstrap metric and gets an
#: interval (F1 is a per-question mean of step matching the scores do not hold).
COLUMNS: tuple[tuple[str, str, Literal["lower", "higher", "none"]], ...] = (
    ("ece", "ECE", "lower"), ("mece", "MECE", "lower"), ("accuracy", "Acc", "higher"),
    ("f1", "F1", "higher"), ("auroc", "AUROC", "higher"), ("brier", "Brier", "lower"),
    ("brier_reliability", "Brier rel.", "lower"), ("brier_resolution", "Brier res.", "higher"),
    ("brier_uncertainty", "Brier unc.", "none"),
    ("mece_matched", "MECE matched", "lower"),  # the paper's Fig. 6: matched steps only (a step judge); shown when set
)
#: The columns read from the saved `ConfidenceReport`s; the others come from the questions.
REPORT_COLUMNS: tuple[str, ...] = ("ece", "mece", "accuracy", "f1", "auroc", "brier")
#: The paper's results (LLaVA-NeXT-7B; method.md section 6): row -> data set -> ECE, MECE, Acc, F1.
PAPER_TABLE: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "SaySelf": {"A-OKVQA": (.345, .384, .734, .603), "ScienceQA": (.386, .462, .633, .483),
                "CulturalVQA": (.375, .437, .417, .571)},
    "MMBoundary w/o RL (SFT only)": {"A-OKVQA": (.392, .427, .768, .581), "ScienceQA": (.419, .481, .663, .495),
                                     "CulturalVQA": (.408, .456, .419, .595)},
    "MMBoundary": {"A-OKVQA": (.316, .304, .835, .661), "ScienceQA": (.354, .392, .703, .565),
                   "CulturalVQA": (.337, .361, .448, .665)},
}
#: The paper's data sets beside each of our splits: in-domain (test) and out-of-distribution (ood).
PAPER_DATASETS: dict[str, tuple[str, ...]] = {"test": ("A-OKVQA", "ScienceQA"), "ood": ("CulturalVQA",)}


class Stat(BaseModel):
    """Mean and sample standard deviation (n - 1) of one column over the seeds that have it
    (`std` None for a single value)."""

    model_config = ConfigDict(frozen=True)

    mean: float
    std: float | None
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: Sequence[float | None]) -> "Stat | None":
        vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not vals:
            return None
        return cls(mean=statistics.fmean(vals), std=statistics.stdev(vals) if len(vals) > 1 else None,
                   n=len(vals), values=vals)


class ReportRow(BaseModel):
    """A row of one split's table: its columns over seeds (`stats`, keyed by `COLUMNS` field),
    the parsed share, the mean level shares, the paper's numbers for the matching row (data set ->
    ECE, MECE, Acc, F1), and the status of each seed. The pooled pairs behind the reliability
    diagram are kept for plotting and left out of `report.json`."""

    model_config = ConfigDict(extra="forbid")

    row: str
    label: str
    kind: str
    seeds: list[int]
    spec_seeds: list[int] = Field(
        default_factory=list, description="The seeds the spec runs the row on (`CompareSpec.seeds_of`): the "
        "seeds column counts those with numbers out of these.")
    status: str  # "ok" when at least one seed has numbers, else the common status of the seeds
    reason: str | None = None
    seed_status: dict[int, str] = Field(default_factory=dict)
    stats: dict[str, Stat | None] = Field(default_factory=dict)
    parsed: Stat | None = None
    level_shares: dict[int, Stat] = Field(default_factory=dict)
    paper_row: str | None = None
    paper: dict[str, tuple[float, float, float, float]] = Field(default_factory=dict)
    seconds: Stat | None = None
    stages_reused: list[str] = Field(default_factory=list)
    stages_run: list[str] = Field(default_factory=list)
    note: str | None = None
    correction: dict[str, Stat | None] = Field(
        default_factory=dict, description="Self-correction rows: over seeds, the model's accuracy and MECE "
        "without it (`acc_without`, `mece_without`), the accuracy change (`acc_gain`), the extra tokens "
        "per greedy token (`extra_token_ratio`) and the steps replaced per question (`replaced_per_question`).")
    mece_by_seed: dict[int, float] = Field(
        default_factory=dict, description="The row's MECE on each seed that has one.")
    mece_vs_full: Stat | None = Field(
        None, description="Paired with the full method: the row's MECE minus the full method's on the same "
        "seed, over the seeds both have (the seed spread of a trained model is often larger than the gap "
        "between two rows' means, and the means may be over different seeds).")
    lower_than_full: int | None = Field(
        None, description="On how many of those seeds the row's MECE is below the full method's.")
    intervals: dict[str, Interval] = Field(
        default_factory=dict, description="Per column (`COLUMNS` but F1): the mean over seeds and its 95 % "
        "pooled bootstrap interval over questions (`evaluation.bootstrap.pooled_intervals`); empty when a seed "
        "with numbers has no per-question scores (`without_questions`).")
    without_questions: list[int] = Field(
        default_factory=list, description="Seeds with numbers whose results keep no per-question scores "
        "(format /1): the row's cells then have no interval, and its paired differences use only the seeds "
        "with scores.")
    equivalence: str | None = Field(
        None, description="SC rows: the step equivalence its samples agreed by ('exact', 'encoder'; "
        "'not recorded' for results from before it was a setting, which used the encoder).")
    total_seconds: float | None = Field(None, description="The row's seconds summed over its seeds.")
    step_confidence: list[float] = Field(default_factory=list, exclude=True)
    step_correct: list[int] = Field(default_factory=list, exclude=True)
    questions: dict[int, list[QuestionScores]] = Field(
        default_factory=dict, exclude=True, description="Per seed with numbers, its per-question scores.")


class Paired(BaseModel):
    """One row against another on one metric (`report.PAIRED_METRICS`), over the seeds both have
    per-question scores for: row minus `against` (`evaluation.bootstrap.paired_difference`), its
    95 % interval, each seed's difference, and the verdict in words: "better" / "worse" when the
    interval excludes 0 AND every seed's difference has the same sign (lower is better for MECE,
    ECE and Brier; higher for accuracy), else "no measurable difference". `reason` (verdict
    None): why it could not be measured (no common seed with per-question scores)."""

    model_config = ConfigDict(extra="forbid")

    row: str
    label: str
    against: str
    against_label: str
    metric: str
    seeds: list[int] = Field(default_factory=list)
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    per_seed: list[float | None] = Field(default_factory=list)
    verdict: Literal["better", "worse", "no measurable difference"] | None = None
    reason: str | None = None


class SplitTable(BaseModel):
    split: str
    datasets: tuple[str, ...]
    rows: list[ReportRow]
    findings: list[str]
    paired: list[Paired] = Field(
        default_factory=list, description="Each row against the comparators (`report.COMPARATORS`) on "
        "`report.PAIRED_METRICS`.")


class Report(BaseModel):
    """The whole comparison, rebuilt from saved results (`build_report`)."""

    root: str
    name: str
    seeds: list[int]
    method_seeds: list[int] | None = Field(
        None, description="The seeds of the method and reference rows, a superset of `seeds` (every row's); "
        "None: `seeds`.")
    splits: list[str]
    base_config: str | None
    overrides: list[str]
    with_rl: bool
    tables: list[SplitTable]
    last_run: dict[str, Any] | None = None
    figures: list[str] = Field(default_factory=list)
    #: per seed, where rows were made from different weights of the full run (`origin`); empty
    #: when every seed's rows share one set of models
    mixed: list[str] = Field(default_factory=list)
    #: results with no `origin` (saved before it was recorded): their weights cannot be checked
    unchecked: int = 0
    #: how the intervals and paired differences were computed: resamples, coverage, resampling seed
    protocol: dict[str, Any] = Field(default_factory=dict)
    #: the rows' recorded seconds summed over every row and seed of the report
    total_seconds: float | None = None

    def all_seeds(self) -> list[int]:
        """Every seed of the report: `seeds`, then the further `method_seeds`."""
        return list(self.seeds) + [s for s in self.method_seeds or () if s not in self.seeds]


def _fmt(stat: Stat | None, bold: bool = False, interval: Interval | None = None) -> str:
    """A column's cell: mean [95 % interval] ± sample std (no interval without one, no ± for one
    seed), "-" for none, optionally in bold."""
    if stat is None:
        return "-"
    text = f"{stat.mean:.3f}"
    if interval is not None and interval.low is not None and interval.high is not None:
        text += f" [{interval.low:.3f}, {interval.high:.3f}]"
    text += f" ± {stat.std:.3f}" if stat.std is not None else ""
    return f"**{text}**" if bold else text
