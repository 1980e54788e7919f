"""Calibration metrics (method.md section 6): pure numpy functions of confidences and correctness.

Every function takes

- `confidences`: a 1-D sequence of floats in [0, 1] (the probability that the thing is right);
- `correct`: a 1-D sequence of the same length of 0/1 (or bools): whether it was right.

Invalid input (a confidence outside [0, 1], NaN or infinity, a correctness other than 0/1,
mismatched lengths, a non-1-D array, or no data at all) raises `ValueError` with a message
that says which. Nothing is silently dropped.

The same functions serve both levels of method.md section 6:

- answer-level ECE: one confidence per example, the probability p(L) of the final step's
  stated level, against the correctness `a` of the final answer;
- step-level MECE: one confidence per predicted step (every step of every chain), p_t against
  the step's correctness y_t.

Binning convention (**[choice]**, method.md section 6): `n_bins` equal-width bins over [0, 1].
The bin edges are the floats `b / n_bins` (correctly rounded division, so the edge 3/10 is the
float 0.3); bin b holds the confidences c with `edge_b <= c < edge_(b+1)`, and a confidence of
exactly 1.0 falls in the last bin. A confidence that equals an edge therefore belongs to the
bin above it: with 10 bins, the level probabilities 0.1, 0.3, 0.5, 0.7, 0.9 are the lower
edges of bins 1, 3, 5, 7, 9.

This differs from `netcal.metrics.ECE` (netcal 1.3/1.4) only for confidences that sit exactly on
an edge: netcal builds its edges with `np.linspace(0, 1, n + 1)`, whose values are `i * 0.1`
(0.30000000000000004, 0.6000000000000001, 0.7000000000000001 for 10 bins), so netcal puts the
float 0.3 in bin [0.2, 0.3) and 0.7 in [0.6, 0.7). netcal also clips confidences to
[eps, 1 - eps] before binning, which moves 0.0 and 1.0 into the first and last bin as here.
For confidences strictly inside the bins both give the same ECE (tests/test_calibration.py
checks both facts).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

ArrayLike = Sequence[float] | Sequence[bool] | Sequence[int] | np.ndarray

__all__ = [
    "BrierParts",
    "CalibrationReport",
    "ReliabilityBin",
    "adaptive_ece",
    "auroc",
    "bin_edges",
    "bin_index",
    "brier",
    "brier_decomposition",
    "calibration_report",
    "ece",
    "level_shares",
    "mce",
    "reliability_bins",
]


# --- Validation -----------------------------------------------------------------------------

def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers ({e})") from e
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence, got an array of shape {arr.shape}")
    return arr


def _validate(confidences: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Checked float arrays (confidences in [0, 1], correctness in {0.0, 1.0})."""
    c = _as_1d(confidences, "confidences")
    y = _as_1d(correct, "correct")
    if c.shape[0] != y.shape[0]:
        raise ValueError(f"confidences and correct differ in length ({c.shape[0]} vs "
                         f"{y.shape[0]})")
    if c.shape[0] == 0:
        raise ValueError("empty input: no confidences to evaluate (a calibration metric needs at "
                         "least one prediction)")
    bad = ~np.isfinite(c)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"confidences: {int(bad.sum())} value(s) are NaN or infinite "
                         f"(first at index {i}: {c[i]})")
    out = (c < 0.0) | (c > 1.0)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise ValueError(f"confidences: {int(out.sum())} value(s) outside [0, 1] (first at "
                         f"index {i}: {c[i]})")
    not01 = ~((y == 0.0) | (y == 1.0))  # also catches NaN
    if not01.any():
        i = int(np.flatnonzero(not01)[0])
        raise ValueError(f"correct: {int(not01.sum())} value(s) are not 0/1 or a bool (first at "
                         f"index {i}: {y[i]})")
    return c, y


def _check_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


# --- Binning --------------------------------------------------------------------------------

def bin_edges(n_bins: int = 10) -> np.ndarray:
    """The `n_bins + 1` edges `b / n_bins` of the equal-width bins (see the module docstring)."""
    n = _check_bins(n_bins)
    return np.arange(n + 1, dtype=float) / n


