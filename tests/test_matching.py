"""One-to-one step matching and F1 (method.md section 6): hand-computed matrices, then MiniLM on
hand-made chains."""

from __future__ import annotations

import numpy as np
import pytest

from _helpers import TableSimilarity
from mmboundary.evaluation.matching import (
    DEFAULT_MATCH_THRESHOLD,
    Pair,
    StepMatch,
    match_chains,
    match_matrix,
    match_steps,
    mean_f1,
    step_match,
)

# --- Hand-computed matrices ------------------------------------------------------------------


def test_greedy_order_highest_first():
    sim = [[0.6, 0.9, 0.1],
           [0.8, 0.7, 0.2],
           [0.5, 0.95, 0.75]]
    # 0.95 (2,1) first; 0.9 (0,1) blocked (ref 1 used); 0.8 (1,0); 0.75 (2,2) blocked (pred 2
    # used); 0.7, 0.6 blocked; nothing left for pred 0 above 0.5 except (0,0)=0.6, ref 0 used.
    assert match_matrix(sim, 0.5) == [Pair(2, 1, 0.95), Pair(1, 0, 0.8)]
    m = step_match(sim, 0.5)
    assert m.matched == (False, True, True)
    assert m.reference_of == (None, 0, 1)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)


def test_greedy_is_not_the_optimal_assignment():
    sim = [[0.9, 0.8],
           [0.85, 0.1]]
    assert match_matrix(sim, 0.5) == [Pair(0, 0, 0.9)]  # Hungarian would keep (0,1),(1,0)


def test_threshold_is_inclusive():
    sim = [[0.7, 0.2],
           [0.1, 0.69999]]
    assert match_matrix(sim, 0.7) == [Pair(0, 0, 0.7)]
    assert match_matrix(sim, 0.70001) == []
    assert [p[:2] for p in match_matrix(sim, 0.6)] == [(0, 0), (1, 1)]
    assert step_match(sim, 0.70001).f1 == 0.0


def test_default_threshold_used_when_none():
    sim = [[DEFAULT_MATCH_THRESHOLD, 0.0], [0.0, DEFAULT_MATCH_THRESHOLD - 1e-9]]
    assert match_matrix(sim) == [Pair(0, 0, DEFAULT_MATCH_THRESHOLD)]
    assert step_match(sim, None).threshold == DEFAULT_MATCH_THRESHOLD


def test_tie_break_lower_predicted_then_lower_reference():
    # All four equal: (0,0) first (lowest predicted, then lowest reference), then (1,1).
    assert match_matrix(np.full((2, 2), 0.8), 0.5) == [Pair(0, 0, 0.8), Pair(1, 1, 0.8)]
    # Tie for reference 0 between predicted 1 and 2: predicted 1 wins.
    sim = [[0.1, 0.1],
           [0.9, 0.1],
           [0.9, 0.6]]
    assert match_matrix(sim, 0.5) == [Pair(1, 0, 0.9), Pair(2, 1, 0.6)]
    # Tie for predicted 0 between references 2 and 1: reference 1 wins, 2 goes to predicted 1.
    sim = [[0.1, 0.9, 0.9],
           [0.1, 0.1, 0.7]]
    assert match_matrix(sim, 0.5) == [Pair(0, 1, 0.9), Pair(1, 2, 0.7)]
    # The index decides a tie: with the tied rows swapped, the other step wins reference 0.
    sim = [[0.9, 0.6],
           [0.9, 0.1],
           [0.1, 0.1]]
    assert match_matrix(sim, 0.5) == [Pair(0, 0, 0.9)]


def test_more_predicted_than_reference():
    sim = [[0.9, 0.2],
           [0.3, 0.8],
           [0.85, 0.75],
           [0.1, 0.1]]
    m = step_match(sim, 0.5)
    assert list(m.pairs) == [Pair(0, 0, 0.9), Pair(1, 1, 0.8)]
    assert m.matched == (True, True, False, False)
    assert m.precision == pytest.approx(0.5) and m.recall == pytest.approx(1.0)
    assert m.f1 == pytest.approx(2 * 0.5 * 1.0 / 1.5)


def test_more_reference_than_predicted():
    sim = [[0.3, 0.9, 0.6, 0.2],
           [0.7, 0.95, 0.1, 0.4]]
    m = step_match(sim, 0.5)
    assert list(m.pairs) == [Pair(1, 1, 0.95), Pair(0, 2, 0.6)]
    assert m.matched == (True, True)
    assert m.precision == pytest.approx(1.0) and m.recall == pytest.approx(0.5)
    assert m.f1 == pytest.approx(2 / 3)


def test_empty_predicted():
    m = step_match(np.zeros((0, 3)), 0.5)
    assert m.pairs == () and m.matched == ()
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)
    assert (m.n_predicted, m.n_reference) == (0, 3)


def test_empty_reference():
    m = step_match(np.zeros((2, 0)), 0.5)
    assert m.matched == (False, False)
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)


def test_both_empty():
    m = step_match(np.zeros((0, 0)), 0.5)
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)


def test_invalid_inputs():
    with pytest.raises(ValueError):
        match_matrix([0.5, 0.6], 0.5)  # 1-D
    with pytest.raises(ValueError):
        match_matrix([[np.nan, 0.6]], 0.5)
    with pytest.raises(ValueError):
        match_matrix([[0.5]], float("nan"))
    with pytest.raises(ValueError):  # not one-to-one
        StepMatch(n_predicted=2, n_reference=2, threshold=0.5,
                  pairs=(Pair(0, 0, 0.9), Pair(1, 0, 0.8)))
    with pytest.raises(ValueError):  # out of range
        StepMatch(n_predicted=1, n_reference=1, threshold=0.5, pairs=(Pair(0, 1, 0.9),))


