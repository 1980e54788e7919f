"""Normalisation, fusion and levels of the internal confidence (mmboundary.confidence.fusion)."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from mmboundary.confidence.fusion import (
    SIGNALS,
    FusionConfig,
    Levels,
    Normalizer,
    SignalRange,
    fit_levels,
    fit_normalizer,
    fuse,
    fuse_steps,
    level_probability,
    probability_level,
    score_steps,
)
from mmboundary.evaluation.calibration import level_shares
from mmboundary.records import StepConfidence, StepSignals


def step(i: int = 0, example: str = "ex", correct: bool | None = None, **signals) -> StepSignals:
    return StepSignals(example_id=example, step_index=i, text=f"step {i}.", token_start=0,
                       token_end=1, correct=correct, **signals)


def corpus_0_to_100() -> list[StepSignals]:
    """101 steps; step i has lnlp = mte = token_sar = i and clip_score = i / 100."""
    return [step(i, lnlp=float(i), mte=float(i), token_sar=float(i), clip_score=i / 100)
            for i in range(101)]


ALL = {"lnlp": 0.8, "mte": 0.6, "token_sar": 0.4, "clip_score": 0.2}


# --- Normaliser ---------------------------------------------------------------------------------

def test_normalizer_quantiles_by_hand():
    norm = fit_normalizer(corpus_0_to_100())
    # 101 values 0..100: the 1% quantile sits at position 0.01 * 100 = 1 -> 1.0; 99% -> 99.0
    assert norm.ranges["lnlp"] == SignalRange(lo=1.0, hi=99.0, count=101)
    assert norm.ranges["clip_score"].lo == pytest.approx(0.01)
    assert norm.ranges["clip_score"].hi == pytest.approx(0.99)
    # Two values 0 and 10: linear interpolation -> 0.1 and 9.9
    two = fit_normalizer([step(0, mte=0.0), step(1, mte=10.0)])
    assert two.ranges["mte"].lo == pytest.approx(0.1) and two.ranges["mte"].hi == pytest.approx(9.9)
    # Other quantiles: 10% / 90% of 0..100 -> 10, 90
    wide = fit_normalizer(corpus_0_to_100(), q_low=0.1, q_high=0.9)
    assert (wide.ranges["token_sar"].lo, wide.ranges["token_sar"].hi) == pytest.approx((10, 90))


def test_uncertainty_direction_and_clipping():
    norm = fit_normalizer(corpus_0_to_100())
    # lnlp: lo 1, hi 99 -> confidence = 1 - (v - 1) / 98
    assert norm.confidence("lnlp", 50) == pytest.approx(0.5)
    assert norm.confidence("lnlp", 25) == pytest.approx(1 - 24 / 98)
    assert norm.confidence("lnlp", 1) == 1.0
    assert norm.confidence("lnlp", 99) == 0.0
    assert norm.confidence("lnlp", 0) == 1.0  # clipped below
    assert norm.confidence("lnlp", -5) == 1.0
    assert norm.confidence("lnlp", 1e9) == 0.0  # clipped above
    # Higher perplexity -> lower confidence, strictly inside the range.
    values = [norm.confidence("lnlp", v) for v in np.linspace(1, 99, 50)]
    assert all(b < a for a, b in zip(values, values[1:]))
    for name in ("mte", "token_sar"):
        assert norm.confidence(name, 10) > norm.confidence(name, 90)


def test_clip_direction():
    norm = fit_normalizer(corpus_0_to_100())
    # clip_score: lo 0.01, hi 0.99 -> confidence = (v - 0.01) / 0.98, higher = more confident
    assert norm.confidence("clip_score", 0.5) == pytest.approx(0.5)
    assert norm.confidence("clip_score", 0.255) == pytest.approx(0.245 / 0.98)
    assert norm.confidence("clip_score", 0.99) == pytest.approx(1.0)
    assert norm.confidence("clip_score", 1.0) == 1.0
    assert norm.confidence("clip_score", 0.0) == 0.0
    assert norm.confidence("clip_score", 0.9) > norm.confidence("clip_score", 0.1)
    assert norm.minmax("clip_score", 0.5) == norm.minmax("lnlp", 50) == pytest.approx(0.5)


def test_constant_signal_maps_to_half():
    norm = fit_normalizer([step(i, mte=2.0, lnlp=float(i)) for i in range(10)])
    assert norm.ranges["mte"].lo == norm.ranges["mte"].hi == 2.0
    for v in (-100.0, 2.0, 3.0, 1e6):
        assert norm.confidence("mte", v) == 0.5


def test_absent_signal_is_absent_and_an_error():
    norm = fit_normalizer([step(i, lnlp=float(i), clip_score=0.1 * i) for i in range(5)])
    assert set(norm.ranges) == {"lnlp", "clip_score"}
    with pytest.raises(ValueError, match="token_sar.*no values"):
        norm.confidence("token_sar", 1.0)
    # None signals are skipped...
    assert set(norm.confidences(step(lnlp=2.0))) == {"lnlp"}
    # ...but a value the normaliser cannot normalise is an error naming the step.
    with pytest.raises(ValueError, match="step 7 of example 'q9'.*mte"):
        norm.confidences(step(7, example="q9", lnlp=2.0, mte=1.0))
    with pytest.raises(ValueError, match="unknown signal"):
        norm.confidence("perplexity", 1.0)


def test_confidences_of_a_step():
    norm = fit_normalizer(corpus_0_to_100())
    conf = norm.confidences(step(lnlp=50.0, mte=1.0, token_sar=99.0, clip_score=0.5))
    assert conf == pytest.approx({"lnlp": 0.5, "mte": 1.0, "token_sar": 0.0, "clip_score": 0.5})
    assert norm.confidences(step(lnlp=50.0), ["mte"]) == {}


def test_fit_normalizer_rejects_bad_corpora():
    with pytest.raises(ValueError, match="empty corpus"):
        fit_normalizer([])
    with pytest.raises(ValueError, match="no signal"):
        fit_normalizer([step(0), step(1)])
    with pytest.raises(ValueError, match="step 1 of example 'ex'.*lnlp"):
        fit_normalizer([step(0, lnlp=1.0), step(1, lnlp=float("nan"))])
    with pytest.raises(ValueError, match="q_low"):
        fit_normalizer(corpus_0_to_100(), q_low=0.5, q_high=0.5)
    norm = fit_normalizer(corpus_0_to_100())
    with pytest.raises(ValueError, match="finite"):
        norm.confidence("lnlp", float("inf"))


def test_normalizer_json_round_trip(tmp_path):
    norm = fit_normalizer(corpus_0_to_100()[:50] + [step(200, lnlp=7.0)], q_low=0.05)
    path = norm.save(tmp_path / "run" / "normalizer.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["normalizer.json"]
    data = json.loads(path.read_text())
    assert data["q_low"] == 0.05 and data["ranges"]["lnlp"]["count"] == 51
    loaded = Normalizer.load(path)
    assert loaded == norm
    for v in (0.0, 3.3, 7.0, 48.5, 1000.0):
        assert loaded.confidence("lnlp", v) == norm.confidence("lnlp", v)
    (tmp_path / "bad.json").write_text('{"ranges": {"perplexity": {"lo": 0, "hi": 1, "count": 1}}}')
    with pytest.raises(ValueError, match="bad.json.*normaliser"):
        Normalizer.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="below lo"):
        SignalRange(lo=2.0, hi=1.0, count=3)


# --- Fusion -------------------------------------------------------------------------------------

def test_default_config():
    cfg = FusionConfig()
    assert cfg.weights == {s: 0.25 for s in SIGNALS}
    assert cfg.pooling == "weighted" and cfg.levels == "meanstd" and cfg.ablate == []
    assert cfg.signals_in_use == SIGNALS


def test_weighted_fusion_by_hand():
    # 0.25 * (0.8 + 0.6 + 0.4 + 0.2) = 0.5
    assert fuse(ALL) == pytest.approx(0.5)
    assert fuse(ALL, FusionConfig()) == pytest.approx(0.5)
    # weights 1, 1, 1, 2 -> 0.2, 0.2, 0.2, 0.4: 0.16 + 0.12 + 0.08 + 0.08 = 0.44
    cfg = FusionConfig(weights={"lnlp": 1, "mte": 1, "token_sar": 1, "clip_score": 2})
    assert cfg.normalized_weights() == pytest.approx(
        {"lnlp": 0.2, "mte": 0.2, "token_sar": 0.2, "clip_score": 0.4})
    assert fuse(ALL, cfg) == pytest.approx(0.44)
    assert fuse({s: 1.0 for s in SIGNALS}) == 1.0
    assert fuse({s: 0.0 for s in SIGNALS}) == 0.0


def test_ablation_renormalises():
    cfg = FusionConfig(ablate=["clip_score"])
    assert cfg.signals_in_use == ("lnlp", "mte", "token_sar")
    assert cfg.normalized_weights() == pytest.approx({"lnlp": 1 / 3, "mte": 1 / 3,
                                                      "token_sar": 1 / 3})
    # (0.8 + 0.6 + 0.4) / 3 = 0.6; the ablated signal may be present or absent
    assert fuse(ALL, cfg) == pytest.approx(0.6)
    assert fuse({k: v for k, v in ALL.items() if k != "clip_score"}, cfg) == pytest.approx(0.6)
    # Ablating two: (0.6 + 0.2) / 2
    assert fuse(ALL, FusionConfig(ablate=["lnlp", "token_sar"])) == pytest.approx(0.4)
    # A zero weight is the same as ablation.
    zero = FusionConfig(weights={"lnlp": 0.25, "mte": 0.25, "token_sar": 0.25, "clip_score": 0})
    assert zero.signals_in_use == cfg.signals_in_use
    assert fuse({k: v for k, v in ALL.items() if k != "clip_score"}, zero) == pytest.approx(0.6)
    # An ablated signal needs no weight.
    assert FusionConfig(weights={"lnlp": 1.0}, ablate=["mte", "token_sar", "clip_score"]
                        ).normalized_weights() == {"lnlp": 1.0}


def test_max_pooling_is_min_confidence():
    assert fuse(ALL, FusionConfig(pooling="max")) == pytest.approx(0.2)
    assert fuse(ALL, FusionConfig(pooling="max", ablate=["clip_score"])) == pytest.approx(0.4)
    # weights do not change max pooling
    cfg = FusionConfig(pooling="max", weights={"lnlp": 9, "mte": 1, "token_sar": 1,
                                               "clip_score": 1})
    assert fuse(ALL, cfg) == pytest.approx(0.2)
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = dict(zip(SIGNALS, rng.random(4).tolist()))
        assert fuse(c, FusionConfig(pooling="max")) == pytest.approx(min(c.values()))
        # max pooling never exceeds weighted pooling (min <= mean)
        assert fuse(c, FusionConfig(pooling="max")) <= fuse(c) + 1e-12


@pytest.mark.parametrize("kwargs, match", [
    ({"weights": {"lnlp": -0.1, "mte": 0.25, "token_sar": 0.25, "clip_score": 0.25}}, ">= 0"),
    ({"weights": {"lnlp": float("nan"), "mte": 1, "token_sar": 1, "clip_score": 1}}, "finite"),
    ({"weights": {"ppl": 1.0, "lnlp": 1, "mte": 1, "token_sar": 1, "clip_score": 1}},
     "unknown signal"),
    ({"ablate": ["ppl"]}, "unknown signal"),
    ({"ablate": list(SIGNALS)}, "every signal is ablated"),
    ({"ablate": ["mte", "mte"]}, "twice"),
    ({"weights": {"lnlp": 1.0}}, "no weight"),
    ({"weights": {"lnlp": 0, "mte": 0, "token_sar": 0, "clip_score": 0}}, "weight 0"),
    ({"pooling": "mean"}, "pooling"),
    ({"levels": "kmeans"}, "levels"),
    ({"temperature": 1.0}, "temperature"),
])
def test_config_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FusionConfig(**kwargs)


def test_fuse_rejects_missing_and_bad_confidences():
    with pytest.raises(ValueError, match="clip_score.*ablate"):
        fuse({k: v for k, v in ALL.items() if k != "clip_score"})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fuse({**ALL, "mte": 1.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fuse({**ALL, "mte": float("nan")})
    with pytest.raises(ValueError, match="unknown signal"):
        fuse({**ALL, "ppl": 0.5})


# --- Levels -------------------------------------------------------------------------------------

def test_meanstd_thresholds_by_hand():
    # [0.3, 0.7]: mu 0.5, population std 0.2 -> 0.2, 0.4, 0.6, 0.8
    lv = fit_levels([0.3, 0.7])
    assert lv.kind == "meanstd" and lv.count == 2
    assert lv.mean == pytest.approx(0.5) and lv.std == pytest.approx(0.2)
    assert lv.thresholds == pytest.approx((0.2, 0.4, 0.6, 0.8))
    # [0.2, 0.4, 0.4, 0.4, 0.6]: mu 0.4, var (0.04 + 0.04) / 5 = 0.016
    s = math.sqrt(0.016)
    lv = fit_levels(np.array([0.2, 0.4, 0.4, 0.4, 0.6]))
    assert lv.thresholds == pytest.approx((0.4 - 1.5 * s, 0.4 - 0.5 * s, 0.4 + 0.5 * s,
                                           0.4 + 1.5 * s))
    assert lv.level(0.4) == 3


def test_level_boundaries_go_up():
    lv = Levels(kind="meanstd", thresholds=(0.2, 0.4, 0.6, 0.8), mean=0.5, std=0.2, count=2)
    cases = {0.0: 1, 0.1999: 1, 0.2: 2, 0.3999: 2, 0.4: 3, 0.5: 3, 0.6: 4, 0.7999: 4, 0.8: 5,
             1.0: 5}
    assert {c: lv.level(c) for c in cases} == cases
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lv.level(1.2)
    with pytest.raises(ValueError, match="non-decreasing"):
        Levels(kind="quantile", thresholds=(0.2, 0.6, 0.4, 0.8), mean=0.5, std=0.2, count=2)


def test_meanstd_shares_on_normal_data():
    rng = np.random.default_rng(1)
    v = np.clip(rng.normal(0.5, 0.08, 20000), 0, 1)
    lv = fit_levels(v)
    shares = level_shares([lv.level(x) for x in v])
    phi = NormalDist().cdf
    expected = [phi(-1.5), phi(-0.5) - phi(-1.5), phi(0.5) - phi(-0.5), phi(1.5) - phi(0.5),
                1 - phi(1.5)]  # 6.7, 24.2, 38.3, 24.2, 6.7 %
    assert [shares[k] for k in range(1, 6)] == pytest.approx(expected, abs=0.012)


def test_quantile_levels_equal_shares_on_uniform():
    v = np.random.default_rng(2).random(5000)
    lv = fit_levels(v, kind="quantile")
    assert lv.kind == "quantile"
    assert lv.thresholds == pytest.approx((0.2, 0.4, 0.6, 0.8), abs=0.03)
    shares = level_shares([lv.level(x) for x in v])
    assert all(shares[k] == pytest.approx(0.2, abs=0.001) for k in range(1, 6)), shares
    # On the same uniform data the meanstd levels are not equal-mass: about 6.7% at each end.
    ms = fit_levels(v)
    ms_shares = level_shares([ms.level(x) for x in v])
    assert ms_shares[1] == pytest.approx(0.067, abs=0.015) and ms_shares[3] > 0.25


def test_fit_levels_rejects():
    with pytest.raises(ValueError, match="constant"):
        fit_levels([0.4, 0.4, 0.4])
    with pytest.raises(ValueError, match="at least 2"):
        fit_levels([0.4])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_levels([0.4, 1.4])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_levels([0.4, float("nan")])
    with pytest.raises(ValueError, match="kind"):
        fit_levels([0.1, 0.2], kind="kmeans")  # type: ignore[arg-type]


def test_levels_json_round_trip(tmp_path):
    lv = fit_levels(np.random.default_rng(3).random(100), kind="quantile")
    path = lv.save(tmp_path / "levels.json")
    loaded = Levels.load(path)
    assert loaded == lv
    assert [loaded.level(x) for x in np.linspace(0, 1, 41)] == [lv.level(x) for x in
                                                                np.linspace(0, 1, 41)]
    (tmp_path / "bad.json").write_text('{"kind": "meanstd", "thresholds": [0.1, 0.2]}')
    with pytest.raises(ValueError, match="bad.json.*levels"):
        Levels.load(tmp_path / "bad.json")


def test_level_probability_map():
    assert [level_probability(k) for k in range(1, 6)] == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    for k in range(1, 6):
        assert probability_level(level_probability(k)) == k
    cases = {0.0: 1, 0.19: 1, 0.2: 2, 0.21: 2, 0.45: 3, 0.61: 4, 0.8: 5, 0.85: 5, 1.0: 5}
    assert {p: probability_level(p) for p in cases} == cases
    # nearest by brute force away from the ties
    probs = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    for p in np.random.default_rng(4).random(200):
        assert probability_level(float(p)) == int(np.argmin(np.abs(probs - p))) + 1
    for bad in (0, 6, 2.5, True):
        with pytest.raises(ValueError, match="1..5"):
            level_probability(bad)
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            probability_level(bad)


# --- Steps --------------------------------------------------------------------------------------

def test_score_steps_end_to_end():
    corpus = corpus_0_to_100()
    norm = fit_normalizer(corpus)
    cfg = FusionConfig()
    fused = fuse_steps(corpus, norm, cfg)
    # Step i: m = clip((i - 1) / 98); three uncertainties give 1 - m, clip gives m:
    # fused = 0.75 (1 - m) + 0.25 m = 0.75 - 0.5 m
    for i in (0, 1, 25, 50, 99, 100):
        m = min(max((i - 1) / 98, 0), 1)
        assert fused[i] == pytest.approx(0.75 - 0.5 * m)
    levels = fit_levels(fused, kind=cfg.levels)
    new = [step(0, "a", True, lnlp=1.0, mte=1.0, token_sar=1.0, clip_score=0.01),
           step(1, "a", False, lnlp=50.0, mte=50.0, token_sar=50.0, clip_score=0.5),
           step(0, "b", None, lnlp=500.0, mte=500.0, token_sar=500.0, clip_score=1.0)]
    out = score_steps(new, norm, levels, cfg)
    assert all(isinstance(r, StepConfidence) for r in out)
    assert [(r.example_id, r.step_index, r.correct) for r in out] == [
        ("a", 0, True), ("a", 1, False), ("b", 0, None)]
    assert [r.fused for r in out] == pytest.approx([0.75, 0.5, 0.25])
    assert [r.level for r in out] == [levels.level(f) for f in (0.75, 0.5, 0.25)]
    assert out[0].level > out[1].level > out[2].level
    assert out[1].confidences == pytest.approx({s: 0.5 for s in SIGNALS})


def test_score_steps_with_ablation_and_missing_signals():
    # Corpus without CLIP scores: fine once clip is ablated, and clip is then not recorded.
    corpus = [step(i, lnlp=float(i), mte=float(i % 7), token_sar=float(i % 5)) for i in range(50)]
    norm = fit_normalizer(corpus)
    cfg = FusionConfig(ablate=["clip_score"], levels="quantile")
    levels = fit_levels(fuse_steps(corpus, norm, cfg), kind="quantile")
    out = score_steps(corpus[:3], norm, levels, cfg)
    assert set(out[0].confidences) == {"lnlp", "mte", "token_sar"}
    # Without the ablation the missing signal is an error naming the step.
    with pytest.raises(ValueError, match="step 0 of example 'ex'.*clip_score"):
        fuse_steps(corpus, norm, FusionConfig())
    # A step lacking a signal in use is an error too.
    with pytest.raises(ValueError, match="step 4 of example 'z'.*mte"):
        score_steps([step(4, "z", lnlp=1.0, token_sar=1.0)], norm, levels, cfg)
    # Levels of another kind than the config's are refused.
    with pytest.raises(ValueError, match="quantile.*meanstd"):
        score_steps(corpus[:3], norm, levels, FusionConfig(ablate=["clip_score"]))


# --- Answer steps ---------------------------------------------------------------------------------

def _text_step(i: int, example: str, text: str) -> StepSignals:
    return StepSignals(example_id=example, step_index=i, text=text, token_start=0, token_end=1)


def test_answer_step_takes_the_confidence_of_its_premises():
    from mmboundary.confidence.fusion import answer_step_confidence, chain_runs

    steps = [_text_step(0, "a", "There are 3 red circles."), _text_step(1, "a", "There is 1 blue square."),
             _text_step(2, "a", "So the answer is 4."),
             # a second chain of the same example (an RL sample): the index starts again
             _text_step(0, "a", "So the answer is 2."),
             _text_step(0, "b", "There are 2 circles."), _text_step(1, "b", "So the answer is 2."),
             _text_step(2, "b", "There are 5 squares.")]
    fused = [0.2, 0.6, 0.95, 0.9, 0.7, 0.99, 0.3]
    assert chain_runs(steps) == [[0, 1, 2], [3], [4, 5, 6]]
    assert answer_step_confidence(steps, fused, "own") == fused
    # premises: mean of the earlier steps of the chain; a first-step answer keeps its own value
    assert answer_step_confidence(steps, fused, "premises") == pytest.approx(
        [0.2, 0.6, 0.4, 0.9, 0.7, 0.7, 0.3])
    # weakest: min of the chain up to and including the answer step
    assert answer_step_confidence(steps, fused, "weakest") == pytest.approx(
        [0.2, 0.6, 0.2, 0.9, 0.7, 0.7, 0.3])
    with pytest.raises(ValueError, match="3 steps but 2 fused"):
        answer_step_confidence(steps[:3], fused[:2])


def test_score_steps_levels_use_the_answer_step_rule():
    corpus = corpus_0_to_100()
    norm = fit_normalizer(corpus)
    levels = fit_levels(fuse_steps(corpus, norm), kind="meanstd")
    chain = [StepSignals(example_id="q", step_index=0, text="There are 9 circles.", token_start=0, token_end=1,
                         lnlp=100.0, mte=100.0, token_sar=100.0, clip_score=0.0, correct=False),
             StepSignals(example_id="q", step_index=1, text="So the answer is 9.", token_start=0, token_end=1,
                         lnlp=0.0, mte=0.0, token_sar=0.0, clip_score=1.0, correct=False)]
    own = score_steps(chain, norm, levels, FusionConfig(answer_step="own"))
    prem = score_steps(chain, norm, levels, FusionConfig(answer_step="premises"))
    # step 0: every signal at its least confident end -> fused 0; step 1 at its most -> 1
    assert [r.fused for r in own] == pytest.approx([0.0, 1.0])
    assert [r.fused for r in prem] == pytest.approx([0.0, 0.0])
    assert prem[1].level == 1 and own[1].level == 5
    assert prem[1].confidences == own[1].confidences  # per-signal values are the step's own


# --- calibrated levels ------------------------------------------------------------------------------

def test_isotonic_fit_by_hand():
    from mmboundary.confidence.fusion import isotonic_fit

    xs, fit = isotonic_fit([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1, 0, 1, 1, 0, 1])
    # blocks: [1,0] -> 0.5; [1] 1.0; [1] 1.0; [0] -> pools with [1] -> 0.5, which is < the 1.0 before
    # it, so pools again: [1,1,0] -> 2/3; [1] 1.0. Result: .5 .5 2/3 2/3 2/3 1
    assert xs.tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert np.allclose(fit, [0.5, 0.5, 2 / 3, 2 / 3, 2 / 3, 1.0])
    assert np.all(np.diff(fit) >= 0)
    # equal x are pooled before fitting
    xs, fit = isotonic_fit([0.5, 0.5, 0.9], [0, 1, 1])
    assert xs.tolist() == [0.5, 0.9] and np.allclose(fit, [0.5, 1.0])


def test_calibrated_levels_cut_where_the_fit_crosses_the_level_boundaries():
    from mmboundary.confidence.fusion import fit_levels

    # fitted chance of being right: .1 at x<.3, .5 at .3<=x<.7, .85 at x>=.7 (10 steps each)
    x = [0.1] * 10 + [0.5] * 10 + [0.8] * 10
    y = [1] + [0] * 9 + [1] * 5 + [0] * 5 + [1] * 8 + [0] * 2  # .1, .5, .8
    lv = fit_levels(x, kind="calibrated", correct=y)
    assert lv.kind == "calibrated"
    # 0.2 and 0.4 are first reached at x = .5, 0.6 and 0.8 at x = .8
    assert lv.thresholds == (0.5, 0.5, 0.8, 0.8)
    assert [lv.level(c) for c in (0.1, 0.5, 0.8)] == [1, 3, 5]
    # a boundary the fit never reaches leaves its upper levels empty
    lv = fit_levels([0.1, 0.9], kind="calibrated", correct=[0, 0])  # fit 0 everywhere
    assert all(t > 1.0 for t in lv.thresholds) and lv.level(1.0) == 1
    with pytest.raises(ValueError, match="correctness"):
        fit_levels([0.1, 0.9], kind="calibrated")