def bin_index(c: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Equal-width bin of every confidence: edge_b <= c < edge_(b+1); 1.0 in the last bin (the
    binning of every ECE here; `evaluation.bootstrap` bins its resamples with it)."""
    edges = bin_edges(n_bins)
    idx = np.searchsorted(edges, c, side="right") - 1
    return np.clip(idx, 0, n_bins - 1)


def _bin_stats(c: np.ndarray, y: np.ndarray, n_bins: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: count, sum of confidences, sum of correctness."""
    idx = bin_index(c, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=c, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=y, minlength=n_bins)
    return count, conf_sum, acc_sum


def _gaps(count: np.ndarray, conf_sum: np.ndarray, acc_sum: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """|acc_b - conf_b| and n_b of the non-empty bins."""
    nz = count > 0
    return np.abs(acc_sum[nz] / count[nz] - conf_sum[nz] / count[nz]), count[nz]


# --- Metrics --------------------------------------------------------------------------------

def ece(confidences: ArrayLike, correct: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error with equal-width bins: sum_b (n_b / N) * |acc_b - conf_b|.

    acc_b is the share of correct predictions in bin b and conf_b their mean confidence. Used
    for the answer-level ECE (final step's confidence vs answer correctness) and the step-level
    MECE (every step's confidence vs step correctness), method.md section 6.
    """
    n_bins = _check_bins(n_bins)
    c, y = _validate(confidences, correct)
    gaps, counts = _gaps(*_bin_stats(c, y, n_bins))
    return float(np.sum(counts * gaps) / c.shape[0])


def adaptive_ece(confidences: ArrayLike, correct: ArrayLike, n_bins: int = 10) -> float:
    """ECE with equal-mass bins: sum_b (n_b / N) * |acc_b - conf_b|.

    The predictions are sorted by confidence and split into `n_bins` consecutive groups of
    nearly equal size (`np.array_split`: the first N mod n_bins groups hold one more). With
    fewer predictions than bins, the empty groups are skipped. **[choice]** Ties in confidence
    may straddle a group boundary; they are ordered by correctness (wrong first) so that the
    result does not depend on the input order.
    """
    n_bins = _check_bins(n_bins)
    c, y = _validate(confidences, correct)
    order = np.lexsort((y, c))  # primary key: confidence, then correctness
    total = 0.0
    for group in np.array_split(order, n_bins):
        if group.size:
            total += group.size * abs(float(np.mean(y[group])) - float(np.mean(c[group])))
    return float(total / c.shape[0])


def mce(confidences: ArrayLike, correct: ArrayLike, n_bins: int = 10) -> float:
    """Maximum calibration error: max over the non-empty equal-width bins of |acc_b - conf_b|.

    (Not to be confused with the paper's MECE, the step-level ECE: that is `ece` over steps.)
    """
    n_bins = _check_bins(n_bins)
    c, y = _validate(confidences, correct)
    gaps, _ = _gaps(*_bin_stats(c, y, n_bins))
    return float(np.max(gaps))


def brier(confidences: ArrayLike, correct: ArrayLike) -> float:
    """Brier score: mean of (confidence - correct)^2; 0 is perfect, 1 the worst."""
    c, y = _validate(confidences, correct)
    return float(np.mean((c - y) ** 2))


class BrierParts(BaseModel):
    """Murphy's (1973) decomposition of the Brier score: `brier = reliability - resolution +
    uncertainty` (see `brier_decomposition`).

    - `reliability` (lower is better): the mean squared gap between each stated confidence and
      the accuracy of the predictions that stated it: the calibration part;
    - `resolution` (higher is better): how far the accuracy of each confidence group is from the
      overall accuracy: how well the confidences separate right from wrong;
    - `uncertainty`: ybar (1 - ybar) of the overall accuracy ybar: the data's part, the same for
      every confidence source on the same predictions.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    reliability: float
    resolution: float
    uncertainty: float

    @property
    def brier(self) -> float:
        """reliability - resolution + uncertainty: the Brier score (up to rounding)."""
        return self.reliability - self.resolution + self.uncertainty


def brier_decomposition(confidences: ArrayLike, correct: ArrayLike) -> BrierParts:
    """The Brier score's three parts (Murphy 1973), grouped by DISTINCT confidence values.

    **[choice]** The groups k are the distinct confidences f_k (n_k predictions, accuracy o_k;
    overall accuracy o, N predictions), not equal-width bins:

        reliability = sum_k n_k (f_k - o_k)^2 / N
        resolution  = sum_k n_k (o_k - o)^2 / N
        uncertainty = o (1 - o)

    With one forecast per group the identity `brier == reliability - resolution + uncertainty`
    is exact (no within-bin variance term), which is the case for level confidences (five
    values p(L)); for continuous confidences every distinct value is its own group, so the
    identity still holds and the reliability is the "resolution-free" calibration gap.
    """
    c, y = _validate(confidences, correct)
    values, inverse = np.unique(c, return_inverse=True)
    n_k = np.bincount(inverse).astype(float)
    o_k = np.bincount(inverse, weights=y) / n_k
    o = float(np.mean(y))
    n = float(c.shape[0])
    return BrierParts(reliability=float(np.sum(n_k * (values - o_k) ** 2) / n),
                      resolution=float(np.sum(n_k * (o_k - o) ** 2) / n),
                      uncertainty=o * (1.0 - o))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each distinct value's first copy
    return (first + (counts + 1) / 2.0)[inverse]


def auroc(confidences: ArrayLike, correct: ArrayLike) -> float | None:
    """Area under the ROC curve of confidence as a score for correctness.

    The Mann-Whitney statistic: the probability that a random correct prediction has a higher
    confidence than a random wrong one, ties counted one half. None when only one class is
    present (all right or all wrong), where the area is undefined.
    """
    c, y = _validate(confidences, correct)
    pos = y == 1.0
    n_pos = int(pos.sum())
    n_neg = int(c.shape[0] - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(c)
    u = float(ranks[pos].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


# --- Records --------------------------------------------------------------------------------

class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReliabilityBin(_Record):
    """One equal-width bin of a reliability diagram.

    `mean_confidence` and `accuracy` are None for an empty bin (`count == 0`).
    """

    index: int
    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None

    @property
    def gap(self) -> float | None:
        """|accuracy - mean_confidence|, None for an empty bin."""
        if self.count == 0:
            return None
        return abs(self.accuracy - self.mean_confidence)  # type: ignore[operator]


def reliability_bins(confidences: ArrayLike, correct: ArrayLike,
                     n_bins: int = 10) -> list[ReliabilityBin]:
    """Every equal-width bin (empty ones included) with its count, mean confidence, accuracy."""
    n_bins = _check_bins(n_bins)
    c, y = _validate(confidences, correct)
    count, conf_sum, acc_sum = _bin_stats(c, y, n_bins)
    edges = bin_edges(n_bins)
    out = []
    for b in range(n_bins):
        n = int(count[b])
        out.append(ReliabilityBin(
            index=b, lower=float(edges[b]), upper=float(edges[b + 1]), count=n,
            mean_confidence=float(conf_sum[b] / n) if n else None,
            accuracy=float(acc_sum[b] / n) if n else None,
        ))
    return out


def level_shares(levels: Sequence[int] | np.ndarray, n_levels: int = 5) -> dict[int, float]:
    """Share of each level 1..n_levels among `levels` (levels never used get 0.0).

    A model that always says "fairly sure" can have a low ECE on a balanced set yet is not
    calibrated in any useful sense; the shares make that visible (method.md section 6).
    """
    n_levels = _check_bins(n_levels)
    arr = np.asarray(levels)
    if arr.ndim != 1:
        raise ValueError(f"levels: expected a 1-D sequence, got an array of shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("empty input: no levels to count")
    try:
        as_float = arr.astype(float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"levels: expected integers ({e})") from e
    bad = ~np.isfinite(as_float) | (as_float != np.round(as_float)) | (as_float < 1) | (
        as_float > n_levels)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"levels: {int(bad.sum())} value(s) are not integers in 1..{n_levels} "
                         f"(first at index {i}: {arr[i]!r})")
    ints = as_float.astype(int)
    counts = np.bincount(ints, minlength=n_levels + 1)
    return {level: float(counts[level] / ints.shape[0]) for level in range(1, n_levels + 1)}


class CalibrationReport(_Record):
    """The calibration metrics of one set of (confidence, correctness) pairs.

    For the answer level, the pairs are (p of the final step, answer correct); for the step
    level (the paper's MECE), one pair per predicted step. `auroc` is None when all pairs are
    right or all wrong.
    """

    n: int
    n_bins: int
    accuracy: float
    mean_confidence: float
    ece: float
    adaptive_ece: float
    mce: float
    brier: float
    auroc: float | None


def calibration_report(confidences: ArrayLike, correct: ArrayLike,
                       n_bins: int = 10) -> CalibrationReport:
    """All metrics of this module at once (see `CalibrationReport`)."""
    n_bins = _check_bins(n_bins)
    c, y = _validate(confidences, correct)
    return CalibrationReport(
        n=int(c.shape[0]), n_bins=n_bins,
        accuracy=float(np.mean(y)), mean_confidence=float(np.mean(c)),
        ece=ece(c, y, n_bins), adaptive_ece=adaptive_ece(c, y, n_bins), mce=mce(c, y, n_bins),
        brier=brier(c, y), auroc=auroc(c, y),
    )
