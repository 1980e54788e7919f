"""How sure a metric is: percentile bootstrap over questions, pooled over seeds, and paired
differences between two rows (docs/measurement.md). Pure: numpy and scipy, no trainer, no torch.

The unit of resampling is the QUESTION: a question's steps are drawn together (they are not
independent: one wrong perception step makes the next ones wrong), so a step-level metric's
interval is as wide as the number of questions, not of steps, allows.

- `QuestionScores`: what one question contributes to every metric (answer truth and
  confidence, each step's confidence, truth and kind); `question_scores` makes it from a judged
  chain and its levels, with the conventions of `evaluation.expressed.confidence_report`.
- `metric(name, questions)`: a metric of `METRICS`, equal to the `ConfidenceReport` column of
  the same name (computed by the functions of `evaluation.calibration`).
- `metric_intervals`: each metric's estimate and percentile interval over `n_resamples`
  resamples of the questions; one set of resamples serves every metric.
- `pooled_intervals`: the mean over seeds, each resample drawing ONE set of question ids that
  every seed uses (the seeds answer the same questions).
- `paired_difference`: row a minus row b, seeds paired, the same resampled ids for both rows
  and every seed; a verdict only when the interval excludes 0 and every seed agrees in sign.

How the resamples are fast: a resample is a vector of counts (how often each question was
drawn). Every metric here is a function of per-question sums (counts, confidence and truth sums
per ECE bin, per distinct confidence value, ...), so all resamples' sums are one product of the
counts matrix (resamples x questions) with a sparse per-question statistics matrix, and the
metric is computed from the sums, vectorised over the resamples. AUROC is the exact weighted
Mann-Whitney statistic over the distinct confidence values (ties count one half), not an
approximation. A point estimate is always the plain metric (`metric`); the weighted formulas are
used for the resamples only (tests/test_bootstrap.py checks that they agree with `metric` on a
resample written out as repeated questions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import sparse

from mmboundary.confidence.fusion import level_probability
from mmboundary.evaluation.calibration import auroc, bin_index, brier, brier_decomposition, ece
from mmboundary.records import GeneratedChain

__all__ = [
    "LEVEL",
    "METRICS",
    "N_BINS",
    "N_RESAMPLES",
    "Interval",
    "PairedDifference",
    "QuestionScores",
    "matched_flags",
    "metric",
    "metric_intervals",
    "paired_difference",
    "pooled_intervals",
    "question_scores",
]

#: The metrics, named as the `ConfidenceReport` columns they equal (the Brier parts are
#: `brier_decomposition`'s of the step-level pairs).
METRICS: tuple[str, ...] = ("accuracy", "ece", "mece", "auroc", "brier", "brier_reliability",
                            "brier_resolution", "brier_uncertainty", "step_accuracy", "mece_matched")
#: **[choice]** Bins of ECE and MECE: `confidence_report`'s (calibration's default, 10).
N_BINS = 10
#: **[choice]** Resamples per interval: 1000 (the percentile's Monte-Carlo error is then small
#: next to the interval's width; docs/measurement.md).
N_RESAMPLES = 1000
#: **[choice]** Coverage of the intervals: 95 %, the 2.5th and 97.5th percentiles.
LEVEL = 0.95
#: Largest (statistics x resamples) block computed at once (memory bound for continuous
#: confidences, whose distinct values are many).
_BLOCK = 1 << 22

Unit = Annotated[float, Field(ge=0.0, le=1.0)]


# --- Records ------------------------------------------------------------------------------------

class QuestionScores(BaseModel):
    """What one question contributes to the metrics: the answer's truth and confidence (None: the
    last step has no confidence), and per step its confidence (None: none), truth (None: not
    known), kind (`GeneratedStep.kind`; empty when not recorded) and whether a step judge
    matched it to a reference step (`GeneratedStep.reference` set; empty when not recorded: then
    `mece_matched` is undefined)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    answer_correct: bool
    answer_confidence: Unit | None
    step_confidence: tuple[Unit | None, ...]
    step_correct: tuple[bool | None, ...]
    step_kind: tuple[str | None, ...] = ()
    step_matched: tuple[bool, ...] = ()

    @model_validator(mode="after")
    def _same_steps(self) -> QuestionScores:
        n = len(self.step_confidence)
        if len(self.step_correct) != n or (self.step_kind and len(self.step_kind) != n) or \
                (self.step_matched and len(self.step_matched) != n):
            raise ValueError(f"question {self.id!r}: {n} step confidences, {len(self.step_correct)} truths and "
                             f"{len(self.step_kind)} kinds")
        return self