def test_step_match_round_trips_through_json():
    m = step_match([[0.9, 0.1], [0.2, 0.3]], 0.5)
    back = StepMatch.model_validate_json(m.model_dump_json())
    assert back == m and back.pairs[0].reference == 0 and back.f1 == m.f1


def test_mean_f1_per_example():
    a = step_match([[0.9]], 0.5)                      # F1 1
    b = step_match([[0.9, 0.1], [0.1, 0.1]], 0.5)     # P 1/2, R 1/2 -> F1 1/2
    c = step_match(np.zeros((0, 4)), 0.5)             # F1 0
    assert mean_f1([a, b, c]) == pytest.approx((1 + 0.5 + 0) / 3)
    assert mean_f1([]) is None


def test_match_steps_builds_predicted_by_reference_matrix_in_one_call():
    fake = TableSimilarity({("p0", "r1"): 0.9, ("p1", "r0"): 0.8, ("p1", "r1"): 0.95})
    m = match_steps(["p0", "p1"], ["r0", "r1"], fake, 0.5)
    assert fake.calls == 1 and len(fake.seen) == 4
    assert list(m.pairs) == [Pair(1, 1, 0.95)]  # p0's only candidate r1 taken first by p1
    with pytest.raises(TypeError):
        match_steps("p0", ["r0"], fake, 0.5)


def test_match_chains_no_call_without_pairs_and_length_check():
    fake = TableSimilarity({})
    ms = match_chains([[], ["a"]], [["r"], []], fake, 0.5)
    assert fake.calls == 0 and [m.f1 for m in ms] == [0.0, 0.0]
    with pytest.raises(ValueError):
        match_chains([["a"]], [], fake, 0.5)


# --- MiniLM on hand-made chains ---------------------------------------------------------------

REFERENCE = [
    "The image features a birthday cake with the number 30 on it.",
    "The cake has lit candles on top.",
    "A cake with a number usually shows the age being celebrated.",
    "So the answer is thirty.",
]
REORDERED = [  # paraphrases of REFERENCE[1], [0], [3], [2]
    "There are candles burning on the cake.",
    "There is a birthday cake showing the number 30.",
    "So, the answer is 30.",
    "The number on a birthday cake normally indicates the age of the person.",
]
ONE_WRONG = [
    "There is a birthday cake showing the number 30.",
    "A dog is sleeping under the table.",
    "So, the answer is 30.",
]
REFERENCE_2 = ["There are three red circles.", "The square is blue.", "So the answer is 3."]
EXTRA_WRONG = [
    "I can see 3 red circles.",
    "The triangle is in the top left corner.",
    "The colour of the square is blue.",
    "So the answer is three.",
]


class _Counting:
    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def pairwise(self, pairs):
        self.calls += 1
        return self.inner.pairwise(pairs)


@pytest.fixture(scope="module")
def minilm():
    from mmboundary.confidence.similarity import SentenceSimilarity

    return SentenceSimilarity(device="cpu")


def test_minilm_default_threshold_separates_the_brief_pairs(minilm):
    g = minilm.pairwise([("There are three red circles.", "The image has 3 red circles."),
                         ("There are three red circles.", "There are two blue squares.")])
    assert g[0] >= DEFAULT_MATCH_THRESHOLD > g[1]


def test_minilm_reordered_chain_all_matched(minilm):
    m = match_steps(REORDERED, REFERENCE, minilm)
    assert m.reference_of == (1, 0, 3, 2)
    assert all(m.matched) and m.f1 == pytest.approx(1.0)


def test_minilm_one_wrong_step_unmatched(minilm):
    m = match_steps(ONE_WRONG, REFERENCE, minilm)
    assert m.matched == (True, False, True)
    assert m.reference_of == (0, None, 3)
    # P = 2/3, R = 2/4 -> F1 = 2 * (2/3)(1/2) / (2/3 + 1/2) = 4/7
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(0.5)
    assert m.f1 == pytest.approx(4 / 7)


def test_minilm_extra_wrong_step(minilm):
    m = match_steps(EXTRA_WRONG, REFERENCE_2, minilm)
    assert m.reference_of == (0, None, 1, 2)
    assert m.f1 == pytest.approx(2 * 0.75 * 1.0 / 1.75)  # P 3/4, R 1 -> 6/7


def test_minilm_empty_chain(minilm):
    m = match_steps([], REFERENCE, minilm)
    assert m.f1 == 0.0 and m.matched == ()


def test_minilm_batched_equals_per_example(minilm):
    preds = [REORDERED, ONE_WRONG, [], EXTRA_WRONG]
    refs = [REFERENCE, REFERENCE, REFERENCE, REFERENCE_2]
    counting = _Counting(minilm)
    batched = match_chains(preds, refs, counting)
    assert counting.calls == 1
    single = [match_steps(p, r, minilm) for p, r in zip(preds, refs)]
    assert len(batched) == len(single) == 4
    for b, s in zip(batched, single):
        assert (b.n_predicted, b.n_reference, b.threshold) == (s.n_predicted, s.n_reference, s.threshold)
        assert [p[:2] for p in b.pairs] == [p[:2] for p in s.pairs]
        assert [p.similarity for p in b.pairs] == pytest.approx([p.similarity for p in s.pairs], abs=1e-6)
    assert mean_f1(batched) == pytest.approx((1 + 4 / 7 + 0 + 6 / 7) / 4)
