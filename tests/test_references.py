"""The reference rows (mmboundary.evaluation.references) and how the evaluate stage writes them:
levels chosen on train steps, applied to chains, scored, written to metrics.json and read back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmboundary.artifacts import read_metrics, read_scores
from mmboundary.config import load_config
from mmboundary.evaluation.bootstrap import METRICS, metric
from mmboundary.evaluation.calibration import ece
from mmboundary.evaluation.references import (
    KindLevel,
    constant_chain_levels,
    constant_level,
    kind_prior_chain_levels,
    kind_prior_levels,
    kind_table,
    train_steps,
)
from mmboundary.records import GeneratedChain, GeneratedStep
from mmboundary.runs import Run
from mmboundary.stages.evaluate import ReferenceChoice, model_row, print_results, reference_rows


def test_constant_level_is_the_level_nearest_the_train_accuracy():
    # accuracy 0.7 = p(4): MECE 0 at level 4
    assert constant_level([True] * 7 + [False] * 3) == 4
    # accuracy 0.62: |0.62 - 0.7| = 0.08 < |0.62 - 0.5| = 0.12
    assert constant_level([True] * 31 + [False] * 19) == 4
    assert constant_level([False] * 5) == 1 and constant_level([True] * 5) == 5
    # ties go up: 0.6 is 0.1 from p(3) = 0.5 and p(4) = 0.7; 0.2 between p(1) and p(2)
    assert constant_level([True] * 3 + [False] * 2) == 4
    assert constant_level([True] + [False] * 4) == 2
    with pytest.raises(ValueError, match="no train steps"):
        constant_level([])


def test_constant_level_minimises_the_mece_of_a_constant_confidence():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        y = (rng.random(int(rng.integers(1, 300))) < rng.random()).tolist()
        chosen = constant_level(y)
        errors = {lv: ece([(lv - 0.5) / 5] * len(y), y) for lv in range(1, 6)}
        assert errors[chosen] == pytest.approx(min(errors.values()), abs=1e-12)


def test_kind_prior_levels_by_hand():
    kinds = ["count", "count", "count", "count", "final", "final", None]
    truth = [True, True, True, False, False, False, True]
    # count: 3/4 = 0.75 -> p(4) = 0.7 (0.05 away); final: 0 -> level 1; None (no type): 1 -> level 5
    assert kind_prior_levels(kinds, truth) == {"count": 4, "final": 1, None: 5}
    assert kind_table(kinds, truth)[0] == KindLevel(kind="count", steps=4, accuracy=0.75, level=4)
    with pytest.raises(ValueError, match="7 kinds but 6"):
        kind_prior_levels(kinds, truth[:-1])


def _step(correct, kind=None, level=None):
    return GeneratedStep(text="s", start=0, end=1, correct=correct, kind=kind, level=level)


def _chain(eid, steps, right=True):
    return GeneratedChain(example_id=eid, text="x", steps=tuple(steps), answer="a", answer_correct=right)


CHAINS = [_chain("a", [_step(True, "count"), _step(False, "spatial"), _step(None, "final")]),
          _chain("b", [_step(True, "count"), _step(True, "final")], right=False),
          _chain("c", [])]


def test_levels_applied_to_chains():
    assert train_steps(CHAINS) == (["count", "spatial", "count", "final"], [True, False, True, True])
    assert constant_chain_levels(CHAINS, 3) == [[3, 3, 3], [3, 3], []]
    # "spatial" unseen: the fallback level
    assert kind_prior_chain_levels(CHAINS, {"count": 5, "final": 1}, 2) == [[5, 2, 1], [5, 1], []]


def test_reference_rows_score_and_write_both_references(tmp_path):
    kinds, truth = train_steps(CHAINS)
    choice = ReferenceChoice(level=constant_level(truth), train_steps=len(truth), train_accuracy=0.75,
                             kinds=kind_table(kinds, truth))
    assert choice.level == 4  # 3 of 4 train steps right: 0.75 -> p(4)
    block = reference_rows(tmp_path, "test", CHAINS, choice, f1=0.5)
    const, prior = block["constant"], block["kind_prior"]
    assert const["level"] == 4 and const["report"]["level_shares"][4] == 1.0 and const["report"]["f1"] == 0.5
    # constant 0.7 on the 4 scored steps (3 right): one bin, |0.75 - 0.7|
    assert const["report"]["mece"] == pytest.approx(0.05, abs=1e-12)
    assert const["intervals"]["mece"]["estimate"] == pytest.approx(0.05, abs=1e-12)
    assert set(const["intervals"]) == set(METRICS)
    # kind prior: count 2/2 -> 5, spatial 0/1 -> 1, final 1/1 -> 5 (chosen on these very steps here)
    assert {k["kind"]: k["level"] for k in prior["levels"]} == {"count": 5, "spatial": 1, "final": 5}
    assert prior["fallback"] == 4 and prior["report"]["mece"] == pytest.approx(0.1, abs=1e-12)
    scores = [json.loads(x) for x in (tmp_path / "scores_kind_prior_test.jsonl").read_text().splitlines()]
    assert [s["step_confidence"] for s in scores] == [[0.9, 0.1, 0.9], [0.9, 0.9], []]
    assert [s["answer_confidence"] for s in scores] == [0.9, 0.9, None]
    assert (tmp_path / "scores_constant_test.jsonl").read_text().count("\n") == 3


def test_metrics_json_with_intervals_and_references_reads_back(tmp_path, capsys):
    run = Run.open(tmp_path / "run", load_config(None, []))
    out = run.begin_stage("evaluate")
    chains = [_chain(f"e{i}", [_step(i % 3 > 0, "count", level=1 + i % 5), _step(i % 2 == 0, "final", level=4)],
                     right=i % 2 == 0) for i in range(40)]
    kinds, truth = train_steps(chains)
    choice = ReferenceChoice(level=constant_level(truth), train_steps=len(truth),
                             train_accuracy=sum(truth) / len(truth), kinds=kind_table(kinds, truth))
    row = model_row(run, "test", "sft", chains, expressed=True, internal=False, f1=None)
    metrics = {"test": {"sft": row, "references": reference_rows(out, "test", chains, choice, None)}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    run.mark_complete("evaluate")
    got = read_metrics(run)["test"]
    assert list(got.models) == ["sft"]
    sft = got.models["sft"]
    assert sft.intervals["mece"].estimate == sft.expressed.mece
    assert sft.expressed.brier_reliability - sft.expressed.brier_resolution + sft.expressed.brier_uncertainty == \
        pytest.approx(sft.expressed.brier, abs=1e-12)
    assert got.references.constant.level == choice.level
    assert got.references.kind_prior.levels == choice.kinds
    scores = read_scores(run, "sft", "test")
    assert len(scores) == 40 and metric("mece", scores) == sft.expressed.mece
    assert metric("mece", read_scores(run, "constant", "test")) == got.references.constant.report.mece

    print_results(metrics)
    text = capsys.readouterr().out
    assert f"ref: constant L{choice.level}" in text and "ref: kind prior" in text
    lo, hi = sft.intervals["mece"].low, sft.intervals["mece"].high
    assert "bootstrap intervals" in text and f"[{lo:.3f}, {hi:.3f}]" in text