class Interval(BaseModel):
    """A metric's estimate and its percentile interval (None: undefined, e.g. AUROC with one
    class); `resamples`: how many resamples the metric was defined on (the interval's basis)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    estimate: float | None
    low: float | None
    high: float | None
    resamples: int = 0


class PairedDifference(BaseModel):
    """Row a minus row b on one metric: the mean over seeds of each seed's difference
    (`per_seed`), its percentile interval, and the verdict: "lower" / "higher" (a is lower /
    higher than b) only when the interval excludes 0 AND every seed's difference has that sign;
    else "no measurable difference". Whether lower is better depends on the metric."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    estimate: float | None
    low: float | None
    high: float | None
    per_seed: list[float | None]
    verdict: Literal["lower", "higher", "no measurable difference"]


def matched_flags(steps: Sequence) -> tuple[bool, ...]:
    """`QuestionScores.step_matched` of a chain's steps: per step whether a step judge matched it
    to a reference step; () when none was (not recorded: exact truth, or no judge)."""
    flags = tuple(s.reference is not None for s in steps)
    return flags if any(flags) else ()


def question_scores(chain: GeneratedChain, levels: Sequence[int | None]) -> QuestionScores:
    """A judged chain whose step t has level `levels[t]` (None: no confidence) as scores: each
    step's confidence p(L) = (L - 0.5) / 5, the answer's = the last step's (None when the last
    step has none, or the chain has no step), as `confidence_report` does."""
    if len(levels) != len(chain.steps):
        raise ValueError(f"chain {chain.example_id!r} has {len(chain.steps)} steps but {len(levels)} levels")
    conf = tuple(None if lv is None else level_probability(int(lv)) for lv in levels)
    return QuestionScores(id=chain.example_id, answer_correct=chain.answer_correct,
                          answer_confidence=conf[-1] if conf else None, step_confidence=conf,
                          step_correct=tuple(s.correct for s in chain.steps),
                          step_kind=tuple(s.kind for s in chain.steps),
                          step_matched=matched_flags(chain.steps))


# --- One question set as arrays -----------------------------------------------------------------

@dataclass(frozen=True)
class _Flat:
    """A question set as arrays. Answers: one entry per question (confidence NaN: none). Steps:
    only the scored ones (confidence AND truth known), as `confidence_report` scores them.
    `*_row`: the row of the question in the resampled id list (`rows` of them)."""

    rows: int
    answer_row: np.ndarray
    answer_y: np.ndarray
    answer_c: np.ndarray
    step_row: np.ndarray
    step_y: np.ndarray
    step_c: np.ndarray
    step_m: np.ndarray  # per scored step: matched to a reference step (`QuestionScores.step_matched`)


def _flatten(questions: Sequence[QuestionScores], index: dict[str, int] | None = None) -> _Flat:
    if index is None:
        index = {q.id: i for i, q in enumerate(questions)}
    rows = np.array([index[q.id] for q in questions], dtype=np.int64)
    scored = [(r, c, y, m) for r, q in zip(rows, questions)
              for c, y, m in zip(q.step_confidence, q.step_correct, q.step_matched or (False,) * len(q.step_correct))
              if c is not None and y is not None]
    return _Flat(rows=len(index), answer_row=rows,
                 answer_y=np.array([float(q.answer_correct) for q in questions]),
                 answer_c=np.array([np.nan if q.answer_confidence is None else q.answer_confidence
                                    for q in questions]),
                 step_row=np.array([s[0] for s in scored], dtype=np.int64),
                 step_c=np.array([s[1] for s in scored], dtype=float),
                 step_y=np.array([float(s[2]) for s in scored]),
                 step_m=np.array([bool(s[3]) for s in scored], dtype=bool))


