"""Calibration metrics and the reliability diagram (mmboundary.evaluation.calibration / plots).

Golden values are computed by hand in the comments; ECE is cross-checked against netcal and
AUROC against scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmboundary.evaluation.calibration import (
    BrierParts,
    CalibrationReport,
    adaptive_ece,
    auroc,
    bin_edges,
    brier,
    brier_decomposition,
    calibration_report,
    ece,
    level_shares,
    mce,
    reliability_bins,
)
from mmboundary.evaluation.plots import reliability_diagram

GOLD_C = [0.05, 0.15, 0.95, 1.0]
GOLD_Y = [0, 1, 1, 1]


# --- ECE / MCE ---------------------------------------------------------------------------------

def test_ece_golden_case():
    # bin 0 [0.0, 0.1): {0.05 wrong}        acc 0, conf 0.05   gap 0.05   n 1
    # bin 1 [0.1, 0.2): {0.15 right}        acc 1, conf 0.15   gap 0.85   n 1
    # bin 9 [0.9, 1.0]: {0.95, 1.0 right}   acc 1, conf 0.975  gap 0.025  n 2  (1.0 in last bin)
    # ECE = (1*0.05 + 1*0.85 + 2*0.025) / 4 = 0.95 / 4 = 0.2375
    assert ece(GOLD_C, GOLD_Y) == pytest.approx(0.2375, abs=1e-12)
    # MCE = max(0.05, 0.85, 0.025)
    assert mce(GOLD_C, GOLD_Y) == pytest.approx(0.85, abs=1e-12)


def test_ece_accepts_bools_and_numpy():
    assert ece(np.array(GOLD_C), np.array(GOLD_Y, dtype=bool)) == pytest.approx(0.2375)


def test_ece_exact_zero_and_one_confidences():
    # 0.0 falls in the first bin, 1.0 in the last: both perfectly calibrated here.
    assert ece([0.0, 1.0], [0, 1]) == 0.0
    # A sure "wrong" that was right, and a sure "right" that was wrong: the worst possible.
    assert ece([0.0, 1.0], [1, 0]) == 1.0
    assert ece([0.0], [1]) == 1.0


def test_ece_all_wrong_at_confidence_one_is_one():
    assert ece([1.0] * 7, [0] * 7) == 1.0
    assert mce([1.0] * 7, [False] * 7) == 1.0


def test_ece_perfectly_calibrated_is_zero():
    # 10 predictions at 0.3 with 3 right, 4 at 0.75 with 3 right, 5 at 1.0 all right.
    c = [0.3] * 10 + [0.75] * 4 + [1.0] * 5
    y = [1] * 3 + [0] * 7 + [1, 1, 1, 0] + [1] * 5
    assert ece(c, y) == pytest.approx(0.0, abs=1e-12)
    assert mce(c, y) == pytest.approx(0.0, abs=1e-12)


def test_bin_edges_are_exact_fractions_and_edges_go_up():
    assert bin_edges(10).tolist() == [k / 10 for k in range(11)]
    # Every k/10 is the lower edge of bin k; 1.0 joins 0.9 in the last bin.
    bins = reliability_bins([k / 10 for k in range(11)], [1] * 11)
    assert [b.count for b in bins] == [1] * 9 + [2]
    # The level probabilities 0.1, 0.3, 0.5, 0.7, 0.9 are lower edges of bins 1, 3, 5, 7, 9.
    bins = reliability_bins([0.1, 0.3, 0.5, 0.7, 0.9], [1, 0, 1, 0, 1])
    assert [b.index for b in bins if b.count] == [1, 3, 5, 7, 9]
    # 0.3 (right) and 0.25 (wrong) are in different bins: 0.5*|1-0.3| + 0.5*|0-0.25| = 0.475
    assert ece([0.3, 0.25], [1, 0]) == pytest.approx(0.475, abs=1e-12)


def test_ece_matches_a_direct_loop():
    rng = np.random.default_rng(7)
    c = rng.random(300)
    y = rng.random(300) < c ** 2
    for n_bins in (1, 5, 10, 15):
        total = 0.0
        for b in range(n_bins):
            lo, hi = b / n_bins, (b + 1) / n_bins
            m = (c >= lo) & ((c < hi) if b < n_bins - 1 else (c <= hi))
            if m.any():
                total += m.sum() * abs(y[m].mean() - c[m].mean())
        assert ece(c, y, n_bins) == pytest.approx(total / len(c), abs=1e-12)


# --- Cross-check against netcal -----------------------------------------------------------------

def test_ece_matches_netcal_inside_the_bins():
    from netcal.metrics import ECE

    for seed in range(5):
        rng = np.random.default_rng(seed)
        n = 400 + 50 * seed
        c = rng.uniform(0.001, 0.999, n)  # strictly inside (0, 1), never on an edge
        y = (rng.random(n) < c ** 1.5).astype(int)  # over-confident on purpose
        for bins in (10, 15):
            ours = ece(c, y, n_bins=bins)
            theirs = float(ECE(bins=bins).measure(c, y))
            assert ours > 0.01
            assert ours == pytest.approx(theirs, abs=1e-12), (seed, bins)


def test_netcal_agrees_on_zero_and_one():
    # netcal clips to [eps, 1 - eps]: 0.0 and 1.0 land in the first and last bin, as here.
    from netcal.metrics import ECE

    c = np.array([0.0, 0.0, 1.0, 1.0, 0.55])
    y = np.array([0, 1, 1, 0, 1])
    assert ece(c, y) == pytest.approx(float(ECE(bins=10).measure(c, y)), abs=1e-12)


def test_netcal_convention_difference_on_edges():
    # Documented difference: netcal's edges come from np.linspace (0.30000000000000004), so it
    # puts the float 0.3 in bin [0.2, 0.3) with 0.25: one bin, acc 0.5, conf 0.275 -> 0.225.
    # Here 0.3 is the lower edge of bin 3: 0.475 (see test_bin_edges_are_exact_fractions...).
    from netcal.metrics import ECE

    c, y = np.array([0.3, 0.25]), np.array([1, 0])
    assert float(ECE(bins=10).measure(c, y)) == pytest.approx(0.225, abs=1e-12)
    assert ece(c, y) == pytest.approx(0.475, abs=1e-12)


# --- Adaptive ECE --------------------------------------------------------------------------------

def test_adaptive_ece_hand_case_uneven_groups():
    # 7 predictions, 3 equal-mass groups of sizes 3, 2, 2 after sorting by confidence:
    #   {0.1 w, 0.2 w, 0.3 r}: acc 1/3, conf 0.2   gap 2/15   n 3
    #   {0.4 w, 0.5 r}:        acc 1/2, conf 0.45  gap 0.05   n 2
    #   {0.6 r, 0.7 r}:        acc 1,   conf 0.65  gap 0.35   n 2
    # aECE = (3 * 2/15 + 2 * 0.05 + 2 * 0.35) / 7 = (0.4 + 0.1 + 0.7) / 7 = 1.2 / 7
    c = [0.7, 0.1, 0.5, 0.3, 0.6, 0.2, 0.4]  # shuffled: the function sorts
    y = [1, 0, 1, 1, 1, 0, 0]
    assert adaptive_ece(c, y, n_bins=3) == pytest.approx(1.2 / 7, abs=1e-12)


def test_adaptive_ece_ties_do_not_depend_on_input_order():
    # Four ties at 0.5, two right: sorted wrong-first -> groups {w, w}, {r, r}: gaps 0.5, 0.5.
    for y in ([1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]):
        assert adaptive_ece([0.5] * 4, y, n_bins=2) == pytest.approx(0.5, abs=1e-12)


def test_adaptive_ece_fewer_points_than_bins():
    # Each point is its own group: mean |y - c| = (0.2 + 0.5 + 0.1) / 3
    assert adaptive_ece([0.2, 0.5, 0.9], [0, 1, 1], n_bins=10) == pytest.approx(0.8 / 3)


def test_adaptive_ece_perfect_is_zero():
    c = [0.25] * 4 + [0.75] * 4
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    assert adaptive_ece(c, y, n_bins=2) == pytest.approx(0.0, abs=1e-12)


# --- Brier, AUROC ------------------------------------------------------------------------------

def test_brier_by_hand():
    # (0.05-0)^2 + (0.15-1)^2 + (0.95-1)^2 + (1-1)^2 = 0.0025 + 0.7225 + 0.0025 + 0 = 0.7275
    assert brier(GOLD_C, GOLD_Y) == pytest.approx(0.7275 / 4, abs=1e-12)
    assert brier([1.0, 0.0], [0, 1]) == 1.0
    assert brier([1.0, 0.0], [1, 0]) == 0.0


def test_brier_decomposition_by_hand():
    # groups by distinct confidence: 0.1 {wrong} (n 1, acc 0), 0.5 {right} (n 1, acc 1),
    # 0.9 {right, right, wrong} (n 3, acc 2/3); overall accuracy 3/5
    # reliability = (1 * 0.1^2 + 1 * 0.5^2 + 3 * (0.9 - 2/3)^2) / 5 = (0.26 + 49/300) / 5 = 127/1500
    # resolution  = (1 * 0.6^2 + 1 * 0.4^2 + 3 * (2/3 - 0.6)^2) / 5 = (0.52 + 1/75) / 5 = 8/75
    # uncertainty = 0.6 * 0.4;  Brier = (0.01 + 0.01 + 0.01 + 0.81 + 0.25) / 5 = 0.218
    c, y = [0.9, 0.9, 0.1, 0.9, 0.5], [1, 1, 0, 0, 1]
    parts = brier_decomposition(c, y)
    assert isinstance(parts, BrierParts)
    assert parts.reliability == pytest.approx(127 / 1500, abs=1e-12)
    assert parts.resolution == pytest.approx(8 / 75, abs=1e-12)
    assert parts.uncertainty == pytest.approx(0.24, abs=1e-12)
    assert parts.brier == pytest.approx(brier(c, y), abs=1e-12) == pytest.approx(0.218)
    # perfectly calibrated levels: no reliability term; a constant forecast: no resolution
    perfect = brier_decomposition([0.3] * 10 + [0.7] * 10, [1] * 3 + [0] * 7 + [1] * 7 + [0] * 3)
    assert perfect.reliability == pytest.approx(0.0, abs=1e-15)
    assert perfect.resolution == pytest.approx(0.04, abs=1e-12)  # both groups 0.2 from the mean 0.5
    constant = brier_decomposition([0.9] * 4, [1, 0, 0, 0])
    assert constant.resolution == 0.0
    assert constant.reliability == pytest.approx(0.65 ** 2, abs=1e-12)
    assert constant.uncertainty == pytest.approx(0.1875, abs=1e-12)
    with pytest.raises(ValueError, match="empty"):
        brier_decomposition([], [])


def test_brier_decomposition_identity_on_random_data():
    for seed in range(10):
        rng = np.random.default_rng(200 + seed)
        n = int(rng.integers(1, 500))
        levels = (rng.integers(1, 6, n) - 0.5) / 5  # the five p(L)
        continuous = rng.random(n)
        for c in (levels, continuous):
            y = (rng.random(n) < c).astype(int)
            parts = brier_decomposition(c, y)
            assert parts.reliability - parts.resolution + parts.uncertainty == pytest.approx(brier(c, y), abs=1e-12)
            assert parts.reliability >= 0 and parts.resolution >= 0 and 0 <= parts.uncertainty <= 0.25


def test_auroc_by_hand_with_ties():
    # positives {0.5, 0.8}, negatives {0.2, 0.5}: pairs (0.5>0.2)=1, (0.5=0.5)=1/2, (0.8>0.2)=1,
    # (0.8>0.5)=1 -> 3.5 / 4
    assert auroc([0.2, 0.5, 0.5, 0.8], [0, 1, 0, 1]) == pytest.approx(0.875, abs=1e-12)
    assert auroc(GOLD_C, GOLD_Y) == 1.0
    assert auroc([0.5, 0.5], [1, 0]) == 0.5
    assert auroc([0.9, 0.1], [0, 1]) == 0.0


def test_auroc_one_class_is_none():
    assert auroc([0.1, 0.9], [1, 1]) is None
    assert auroc([0.1, 0.9], [0, 0]) is None


def test_auroc_matches_sklearn_including_ties():
    from sklearn.metrics import roc_auc_score

    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        n = 200
        continuous = rng.random(n)
        levels = rng.integers(1, 6, n) * 0.2 - 0.1  # heavy ties: 0.1, 0.3, ..., 0.9
        for c in (continuous, levels):
            y = (rng.random(n) < c).astype(int)
            assert auroc(c, y) == pytest.approx(roc_auc_score(y, c), abs=1e-12), seed


# --- Input checks ----------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [ece, adaptive_ece, mce, brier, auroc, reliability_bins,
                                calibration_report, brier_decomposition])
@pytest.mark.parametrize("c, y, match", [
    ([0.5, 1.1], [1, 0], "outside"),
    ([-0.1, 0.5], [1, 0], "outside"),
    ([0.5, float("nan")], [1, 0], "NaN"),
    ([0.5, float("inf")], [1, 0], "NaN or infinite"),
    ([0.5, 0.5], [1, 0, 1], "length"),
    ([], [], "empty"),
    ([0.5, 0.5], [1, 2], "0/1"),
    ([0.5, 0.5], [1, 0.5], "0/1"),
    ([0.5, 0.5], [1, float("nan")], "0/1"),
    ([[0.5, 0.5]], [[1, 0]], "1-D"),
])
def test_invalid_input_rejected(fn, c, y, match):
    with pytest.raises(ValueError, match=match):
        fn(c, y)


@pytest.mark.parametrize("n_bins", [0, -1, 2.5, True])
def test_bad_bin_count_rejected(n_bins):
    with pytest.raises(ValueError, match="n_bins"):
        ece([0.5], [1], n_bins=n_bins)


# --- Reliability bins, level shares, report ----------------------------------------------------

def test_reliability_bins_golden():
    bins = reliability_bins(GOLD_C, GOLD_Y)
    assert len(bins) == 10
    assert [b.count for b in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins[0].lower == 0.0 and bins[0].upper == 0.1 and bins[9].upper == 1.0
    assert bins[1].accuracy == 1.0 and bins[1].mean_confidence == pytest.approx(0.15)
    assert bins[9].mean_confidence == pytest.approx(0.975) and bins[9].gap == pytest.approx(0.025)
    assert bins[4].accuracy is None and bins[4].mean_confidence is None and bins[4].gap is None
    # The ECE is the count-weighted mean gap over the bins.
    assert sum(b.count * b.gap for b in bins if b.count) / 4 == pytest.approx(ece(GOLD_C, GOLD_Y))


def test_level_shares():
    assert level_shares([1, 1, 3, 5]) == {1: 0.5, 2: 0.0, 3: 0.25, 4: 0.0, 5: 0.25}
    assert level_shares(np.array([2, 2])) == {1: 0.0, 2: 1.0, 3: 0.0, 4: 0.0, 5: 0.0}
    assert level_shares([1, 2, 3], n_levels=3) == pytest.approx({1: 1 / 3, 2: 1 / 3, 3: 1 / 3})
    for bad in ([0, 1], [1, 6], [1, 2.5], [1, float("nan")]):
        with pytest.raises(ValueError, match="1..5"):
            level_shares(bad)
    with pytest.raises(ValueError, match="empty"):
        level_shares([])


def test_calibration_report_golden():
    r = calibration_report(GOLD_C, GOLD_Y)
    assert isinstance(r, CalibrationReport)
    assert r.n == 4 and r.n_bins == 10
    assert r.accuracy == 0.75
    assert r.mean_confidence == pytest.approx(2.15 / 4)
    assert r.ece == pytest.approx(0.2375)
    assert r.mce == pytest.approx(0.85)
    assert r.brier == pytest.approx(0.7275 / 4)
    assert r.auroc == 1.0
    assert r.adaptive_ece == pytest.approx(adaptive_ece(GOLD_C, GOLD_Y))
    assert calibration_report([0.9, 0.8], [1, 1]).auroc is None
    # A frozen, JSON-serialisable record.
    assert CalibrationReport.model_validate_json(r.model_dump_json()) == r
    with pytest.raises(Exception):
        r.ece = 0.0  # type: ignore[misc]


# --- Reliability diagram -----------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_reliability_diagram_writes_a_png(tmp_path):
    rng = np.random.default_rng(3)
    c = rng.random(200)
    y = rng.random(200) < c
    path = tmp_path / "plots" / "reliability.png"  # folder does not exist yet
    out = reliability_diagram(c, y, path, title="test", n_bins=10)
    assert out == path
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    assert sorted(p.name for p in path.parent.iterdir()) == ["reliability.png"]  # no temp left

    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(img[..., :3].std()) > 0  # not a blank image

    # Overwriting an existing file works, also with empty bins and confidences of 0 and 1.
    reliability_diagram([0.0, 1.0, 1.0], [0, 1, 0], path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_reliability_diagram_rejects_bad_input_before_writing(tmp_path):
    path = tmp_path / "r.png"
    with pytest.raises(ValueError, match="empty"):
        reliability_diagram([], [], path)
    with pytest.raises(ValueError, match="outside"):
        reliability_diagram([1.5], [1], path)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_reliability_diagram_leaves_pyplot_alone(tmp_path):
    import sys

    reliability_diagram([0.2, 0.8], [0, 1], tmp_path / "r.png")
    if "matplotlib.pyplot" in sys.modules:  # imported by someone else: no figure of ours in it
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []


def test_metrics_are_floats():
    for value in (ece(GOLD_C, GOLD_Y), adaptive_ece(GOLD_C, GOLD_Y), mce(GOLD_C, GOLD_Y),
                  brier(GOLD_C, GOLD_Y), auroc(GOLD_C, GOLD_Y)):
        assert type(value) is float and math.isfinite(value)
