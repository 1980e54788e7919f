"""The measurement protocol's core (mmboundary.evaluation.bootstrap): per-question scores, the
metrics as the ConfidenceReport computes them, percentile bootstrap over questions, pooled seeds
and paired differences. Hand-computed values in the comments."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from mmboundary.evaluation import bootstrap as B
from mmboundary.evaluation.bootstrap import (
    METRICS,
    Interval,
    PairedDifference,
    QuestionScores,
    metric,
    metric_intervals,
    paired_difference,
    pooled_intervals,
    question_scores,
)
from mmboundary.evaluation.calibration import auroc, ece
from mmboundary.evaluation.expressed import confidence_report
from mmboundary.records import GeneratedChain, GeneratedStep


def q(qid, answer, steps, answer_confidence="last"):
    """A QuestionScores from (confidence, truth) steps; the answer's confidence is the last step's."""
    conf = tuple(c for c, _ in steps)
    return QuestionScores(id=qid, answer_correct=answer,
                          answer_confidence=(conf[-1] if conf else None) if answer_confidence == "last"
                          else answer_confidence,
                          step_confidence=conf, step_correct=tuple(y for _, y in steps))


# q1: answer right, steps (0.9 T, 0.9 T)     answer confidence 0.9
# q2: answer wrong, steps (0.1 F, 0.9 F)     answer confidence 0.9
# q3: answer right, steps (0.5 T, None T)    answer confidence None (last step unparsed)
# q4: answer wrong, steps (0.3 None)         answer confidence 0.3; its step has no truth
HAND = [q("q1", True, [(0.9, True), (0.9, True)]), q("q2", False, [(0.1, False), (0.9, False)]),
        q("q3", True, [(0.5, True), (None, True)]), q("q4", False, [(0.3, None)])]


def test_metrics_by_hand():
    # accuracy: 2 of 4 answers right
    assert metric("accuracy", HAND) == 0.5
    # ECE over answers with a confidence: bin 9 {0.9 right, 0.9 wrong} gap |0.5 - 0.9| = 0.4, n 2;
    # bin 3 {0.3 wrong} gap 0.3, n 1 -> (2 * 0.4 + 0.3) / 3
    assert metric("ece", HAND) == pytest.approx(1.1 / 3, abs=1e-12)
    # scored steps (confidence and truth): 0.9 T, 0.9 T, 0.1 F, 0.9 F, 0.5 T
    # MECE: bin 1 {0.1 F} 0.1; bin 5 {0.5 T} 0.5; bin 9 {0.9 T, T, F} |2/3 - 0.9|, n 3 -> 1.3 / 5
    assert metric("mece", HAND) == pytest.approx(0.26, abs=1e-12)
    # AUROC: positives {0.9, 0.9, 0.5}, negatives {0.1, 0.9}: 0.9 -> 1 + 1/2 each, 0.5 -> 1 + 0 = 4 / 6
    assert metric("auroc", HAND) == pytest.approx(4 / 6, abs=1e-12)
    # Brier: 0.01 + 0.01 + 0.01 + 0.81 + 0.25 = 1.09 over 5
    assert metric("brier", HAND) == pytest.approx(0.218, abs=1e-12)
    # groups 0.1 (n 1, acc 0), 0.5 (n 1, acc 1), 0.9 (n 3, acc 2/3); overall 0.6
    # reliability (0.01 + 0.25 + 3 (7/30)^2) / 5 = 127/1500; resolution (0.36 + 0.16 + 3 (1/15)^2) / 5 = 8/75
    assert metric("brier_reliability", HAND) == pytest.approx(127 / 1500, abs=1e-12)
    assert metric("brier_resolution", HAND) == pytest.approx(8 / 75, abs=1e-12)
    assert metric("brier_uncertainty", HAND) == pytest.approx(0.24, abs=1e-12)
    assert metric("step_accuracy", HAND) == pytest.approx(0.6, abs=1e-12)


def test_undefined_metrics_are_none():
    one_class = [q("a", True, [(0.9, True)]), q("b", True, [(0.7, True)])]
    assert metric("auroc", one_class) is None
    no_conf = [q("a", True, [(None, True)])]
    assert metric("accuracy", no_conf) == 1.0
    assert all(metric(n, no_conf) is None for n in METRICS if n != "accuracy")
    assert all(metric(n, []) is None for n in METRICS)
    iv = metric_intervals(one_class)
    assert iv["auroc"] == Interval(estimate=None, low=None, high=None, resamples=0)
    assert iv["accuracy"] == Interval(estimate=1.0, low=1.0, high=1.0, resamples=1000)
    assert all(v.estimate is None and v.low is None for v in metric_intervals([]).values())


def _chain(eid, steps, right=True):
    gs = tuple(GeneratedStep(text=f"s{i}", start=0, end=1, correct=y, kind=k) for i, (y, k) in enumerate(steps))
    return GeneratedChain(example_id=eid, text="x", steps=gs, answer="a", answer_correct=right)


def test_question_scores_follows_confidence_report():
    chain = _chain("e", [(True, "count"), (None, None), (False, "final")], right=False)
    s = question_scores(chain, [3, None, 5])
    assert s.step_confidence == (0.5, None, 0.9) and s.answer_confidence == 0.9
    assert s.step_correct == (True, None, False) and s.step_kind == ("count", None, "final")
    assert s.id == "e" and s.answer_correct is False
    assert question_scores(chain, [3, 4, None]).answer_confidence is None  # last step unparsed
    assert question_scores(_chain("z", []), []).answer_confidence is None
    with pytest.raises(ValueError, match="3 steps but 2 levels"):
        question_scores(chain, [3, 4])
    assert QuestionScores.model_validate_json(s.model_dump_json()) == s


def test_metric_equals_the_confidence_report_column():
    rng = np.random.default_rng(3)
    chains, levels = [], []
    for i in range(300):
        k = int(rng.integers(0, 5))
        lv = [int(x) if rng.random() > 0.1 else None for x in rng.integers(1, 6, k)]
        truth = [None if rng.random() < 0.1 else bool(rng.random() < (x or 3) / 6) for x in lv]
        chains.append(_chain(f"e{i}", [(t, None) for t in truth], right=bool(rng.random() < 0.5)))
        levels.append(lv)
    report = confidence_report(chains, levels)
    scores = [question_scores(c, lv) for c, lv in zip(chains, levels)]
    for name in METRICS:
        assert metric(name, scores) == pytest.approx(getattr(report, name), abs=1e-12), name


def synth(n, seed=0, shift=0.0, prefix="q"):
    """n questions of 1-6 level-confidence steps, step truth ~ Bernoulli(p(L) + shift)."""
    rng = np.random.default_rng(seed)
    matched_rng = np.random.default_rng(seed + 1000)  # its own stream: the other draws stay as they were
    out = []
    for i in range(n):
        lv = rng.integers(1, 6, int(rng.integers(1, 7)))
        c = (lv - 0.5) / 5
        y = rng.random(lv.shape[0]) < np.clip(c + shift, 0, 1)
        conf = tuple(float(x) if rng.random() > 0.05 else None for x in c)
        matched = tuple(bool(v) for v in matched_rng.random(lv.shape[0]) < 0.7)
        out.append(QuestionScores(id=f"{prefix}{i}", answer_correct=bool(y[-1]), answer_confidence=conf[-1],
                                  step_confidence=conf, step_correct=tuple(bool(v) for v in y),
                                  step_matched=matched))
    return out


def test_resampled_metrics_equal_the_metric_on_the_repeated_questions():
    """The weighted formulas (ECE per bin, AUROC over distinct values, Brier parts per group) give
    the plain metric of the resample written out question by question."""
    qs = synth(150, seed=1)
    ids = sorted(x.id for x in qs)
    by_id = {x.id: x for x in qs}
    weights = B._draw(len(ids), 4, seed=9)
    got = B._resampled(B._flatten(qs, {k: i for i, k in enumerate(ids)}), METRICS, weights)
    for r in range(weights.shape[0]):
        repeated = [by_id[k].model_copy(update={"id": f"{k}#{j}"}) for i, k in enumerate(ids)
                    for j in range(int(weights[r, i]))]
        for name in METRICS:
            assert got[name][r] == pytest.approx(metric(name, repeated), abs=1e-12), (name, r)


def test_unit_weights_match_ece_and_auroc_on_continuous_confidences():
    rng = np.random.default_rng(5)
    c = rng.random(400)
    y = rng.random(400) < c ** 2
    qs = [QuestionScores(id=f"{i}", answer_correct=bool(y[i]), answer_confidence=float(c[i]),
                         step_confidence=(float(c[i]),), step_correct=(bool(y[i]),)) for i in range(400)]
    got = B._resampled(B._flatten(qs), ("ece", "mece", "auroc"), np.ones((1, 400)))
    assert got["ece"][0] == pytest.approx(ece(c, y), abs=1e-12)
    assert got["mece"][0] == pytest.approx(ece(c, y), abs=1e-12)
    assert got["auroc"][0] == pytest.approx(auroc(c, y), abs=1e-12)


def test_percentile_interval_by_hand():
    # two questions, one right: a resample's accuracy is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4;
    # the 2.5th and 97.5th percentiles of 1000 resamples are 0 and 1
    iv = metric_intervals([q("a", True, []), q("b", False, [])], ("accuracy",))
    assert iv == {"accuracy": Interval(estimate=0.5, low=0.0, high=1.0, resamples=1000)}
    # at level 0.4 (30th..70th percentile) only 1/2 is left
    iv = metric_intervals([q("a", True, []), q("b", False, [])], ("accuracy",), level=0.4)
    assert (iv["accuracy"].low, iv["accuracy"].high) == (0.5, 0.5)


def test_intervals_contain_the_estimate_and_are_reproducible():
    qs = synth(800, seed=2, shift=-0.15)  # over-confident: ECE well away from 0
    iv = metric_intervals(qs)
    assert set(iv) == set(METRICS)
    for name, v in iv.items():
        assert v.low <= v.estimate <= v.high, name
        assert v.resamples == 1000
    assert metric_intervals(qs) == iv  # seed 0 both times
    for name, v in metric_intervals(list(reversed(qs))).items():  # resampled by id, not by position
        assert (v.low, v.high) == pytest.approx((iv[name].low, iv[name].high), abs=1e-12), name
    assert metric_intervals(qs, seed=1) != iv
    # narrower with more questions
    wide = metric_intervals(qs[:100], ("mece",))["mece"]
    assert wide.high - wide.low > iv["mece"].high - iv["mece"].low


def test_metric_intervals_are_fast():
    qs = synth(4000, seed=4)
    start = time.perf_counter()
    metric_intervals(qs)
    assert time.perf_counter() - start < 20.0  # about 0.5 s on one idle core


def test_pooled_resample_applies_the_same_ids_to_every_seed():
    qs = synth(300, seed=6)
    shuffled = [qs[i] for i in np.random.default_rng(0).permutation(len(qs))]
    # the same questions in two seeds: with one shared draw, the mean of two equal values is the
    # single-seed value on every resample (independent draws would narrow the interval)
    pooled, single = pooled_intervals([qs, shuffled]), metric_intervals(qs)
    for name in METRICS:
        got, want = pooled[name], single[name]
        assert (got.estimate, got.low, got.high) == pytest.approx((want.estimate, want.low, want.high), abs=1e-12)


def test_pooled_estimate_is_the_mean_over_seeds():
    a, b = synth(300, seed=7), synth(300, seed=8)
    pooled = pooled_intervals([a, b], ("mece", "accuracy"))
    for name in ("mece", "accuracy"):
        assert pooled[name].estimate == pytest.approx((metric(name, a) + metric(name, b)) / 2, abs=1e-12)
        assert pooled[name].low <= pooled[name].estimate <= pooled[name].high


def test_identical_rows_differ_by_nothing():
    qs = synth(300, seed=9)
    d = paired_difference([qs, qs], [qs, qs], "mece")
    assert isinstance(d, PairedDifference)
    assert (d.estimate, d.low, d.high, d.per_seed) == (0.0, 0.0, 0.0, [0.0, 0.0])
    assert d.verdict == "no measurable difference"


def shifted(questions, delta):
    """The same questions with every step confidence moved by `delta` (kept in [0.1, 0.9])."""
    return [x.model_copy(update={"step_confidence": tuple(None if c is None else float(np.clip(c + delta, 0.1, 0.9))
                                                          for c in x.step_confidence)}) for x in questions]


def test_a_clearly_better_row_is_lower():
    # row a calibrated (truth ~ p(L)), row b over-confident by 0.2, same 500 questions per seed
    a = [synth(500, seed=s) for s in range(3)]
    b = [shifted(x, 0.2) for x in a]
    d = paired_difference(a, b, "mece")
    assert d.high < 0 and all(x < 0 for x in d.per_seed)
    assert d.verdict == "lower"
    assert paired_difference(b, a, "mece").verdict == "higher"


def test_seeds_disagreeing_in_sign_are_no_measurable_difference():
    # seed 0: a calibrated, b off by 0.3 (a much lower); seed 1: a off by 0.1, b calibrated (a higher)
    s0, s1 = synth(500, seed=0), synth(500, seed=1)
    d = paired_difference([s0, shifted(s1, 0.1)], [shifted(s0, 0.3), s1], "mece")
    assert d.per_seed[0] < 0 < d.per_seed[1]
    assert d.high < 0  # the pooled interval alone would say "lower"
    assert d.verdict == "no measurable difference"


def test_paired_difference_matches_ids_and_broadcasts_one_seed():
    a = synth(200, seed=11)
    b = [x.model_copy(update={"answer_correct": not x.answer_correct}) for x in a]
    extra = synth(20, seed=12, prefix="extra")
    # ids only b has are left out
    assert paired_difference([a], [b + extra], "accuracy") == paired_difference([a], [b], "accuracy")
    # a single-seed row is compared with every seed of the other
    assert paired_difference([a], [b, b, b], "accuracy") == paired_difference([a, a, a], [b, b, b], "accuracy")
    d = paired_difference([a], [b], "accuracy")
    assert d.estimate == pytest.approx(metric("accuracy", a) - metric("accuracy", b), abs=1e-12)
    with pytest.raises(ValueError, match="2 seeds against 3"):
        paired_difference([a, a], [b, b, b], "accuracy")


def test_bad_arguments_are_errors():
    qs = synth(10)
    with pytest.raises(ValueError, match="unknown metric"):
        metric("f1", qs)
    with pytest.raises(ValueError, match="unknown metric"):
        paired_difference([qs], [qs], "precision")
    with pytest.raises(ValueError, match="appears twice"):
        metric_intervals(qs + qs[:1])
    with pytest.raises(ValueError, match="n_resamples"):
        metric_intervals(qs, n_resamples=0)
    with pytest.raises(ValueError, match="level"):
        metric_intervals(qs, level=1.0)
    with pytest.raises(ValueError, match="2 step confidences"):
        QuestionScores(id="x", answer_correct=True, answer_confidence=None, step_confidence=(0.1, 0.3),
                       step_correct=(True,))
    with pytest.raises(ValueError):
        QuestionScores(id="x", answer_correct=True, answer_confidence=1.5, step_confidence=(), step_correct=())


def test_the_core_imports_no_torch():
    code = ("import sys; import mmboundary.evaluation.bootstrap, mmboundary.evaluation.references; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
