"""The run's step judge (judging.py): built from config in one place, applied to chains."""

from __future__ import annotations

from pathlib import Path

import pytest

from _helpers import TableSimilarity
from mmboundary.config import JudgeConfig, load_config
from mmboundary.data.benchmark import BenchmarkSpec, check_step, generate_examples
from mmboundary.errors import ConfigError
from mmboundary.evaluation.bootstrap import metric, question_scores
from mmboundary.evaluation.consistency import arithmetic_truth
from mmboundary.evaluation.expressed import confidence_report
from mmboundary.evaluation.judges import ConsistentJudge, EncoderJudge, ExactJudge
from mmboundary.generation import chain_record
from mmboundary.judging import DEFAULT_THRESHOLDS, AutoJudge, judge_chains, make_step_judge


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    spec = BenchmarkSpec.version("v1", n_train=6, n_test=0, n_ood=0)
    return generate_examples(spec, "train", tmp_path_factory.mktemp("img"))


def test_make_step_judge_kinds():
    sim = TableSimilarity({})
    assert isinstance(make_step_judge(JudgeConfig(kind="exact")), ExactJudge)
    enc = make_step_judge(JudgeConfig(kind="encoder"), sim)
    con = make_step_judge(JudgeConfig(kind="consistent", threshold=0.5), sim)
    assert isinstance(enc, EncoderJudge) and enc.threshold == DEFAULT_THRESHOLDS["encoder"] == 0.95
    assert isinstance(con, ConsistentJudge) and con.threshold == 0.5
    assert isinstance(make_step_judge(JudgeConfig()), AutoJudge)


def test_another_sentence_model_needs_its_own_threshold():
    with pytest.raises(ConfigError, match="judge.threshold must be set"):
        load_config(None, ["judge.model=cross-encoder/stsb-roberta-large"])
    with pytest.raises(ConfigError, match="judge.threshold must be set"):
        load_config(None, ["judge.similarity=cross-encoder"])
    with pytest.raises(ConfigError, match="evaluate.match_threshold must be set"):
        load_config(None, ["evaluate.match_kind=cross-encoder"])
    cfg = load_config(None, ["judge.model=some/model", "judge.threshold=0.7"])
    assert cfg.judge.threshold == 0.7


def test_auto_judge_is_exact_with_a_scene_and_the_text_judge_without(examples):
    """Benchmark examples (a scene) get the checker; the same examples without their scene (the
    annotated format) get the text judge, built only when first needed."""
    built = []
    sim = TableSimilarity({})

    def text():
        built.append(1)
        return ConsistentJudge(sim, 0.5)

    judge = AutoJudge(text)
    ex = examples[0]
    wrong = "There are 9 red objects."
    steps = [[s.text for s in ex.chain] + [wrong]]
    [exact] = judge.judge(steps, [ex])
    assert not built and sim.calls == 0  # the built-in benchmark never loads a sentence model
    assert [v.correct for v in exact] == [check_step(t, ex) for t in steps[0]] and not exact[-1].correct
    bare = ex.model_copy(update={"scene": None})
    # every generated step is the reference step itself (similarity 1), the planted one matches nothing
    sim.table = {(s.text, r.text): (1.0 if s is r else 0.2) for s in ex.chain for r in ex.chain}
    [judged] = judge.judge(steps, [bare])
    assert built == [1] and sim.calls == 1
    assert [v.correct for v in judged] == [True] * len(ex.chain) + [False]
    # matched to its own reference step, except arithmetic (decided by arithmetic) and the planted step
    assert [v.reference for v in judged] == [None if arithmetic_truth(s.text) is not None else i
                                             for i, s in enumerate(ex.chain)] + [None]


def test_judge_chains_writes_truth_reference_and_degree(examples):
    ex = examples[1].model_copy(update={"scene": None})
    text = " ".join(s.text for s in ex.chain)
    chain = chain_record(ex, text)
    assert all(s.correct is None for s in chain.steps)  # no scene: nothing knows
    degrees = [0.95 - 0.01 * i for i in range(len(ex.chain))]
    sim = TableSimilarity({(g.text, r.text): (d if g.text == r.text else 0.1)
                  for g, d in zip(chain.steps, degrees) for r in ex.chain})
    [judged] = judge_chains([chain], [ex], ConsistentJudge(sim, 0.9))
    assert [s.correct for s in judged.steps] == [True] * len(ex.chain)
    closed = [arithmetic_truth(s.text) is not None for s in ex.chain]  # decided by arithmetic: no match
    assert [s.reference for s in judged.steps] == [None if c else i for i, c in enumerate(closed)]
    assert [s.match_degree for s in judged.steps] == [None if c else pytest.approx(d) for c, d in zip(closed, degrees)]
    assert judge_chains([chain], [ex], None) == [chain]
    # a chain for an example that is not given is an error naming it
    with pytest.raises(ValueError, match="no example for chain"):
        judge_chains([chain], [], ConsistentJudge(sim, 0.9))


def test_both_mece_definitions_by_hand(examples):
    """`mece` over every step with a truth (unmatched = wrong), `mece_matched` over matched steps
    only; the bootstrap's metric equals the report's."""
    ex = examples[2].model_copy(update={"scene": None})
    refs = [s.text for s in ex.chain]
    text = refs[0] + " There are 9 purple squares."
    chain = chain_record(ex, text)
    sim = TableSimilarity({(chain.steps[0].text, refs[0]): 0.95})
    [judged] = judge_chains([chain], [ex], ConsistentJudge(sim, 0.9))
    assert [s.correct for s in judged.steps] == [True, False]
    assert [s.reference for s in judged.steps] == [0, None]
    levels = [[5, 5]]  # p = 0.9 for both
    report = confidence_report([judged], levels)
    # all steps: one bin at 0.9 holding (1, 0): |0.5 - 0.9| = 0.4; matched only: |1 - 0.9| = 0.1
    assert report.mece == pytest.approx(0.4) and report.mece_matched == pytest.approx(0.1)
    assert report.steps_matched == 1
    scores = [question_scores(judged, levels[0])]
    assert metric("mece", scores) == pytest.approx(0.4) and metric("mece_matched", scores) == pytest.approx(0.1)
    # exact truth matches nothing: the matched-only MECE is undefined
    exact = chain_record(examples[2], text)
    assert confidence_report([exact], levels).mece_matched is None


def test_unjudgeable_steps_keep_no_truth():
    ex = generate_examples(BenchmarkSpec.version("v1", n_train=1, n_test=0, n_ood=0), "train", Path("/tmp"))[0]
    bare = ex.model_copy(update={"scene": None, "chain": ()})
    chain = chain_record(bare, "There are 2 red objects. So the answer is 2.")
    [judged] = judge_chains([chain], [bare], ConsistentJudge(TableSimilarity({}), 0.9))
    assert [s.correct for s in judged.steps] == [None, None]
