"""What the comparison's report is made of: its columns (`COLUMNS`), the paper's numbers
(`PAPER_TABLE`, `PAPER_DATASETS`), and the report itself (`Report` of `SplitTable`s of
`ReportRow`s, each column a `Stat` over seeds), built by `report.build_report`."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: The report's columns: (ConfidenceReport field, header, better direction).
COLUMNS: tuple[tuple[str, str, Literal["lower", "higher"]], ...] = (
    ("ece", "ECE", "lower"), ("mece", "MECE", "lower"), ("accuracy", "Acc", "higher"),
    ("f1", "F1", "higher"), ("auroc", "AUROC", "higher"), ("brier", "Brier", "lower"),
)
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
    step_confidence: list[float] = Field(default_factory=list, exclude=True)
    step_correct: list[int] = Field(default_factory=list, exclude=True)


class SplitTable(BaseModel):
    split: str
    datasets: tuple[str, ...]
    rows: list[ReportRow]
    findings: list[str]


class Report(BaseModel):
    """The whole comparison, rebuilt from saved results (`build_report`)."""

    root: str
    name: str
    seeds: list[int]
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


def _fmt(stat: Stat | None, bold: bool = False) -> str:
    """A column's cell: mean ± sample std (no ± for one seed), "-" for none, optionally in bold."""
    if stat is None:
        return "-"
    text = f"{stat.mean:.3f}" + (f" ± {stat.std:.3f}" if stat.std is not None else "")
    return f"**{text}**" if bold else text
