"""Step judges (evaluation/judges.py): exact, encoder, consistent; their agreement with exact truth."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, precision_score, recall_score

from _helpers import TableSimilarity
from mmboundary.data.benchmark import BenchmarkSpec, check_step, generate_examples
from mmboundary.evaluation.judges import (
    JUDGES,
    ConsistentJudge,
    EncoderJudge,
    ExactJudge,
    StepVerdict,
    agreement,
    get_judge_class,
    register_judge,
)
from mmboundary.records import Example, ReferenceStep, StepKind


def _example(id: str, *chain: str) -> Example:
    return Example(id=id, image=Path("/none.png"), question="How many?", answers=("2",),
                   chain=tuple(ReferenceStep(text=t, kind=StepKind.perception) for t in chain))


# The ordering case: a step closer to a contradicting reference step than to the agreeing one.
S0, S1 = "There are 2 red circles.", "So the answer is 2."
R0, R1, R2 = "There are 3 red circles", "The image has 2 red circles", "So the answer is 3"
TABLE = {(S0, R0): 0.9, (S0, R1): 0.7, (S0, R2): 0.2, (S1, R2): 0.93, (S1, R0): 0.1, (S1, R1): 0.1}
EX = _example("ex-order", R0, R1, R2)


def test_encoder_judge_matches_by_similarity_only():
    [verdicts] = EncoderJudge(TableSimilarity(TABLE), 0.65).judge([[S0, S1]], [EX])
    assert verdicts == (StepVerdict(correct=True, degree=0.9, reference=0, similarity=0.9),
                        StepVerdict(correct=True, degree=0.93, reference=2, similarity=0.93))


def test_consistent_judge_takes_consistent_pairs_first():
    [verdicts] = ConsistentJudge(TableSimilarity(TABLE), 0.65).judge([[S0, S1]], [EX])
    # S0 -> R1 (consistent, 0.7) although R0 scores 0.9; S1 -> R2 (its only candidate), numbers 2 vs 3: wrong
    assert verdicts == (StepVerdict(correct=True, degree=0.7, reference=1, similarity=0.7),
                        StepVerdict(correct=False, degree=0.0, reference=2, similarity=0.93))


def test_consistent_judge_one_to_one_and_threshold():
    table = {("a 2 b", "r 2"): 0.7, ("a 3 b", "r 2"): 0.9, ("a 2 c", "r 2"): 0.65, ("a 4", "r 2"): 0.64}
    [v] = ConsistentJudge(TableSimilarity(table), 0.65).judge([["a 3 b", "a 2 b", "a 2 c", "a 4"]],
                                                              [_example("e", "r 2")])
    # "a 2 b" takes the only reference (consistent, 0.7); "a 3 b" (inconsistent, 0.9) and the tied-below
    # "a 2 c" find it taken; "a 4" is under the threshold
    assert [x.correct for x in v] == [False, True, False, False]
    assert [x.reference for x in v] == [None, 0, None, None] and v[1].degree == pytest.approx(0.7)
    # inclusive threshold, lower predicted index first among equal consistent pairs
    sim = TableSimilarity({("x", "r"): 0.65, ("y", "r"): 0.65})
    [w] = ConsistentJudge(sim, 0.65).judge([["x", "y"]], [_example("e", "r")])
    assert [x.reference for x in w] == [0, None]


def test_degree_is_clamped_similarity_or_zero():
    fake = TableSimilarity({("a", "r"): 1.2, ("b", "s"): 0.8})
    [v] = EncoderJudge(fake, 0.5).judge([["a", "b", "c"]], [_example("e", "r", "s")])
    assert [x.degree for x in v] == [1.0, 0.8, 0.0]
    assert v[0].similarity == 1.2 and v[2] == StepVerdict(correct=False, degree=0.0)
    [w] = ConsistentJudge(fake, 0.5).judge([["a", "b", "c"]], [_example("e", "r", "s")])
    assert [x.degree for x in w] == [1.0, 0.8, 0.0]


def test_final_period_of_reference_does_not_matter():
    with_period = TableSimilarity({(S0, R0 + "."): 0.9, (S0, R1 + "."): 0.7})
    [a] = ConsistentJudge(TableSimilarity(TABLE), 0.65).judge([[S0]], [_example("e", R0, R1)])
    [b] = ConsistentJudge(with_period, 0.65).judge([[S0]], [_example("e", R0 + ".", R1 + ".")])
    assert a == b == (StepVerdict(correct=True, degree=0.7, reference=1, similarity=0.7),)


@pytest.mark.parametrize("judge", [EncoderJudge, ConsistentJudge])
def test_one_pairwise_call_and_empty_cases(judge):
    fake = TableSimilarity({("a", "r"): 0.9, ("c", "r"): 0.8})
    examples = [_example("one", "r", "s"), _example("no-chain"), _example("no-steps", "r"), _example("two", "r")]
    out = judge(fake, 0.5).judge([["a", "b"], ["x", "y"], [], ["c"]], examples)
    assert fake.calls == 1 and len(fake.seen) == 2 * 2 + 0 + 0 + 1
    assert out[1] == (None, None) and out[2] == ()
    assert [v.correct for v in out[0]] == [True, False] and out[3][0].correct
    empty = TableSimilarity({})
    assert judge(empty, 0.5).judge([["x"], []], [_example("no-chain"), _example("e", "r")]) == [(None,), ()]
    assert empty.calls == 0


@pytest.mark.parametrize("judge", [EncoderJudge(TableSimilarity(), 0.5), ConsistentJudge(TableSimilarity(), 0.5),
                                   ExactJudge()])
def test_errors_name_the_example(judge):
    a, b = _example("ex-a", "r"), _example("ex-b", "r")
    with pytest.raises(ValueError, match="ex-b"):
        judge.judge([["x"]], [a, b])
    with pytest.raises(ValueError, match="ex-a"):
        judge.judge([["x"], ["y"]], [a])
    with pytest.raises(TypeError, match="ex-b"):
        judge.judge([["x"], "y"], [a, b])
    with pytest.raises(TypeError, match="ex-a"):
        judge.judge([[3]], [a])


def test_exact_judge_needs_a_scene():
    with pytest.raises(ValueError, match="ex-a"):
        ExactJudge().judge([["There are 2 red objects."]], [_example("ex-a", "r")])
    with pytest.raises(ValueError, match="finite"):
        EncoderJudge(TableSimilarity({}), float("nan"))


def test_registry():
    assert JUDGES == {"exact": ExactJudge, "encoder": EncoderJudge, "consistent": ConsistentJudge}
    assert get_judge_class("consistent") is ConsistentJudge
    assert (ExactJudge.name, EncoderJudge.name, ConsistentJudge.name) == ("exact", "encoder", "consistent")
    assert ConsistentJudge(TableSimilarity({}), 0.5).name == "consistent"
    with pytest.raises(ValueError, match="unknown step judge 'nli'; registered: consistent, encoder, exact"):
        get_judge_class("nli")
    with pytest.raises(ValueError, match="already registered"):
        register_judge("exact")(type("Other", (), {}))


# --- On the built-in benchmark: exact truth, and the text judges against it -------------------

def _edit(text: str) -> str | None:
    """A false version of a reference step (a changed number, side, relation or answer), or None."""
    if m := re.fullmatch(r"There (?:is|are) (\d+|no) (.*)\.", text):
        n = 0 if m.group(1) == "no" else int(m.group(1))
        return f"There are {n + 2} {m.group(2)}."
    if " left of " in text:
        return text.replace(" left of ", " right of ")
    if " above " in text:
        return text.replace(" above ", " below ")
    if m := re.fullmatch(r"(.*) is (\d+)\.", text):
        return f"{m.group(1)} is {int(m.group(2)) + 1}."
    if text == "So the answer is yes.":
        return "So the answer is no."
    return None


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[list[Example], list[list[str]]]:
    """40 benchmark examples, and as their "generated" chains the reference chains with every
    even-indexed step that `_edit` can falsify falsified."""
    spec = BenchmarkSpec.version("v1", seed=1, n_train=40, n_test=0, n_ood=0, list_objects=False)
    examples = generate_examples(spec, "train", tmp_path_factory.mktemp("bench"))
    steps = [[e if (e := _edit(r.text)) and k % 2 == 0 else r.text for k, r in enumerate(ex.chain)]
             for ex in examples]
    return examples, steps


def test_exact_judge_on_benchmark(bench):
    examples, steps = bench
    verdicts = ExactJudge().judge(steps, examples)
    flat = [v for vs in verdicts for v in vs]
    assert all(v.reference is None and v.similarity is None and v.degree == float(v.correct) for v in flat)
    assert [[v.correct for v in vs] for vs in verdicts] == [[check_step(t, e) for t in s]
                                                           for s, e in zip(steps, examples)]
    n_false = sum(not v.correct for v in flat)
    assert n_false == sum(t != r.text for s, e in zip(steps, examples) for t, r in zip(s, e.chain)) > 40


# --- Agreement ----------------------------------------------------------------------------------

def test_agreement_by_hand():
    a = agreement([True, True, False, False, True], [True, False, False, True, True])
    # equal 3/5; precision 2/3; recall 2/3; p_e = (3*3 + 2*2)/25 = 13/25; kappa = (15 - 13) / (25 - 13)
    assert (a.n, a.agreement, a.precision, a.recall) == (5, 3 / 5, 2 / 3, 2 / 3)
    assert a.kappa == pytest.approx(2 / 12)
    empty = agreement([], [])
    assert (empty.n, empty.agreement, empty.precision, empty.recall, empty.kappa) == (0, None, None, None, None)
    const = agreement([True] * 3, [True] * 3)
    assert (const.agreement, const.precision, const.recall, const.kappa) == (1.0, 1.0, 1.0, None)
    none_judged = agreement([False, False], [True, False])
    assert none_judged.precision is None and none_judged.recall == 0.0 and none_judged.kappa == 0.0
    with pytest.raises(ValueError):
        agreement([True], [True, False])
    with pytest.raises(TypeError):
        agreement([1], [True])


def test_agreement_matches_sklearn():
    rng = np.random.default_rng(0)
    checked = 0
    for n in (2, 7, 50, 333):
        for p in (0.2, 0.5, 0.9):
            exact = rng.random(n) < p
            judged = np.where(rng.random(n) < 0.7, exact, rng.random(n) < p)
            if not judged.any() or not exact.any() or (judged.all() and exact.all()):
                continue  # precision, recall or kappa undefined (tested by hand above)
            checked += 1
            a = agreement(list(judged), list(exact))
            assert a.agreement == pytest.approx(float(np.mean(judged == exact)))
            assert a.precision == pytest.approx(precision_score(exact, judged))
            assert a.recall == pytest.approx(recall_score(exact, judged))
            assert a.kappa == pytest.approx(cohen_kappa_score(judged, exact))
    assert checked >= 9


# --- With the real MiniLM (offline package) -----------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    from mmboundary.confidence.similarity import SentenceSimilarity

    return SentenceSimilarity(device="cpu")


def test_minilm_consistent_separates_a_changed_number(minilm):
    chain = ("There are 3 red circles", "So the answer is 3")  # as the authors' files: no final period
    examples = [_example("wrong", *chain), _example("right", *chain)]
    steps = [["There are 2 red circles."], ["There are three red circles."]]
    enc = EncoderJudge(minilm, 0.65).judge(steps, examples)
    con = ConsistentJudge(minilm, 0.65).judge(steps, examples)
    assert enc[0][0].correct and enc[0][0].similarity > 0.85  # the encoder's known limitation
    assert con[0][0].reference == 0 and not con[0][0].correct and con[0][0].degree == 0.0
    assert enc[1][0].correct and con[1][0].correct and con[1][0].degree > 0.95


def test_minilm_judges_against_exact_truth_on_benchmark(minilm, bench):
    examples, steps = bench
    exact = [v.correct for vs in ExactJudge().judge(steps, examples) for v in vs]
    enc = agreement([v.correct for vs in EncoderJudge(minilm, 0.65).judge(steps, examples) for v in vs], exact)
    con = agreement([v.correct for vs in ConsistentJudge(minilm, 0.65).judge(steps, examples) for v in vs], exact)
    # measured: encoder kappa 0.19 (every falsified step is matched), consistent 0.97 while numbers were
    # sets (its two misses: "2 minus 1 is 2." vs "2 minus 1 is 1."); numbers are multisets now
    assert enc.recall == con.recall == 1.0
    assert enc.kappa < 0.3 and con.kappa > 0.9