def _answers(f: _Flat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, confidences, truths) of the answers that have a confidence."""
    m = ~np.isnan(f.answer_c)
    return f.answer_row[m], f.answer_c[m], f.answer_y[m]


# --- Point metrics: the functions of evaluation.calibration -------------------------------------

def _or_none(fn: Callable[[np.ndarray, np.ndarray], float | None], c: np.ndarray, y: np.ndarray) -> float | None:
    return fn(c, y) if c.size else None


_POINT: dict[str, Callable[[_Flat], float | None]] = {
    "accuracy": lambda f: float(np.mean(f.answer_y)) if f.answer_y.size else None,
    "ece": lambda f: _or_none(lambda c, y: ece(c, y, N_BINS), *_answers(f)[1:]),
    "mece": lambda f: _or_none(lambda c, y: ece(c, y, N_BINS), f.step_c, f.step_y),
    "auroc": lambda f: _or_none(auroc, f.step_c, f.step_y),
    "brier": lambda f: _or_none(brier, f.step_c, f.step_y),
    "brier_reliability": lambda f: _or_none(lambda c, y: brier_decomposition(c, y).reliability, f.step_c, f.step_y),
    "brier_resolution": lambda f: _or_none(lambda c, y: brier_decomposition(c, y).resolution, f.step_c, f.step_y),
    "brier_uncertainty": lambda f: _or_none(lambda c, y: brier_decomposition(c, y).uncertainty, f.step_c, f.step_y),
    "step_accuracy": lambda f: float(np.mean(f.step_y)) if f.step_y.size else None,
    "mece_matched": lambda f: _or_none(lambda c, y: ece(c, y, N_BINS), f.step_c[f.step_m], f.step_y[f.step_m]),
}


def _check_names(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    unknown = [n for n in names if n not in _POINT]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
    return tuple(names)


def metric(name: str, questions: Sequence[QuestionScores]) -> float | None:
    """The metric `name` of `METRICS` over `questions`, as the `ConfidenceReport` column of that
    name: `accuracy` over every question; `ece` over the answers with a confidence; `mece`,
    `auroc`, `brier`, the Brier parts and `step_accuracy` over the steps with a confidence and a
    known truth. None where undefined (no such answer or step; AUROC with one class)."""
    _check_names((name,))
    return _POINT[name](_flatten(questions))


# --- Resampled metrics: per-question statistics, weighted sums ----------------------------------

def _columns(rows: int, row: np.ndarray, cols: Sequence[np.ndarray], values: Sequence[np.ndarray],
             width: int) -> sparse.csr_matrix:
    """A (rows x width) matrix summing `values` at (row, col) (duplicates add up)."""
    r = np.concatenate([row] * len(cols)) if cols else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    v = np.concatenate(values) if values else np.zeros(0)
    return sparse.csr_matrix((v, (r, c)), shape=(rows, width))


def _ratio_stats(rows: int, row: np.ndarray, values: np.ndarray) -> sparse.csr_matrix:
    """Per question: [number of items, sum of `values`]."""
    zeros = np.zeros(row.shape[0], dtype=np.int64)
    return _columns(rows, row, [zeros, zeros + 1], [np.ones(row.shape[0]), values], 2)


def _bin_stats(rows: int, row: np.ndarray, c: np.ndarray, y: np.ndarray) -> sparse.csr_matrix:
    """Per question and ECE bin b: [count_b..., confidence sum_b..., truth sum_b...]."""
    b = bin_index(c, N_BINS) if c.size else np.zeros(0, dtype=np.int64)
    return _columns(rows, row, [b, b + N_BINS, b + 2 * N_BINS], [np.ones(c.shape[0]), c, y], 3 * N_BINS)


def _group_stats(f: _Flat) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Per question and distinct step confidence g: [count_g..., truth sum_g...]; the values."""
    values, g = np.unique(f.step_c, return_inverse=True)
    k = values.shape[0]
    return _columns(f.rows, f.step_row, [g, g + k], [np.ones(g.shape[0]), f.step_y], 2 * k), values


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, NaN where b == 0 (an undefined resample)."""
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=b > 0)
    return out


def _ratio(s: np.ndarray, _values: np.ndarray | None) -> np.ndarray:
    return _div(s[:, 1], s[:, 0])


def _ece(s: np.ndarray, _values: np.ndarray | None) -> np.ndarray:
    """sum_b n_b |acc_b - conf_b| / N = sum_b |truth sum_b - confidence sum_b| / N."""
    k = N_BINS
    return _div(np.abs(s[:, 2 * k:] - s[:, k:2 * k]).sum(axis=1), s[:, :k].sum(axis=1))


def _split_groups(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts, truth sums, total count) per resample from `_group_stats` sums."""
    k = s.shape[1] // 2
    n, pos = s[:, :k], s[:, k:]
    return n, pos, n.sum(axis=1)


