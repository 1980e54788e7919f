"""The report's measurement protocol (docs/compare.md, "Reading the report"): how sure each number
is, and when one row may be called better than another. Pure functions of the saved
per-question scores (`SplitResult.questions`); the statistics are `evaluation.bootstrap`'s.

- `fill_intervals`: a row's cells on one split: each column's mean over seeds with its 95 %
  pooled bootstrap interval over questions (`pooled_intervals`: every resample draws one set of
  question ids that all seeds use), and the Brier score's parts per seed. A row with a seed whose
  result keeps no scores (format /1) gets no interval at all, rather than an interval over
  fewer seeds than its mean.
- `pair`: one row against another on one metric (`paired_difference`: seeds paired, the same
  resampled questions for both rows), with the verdict in words (`verdict_word`).
- `paired_table`: every row against each comparator of `COMPARATORS` on `PAIRED_METRICS`.

**The rule** (the only way the report calls a row better or worse, findings included): the paired
difference's 95 % interval excludes 0 AND every common seed's own difference has the same sign;
then "better" or "worse" by the metric's direction (lower MECE, ECE, Brier is better; higher
accuracy is better), else "no measurable difference".
"""

from __future__ import annotations

from collections.abc import Sequence

from mmboundary.compare.report_model import COLUMNS, REPORT_COLUMNS, Paired, ReportRow, Stat
from mmboundary.compare.results import RowResult
from mmboundary.evaluation.bootstrap import LEVEL, N_RESAMPLES, metric, paired_difference, pooled_intervals

__all__ = ["COMPARATORS", "INTERVAL_COLUMNS", "PAIRED_METRICS", "fill_intervals", "pair", "paired_table",
           "verdict_word"]

#: The columns with an interval: every column but F1 (the scores do not hold step matching).
INTERVAL_COLUMNS: tuple[str, ...] = tuple(c for c, _, _ in COLUMNS if c != "f1")
#: **[choice]** The metrics of the paired differences, with the better direction: the paper's two
#: calibration errors, the Brier score (calibration and discrimination in one), and accuracy
#: (whether a method's training cost answers).
PAIRED_METRICS: tuple[tuple[str, str], ...] = (("mece", "lower"), ("ece", "lower"), ("brier", "lower"),
                                               ("accuracy", "higher"))
#: **[choice]** The rows every row is paired with, when the comparison has them: SFT only (what RL
#: adds), the two references that know nothing per step (one constant level, a prior level per
#: kind of step: what any stated confidence must beat), and the vanilla model's internal levels
#: (what training adds to the signals it starts from).
COMPARATORS: tuple[str, ...] = ("sft_only", "constant_level", "kind_prior", "vanilla")
#: Rows never paired as the subject: the references with nothing per step (paired only as
#: comparators).
_NOT_SUBJECTS = ("constant_level", "kind_prior")


def verdict_word(raw: str, direction: str) -> str:
    """A paired difference's verdict ("lower" / "higher" / "no measurable difference", row minus
    comparator) in words for a metric whose better `direction` is "lower" or "higher"."""
    if raw not in ("lower", "higher"):
        return "no measurable difference"
    return "better" if raw == direction else "worse"


def fill_intervals(rr: ReportRow, have: Sequence[RowResult], split: str, *, n_resamples: int = N_RESAMPLES,
                   seed: int = 0, level: float = LEVEL) -> None:
    """Fill a row's per-question columns, in place: its per-seed scores (`questions`), the seeds
    without them (`without_questions`), the Brier parts' `Stat`s over seeds, and each column's
    pooled interval (`intervals`) when every seed with numbers has scores (`have`: its "ok"
    results that have `split`)."""
    rr.questions = {r.seed: list(r.splits[split].questions) for r in sorted(have, key=lambda r: r.seed)
                    if r.splits[split].questions}
    rr.without_questions = sorted(r.seed for r in have if not r.splits[split].questions)
    for c, _, _ in COLUMNS:
        if c not in REPORT_COLUMNS:
            rr.stats[c] = Stat.of([metric(c, qs) for qs in rr.questions.values()]) if not rr.without_questions \
                else None
    if rr.questions and not rr.without_questions:
        rr.intervals = pooled_intervals(list(rr.questions.values()), INTERVAL_COLUMNS, n_resamples=n_resamples,
                                        seed=seed, level=level)


def pair(a: ReportRow, b: ReportRow, name: str, direction: str, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
         level: float = LEVEL) -> Paired:
    """Row `a` minus row `b` on metric `name` over the seeds both have scores for, with the
    verdict by the rule (module docstring); without a common seed, no verdict and the reason."""
    common = sorted(set(a.questions) & set(b.questions))
    base = dict(row=a.row, label=a.label, against=b.row, against_label=b.label, metric=name, seeds=common)
    if not common:
        missing = [r.label for r in (a, b) if r.without_questions]
        why = (f"no per-question scores for {', '.join(missing)} (results of format /1)" if missing
               else "no seed with per-question scores in common")
        return Paired(**base, reason=why)
    d = paired_difference([a.questions[s] for s in common], [b.questions[s] for s in common], name,
                          n_resamples=n_resamples, seed=seed, level=level)
    return Paired(**base, estimate=d.estimate, low=d.low, high=d.high, per_seed=list(d.per_seed),
                  verdict=verdict_word(d.verdict, direction))


def paired_table(rows: Sequence[ReportRow], *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 level: float = LEVEL) -> list[Paired]:
    """Every row with numbers (but the two references with nothing per step) against each
    comparator of `COMPARATORS` that has numbers and is not the row itself, on each metric of
    `PAIRED_METRICS`, in table order."""
    ok = {r.row: r for r in rows if r.status == "ok"}
    against = [ok[c] for c in COMPARATORS if c in ok]
    out = []
    for r in rows:
        if r.row not in ok or r.row in _NOT_SUBJECTS:
            continue
        for b in against:
            if b.row == r.row:
                continue
            out += [pair(r, b, name, direction, n_resamples=n_resamples, seed=seed, level=level)
                    for name, direction in PAIRED_METRICS]
    return out