def _auroc(s: np.ndarray, _values: np.ndarray | None) -> np.ndarray:
    """Weighted Mann-Whitney over the sorted distinct values: sum_g pos_g (neg below g + neg_g / 2)
    / (pos * neg)."""
    n, pos, _ = _split_groups(s)
    neg = n - pos
    below = np.cumsum(neg, axis=1) - neg
    return _div((pos * (below + 0.5 * neg)).sum(axis=1), pos.sum(axis=1) * neg.sum(axis=1))


def _group_accuracy(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n, pos, total = _split_groups(s)
    acc = np.nan_to_num(_div(pos, n))  # an empty group weighs 0 anyway
    return n, acc, total, _div(pos.sum(axis=1), total)


def _reliability(s: np.ndarray, values: np.ndarray | None) -> np.ndarray:
    n, acc, total, _ = _group_accuracy(s)
    return _div((n * (values[None, :] - acc) ** 2).sum(axis=1), total)


def _resolution(s: np.ndarray, _values: np.ndarray | None) -> np.ndarray:
    n, acc, total, overall = _group_accuracy(s)
    return _div((n * (acc - np.nan_to_num(overall)[:, None]) ** 2).sum(axis=1), total)


def _uncertainty(s: np.ndarray, _values: np.ndarray | None) -> np.ndarray:
    overall = _group_accuracy(s)[3]
    return overall * (1.0 - overall)


_Stats = tuple[sparse.csr_matrix, np.ndarray | None]


def _answer_ratio(f: _Flat) -> _Stats:
    return _ratio_stats(f.rows, f.answer_row, f.answer_y), None


def _answer_bins(f: _Flat) -> _Stats:
    return _bin_stats(f.rows, *_answers(f)), None


def _step_bins(f: _Flat) -> _Stats:
    return _bin_stats(f.rows, f.step_row, f.step_c, f.step_y), None


def _matched_bins(f: _Flat) -> _Stats:
    return _bin_stats(f.rows, f.step_row[f.step_m], f.step_c[f.step_m], f.step_y[f.step_m]), None


def _step_brier(f: _Flat) -> _Stats:
    return _ratio_stats(f.rows, f.step_row, (f.step_c - f.step_y) ** 2), None


def _step_truth(f: _Flat) -> _Stats:
    return _ratio_stats(f.rows, f.step_row, f.step_y), None


#: Each metric as (per-question statistics, metric of the weighted sums); metrics with the same
#: statistics function share one computation of them.
_RESAMPLED: dict[str, tuple[Callable[[_Flat], _Stats], Callable[[np.ndarray, np.ndarray | None], np.ndarray]]] = {
    "accuracy": (_answer_ratio, _ratio),
    "ece": (_answer_bins, _ece),
    "mece": (_step_bins, _ece),
    "auroc": (_group_stats, _auroc),
    "brier": (_step_brier, _ratio),
    "brier_reliability": (_group_stats, _reliability),
    "brier_resolution": (_group_stats, _resolution),
    "brier_uncertainty": (_group_stats, _uncertainty),
    "step_accuracy": (_step_truth, _ratio),
    "mece_matched": (_matched_bins, _ece),
}


def _weighted(stats: _Stats, weights: np.ndarray,
              reduce: Callable[[np.ndarray, np.ndarray | None], np.ndarray]) -> np.ndarray:
    """`reduce` of the weighted column sums of `stats`, for every row of `weights` (a block of
    rows at a time)."""
    matrix, values = stats
    step = max(1, _BLOCK // max(matrix.shape[1], 1))
    t = matrix.T.tocsr()
    parts = [reduce(np.asarray(t @ weights[i:i + step].T).T, values) for i in range(0, weights.shape[0], step)]
    return np.concatenate(parts)


def _resampled(f: _Flat, names: Sequence[str], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric on each resample (`weights[r, i]`: how often resample r drew row i); NaN where
    the metric is undefined."""
    cache: dict[Callable, _Stats] = {}
    out = {}
    for name in names:
        stats_of, reduce = _RESAMPLED[name]
        if stats_of not in cache:
            cache[stats_of] = stats_of(f)
        out[name] = _weighted(cache[stats_of], weights, reduce)
    return out


# --- Drawing questions --------------------------------------------------------------------------

def _draw(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples x n) counts: each row is n draws with replacement from n ids."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n)) + n * np.arange(n_resamples)[:, None]
    return np.bincount(idx.ravel(), minlength=n_resamples * n).reshape(n_resamples, n).astype(float)


def _check_ids(questions: Sequence[QuestionScores]) -> None:
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise ValueError(f"question id {q.id!r} appears twice in one question set")
        seen.add(q.id)


def _check_options(n_resamples: int, level: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _sets_values(sets: Sequence[Sequence[QuestionScores]], names: Sequence[str], n_resamples: int,
                 seed: int) -> tuple[list[dict[str, float | None]], list[dict[str, np.ndarray]]]:
    """Per question set: each metric's point value, and its value on each resample. The resamples
    draw from the sorted union of the sets' ids, ONE draw shared by every set (a set without an
    id gives it no weight): the seeds and rows are resampled on the same questions."""
    for s in sets:
        _check_ids(s)
    ids = sorted({q.id for s in sets for q in s})
    index = {k: i for i, k in enumerate(ids)}
    weights = _draw(len(ids), n_resamples, seed) if ids else np.zeros((n_resamples, 0))
    flats = [_flatten(s, index) for s in sets]
    return [{n: _POINT[n](f) for n in names} for f in flats], [_resampled(f, names, weights) for f in flats]


# --- Intervals ----------------------------------------------------------------------------------

def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values (None when none is)."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _mean_rows(stack: np.ndarray) -> np.ndarray:
    """Per column, the mean of the finite entries (NaN when none is)."""
    finite = np.isfinite(stack)
    return _div(np.where(finite, stack, 0.0).sum(axis=0), finite.sum(axis=0).astype(float))


def _interval(estimate: float | None, resampled: np.ndarray, level: float) -> Interval:
    """**[choice]** Percentile interval: the (1 - level)/2 and (1 + level)/2 quantiles (numpy's
    linear interpolation) of the resamples on which the metric is defined."""
    finite = resampled[np.isfinite(resampled)]
    if estimate is None or finite.size == 0:
        return Interval(estimate=estimate, low=None, high=None, resamples=int(finite.size))
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return Interval(estimate=estimate, low=float(low), high=float(high), resamples=int(finite.size))


def pooled_intervals(questions_by_seed: Sequence[Sequence[QuestionScores]], names: Sequence[str] = METRICS, *,
                     n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict[str, Interval]:
    """Each metric's mean over seeds and its percentile interval.

    **[choice]** The estimate is the mean over seeds of each seed's `metric` (seeds where it is
    undefined left out). Each resample draws ONE multiset of question ids (from the sorted union
    of the seeds' ids, matched by id, so the order of the questions does not matter) and applies
    it to every seed; the resample's value is the mean over seeds of their resampled metric. The
    interval thus covers the question sampling of a seed-averaged number, with the seeds' spread
    in it only through their mean (with one seed: `metric_intervals`).
    """
    names = _check_names(names)
    _check_options(n_resamples, level)
    if not questions_by_seed:
        raise ValueError("pooled_intervals: no seeds")
    points, resampled = _sets_values(questions_by_seed, names, n_resamples, seed)
    return {n: _interval(_mean([p[n] for p in points]), _mean_rows(np.stack([r[n] for r in resampled])), level)
            for n in names}


def metric_intervals(questions: Sequence[QuestionScores], names: Sequence[str] = METRICS, *,
                     n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict[str, Interval]:
    """Each metric's estimate (`metric`) and percentile interval from `n_resamples` resamples of
    the questions (with replacement, as many as there are; a question's steps go together). One
    set of resamples serves every metric; `seed` fixes it. The interval counts only resamples
    where the metric is defined (`Interval.resamples`). A percentile interval of a metric that
    is an absolute value (ECE, MECE) sits above a near-zero estimate and may not contain it: the
    resampled ECE is biased upward (docs/measurement.md)."""
    return pooled_intervals([questions], names, n_resamples=n_resamples, seed=seed, level=level)


# --- Paired differences -------------------------------------------------------------------------

def _pair_seeds(a_by_seed: Sequence[Sequence[QuestionScores]], b_by_seed: Sequence[Sequence[QuestionScores]]
                ) -> list[tuple[list[QuestionScores], list[QuestionScores]]]:
    """Seeds paired by position (a row of one seed is broadcast to every seed of the other),
    each pair restricted to the ids both rows have."""
    if not a_by_seed or not b_by_seed:
        raise ValueError("paired_difference: a row has no seeds")
    if len(a_by_seed) != len(b_by_seed) and 1 not in (len(a_by_seed), len(b_by_seed)):
        raise ValueError(f"paired_difference: {len(a_by_seed)} seeds against {len(b_by_seed)} (pair them, or "
                         "give one row a single seed to compare every seed with)")
    n = max(len(a_by_seed), len(b_by_seed))
    out = []
    for i in range(n):
        a, b = a_by_seed[i if len(a_by_seed) > 1 else 0], b_by_seed[i if len(b_by_seed) > 1 else 0]
        common = {q.id for q in a} & {q.id for q in b}
        out.append(([q for q in a if q.id in common], [q for q in b if q.id in common]))
    return out


def _verdict(low: float | None, high: float | None, per_seed: Sequence[float | None]) -> str:
    """**[choice]** "lower" / "higher" only when the interval excludes 0 and every seed's own
    difference is of the same sign (none undefined, none zero)."""
    if low is None or high is None or any(d is None for d in per_seed):
        return "no measurable difference"
    if high < 0 and all(d < 0 for d in per_seed):
        return "lower"
    if low > 0 and all(d > 0 for d in per_seed):
        return "higher"
    return "no measurable difference"


def paired_difference(a_by_seed: Sequence[Sequence[QuestionScores]], b_by_seed: Sequence[Sequence[QuestionScores]],
                      metric: str, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                      level: float = LEVEL) -> PairedDifference:
    """Row a minus row b on `metric`, paired by seed and by question.

    `a_by_seed[i]` and `b_by_seed[i]` are the same seed's question scores; **[choice]** a row
    given with ONE seed (e.g. a reference row computed once) is compared with every seed of the
    other. Within a seed only the question ids present in both rows count. Each resample draws
    one multiset of ids that applies to both rows and every seed; its value is the mean over
    seeds of (a - b) on it. The estimate is the mean of the seeds' point differences
    (`per_seed`, None where the metric is undefined for a row; the mean leaves those out), the
    interval its percentile interval, the verdict as `_verdict` says.
    """
    names = _check_names((metric,))
    _check_options(n_resamples, level)
    pairs = _pair_seeds(a_by_seed, b_by_seed)
    points, resampled = _sets_values([s for pair in pairs for s in pair], names, n_resamples, seed)
    per_seed = [None if points[2 * i][metric] is None or points[2 * i + 1][metric] is None
                else points[2 * i][metric] - points[2 * i + 1][metric] for i in range(len(pairs))]
    diffs = np.stack([resampled[2 * i][metric] - resampled[2 * i + 1][metric] for i in range(len(pairs))])
    iv = _interval(_mean(per_seed), _mean_rows(diffs), level)
    return PairedDifference(metric=metric, estimate=iv.estimate, low=iv.low, high=iv.high, per_seed=per_seed,
                            verdict=_verdict(iv.low, iv.high, per_seed))
