"""The SFT warm-up's pure parts and the resumable training loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from mmboundary.config import TrainConfig
from mmboundary.evaluation.expressed import confidence_report
from mmboundary.records import Example, GeneratedChain, GeneratedStep, ReferenceStep, StepKind
from mmboundary.training.loop import latest_checkpoint, train_supervised
from mmboundary.training.sft import sft_records

# --- resumable loop -------------------------------------------------------------------------------

class _Interrupt(Exception):
    pass


def _toy_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(40, generator=g)
    return list(zip(x, y))


def _model():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))


def _train(items, ckpt: Path | None, stop_at: int | None = None):
    model = _model()
    calls = {"n": 0}

    def collate(batch):
        calls["n"] += 1
        if stop_at is not None and calls["n"] > stop_at:
            raise _Interrupt
        return {"x": torch.stack([b[0] for b in batch]), "y": torch.stack([b[1] for b in batch])}

    def loss_fn(m, b):
        return ((m(b["x"]).squeeze(-1) - b["y"]) ** 2).mean()

    cfg = TrainConfig(epochs=3, batch_size=6, lr=1e-2, warmup_ratio=0.2, log_every=2)
    summary = train_supervised(model, items, collate, cfg, seed=3, accelerator=Accelerator(cpu=True),
                               loss_fn=loss_fn, checkpoint_dir=ckpt, save_every=4)
    return model, summary


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    items = _toy_problem()
    ref_model, ref_summary = _train(items, None)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(_Interrupt):
        _train(items, ckpt, stop_at=11)  # dies during step 11: checkpoints at 4 and 8 were written
    latest = latest_checkpoint(ckpt)
    assert latest is not None and latest.name == "step-8"
    assert [p.name for p in ckpt.iterdir()] == ["step-8"]  # older checkpoints removed
    model, summary = _train(items, ckpt)
    assert summary["resumed_from"] == "step-8"
    assert summary["steps"] == ref_summary["steps"] == 21  # ceil(40 / 6) * 3
    for (n, a), (_, b) in zip(ref_model.named_parameters(), model.named_parameters()):
        assert torch.equal(a, b), n  # bitwise on CPU
    assert summary["loss_curve"] == ref_summary["loss_curve"]


def test_a_half_written_checkpoint_is_ignored(tmp_path):
    (tmp_path / "step-12").mkdir()  # no trainer_state.pt: an interrupted save
    (tmp_path / ".tmp-step-16").mkdir()
    assert latest_checkpoint(tmp_path) is None


def test_begin_stage_keeps_only_named_entries(tmp_path):
    from mmboundary.config import load_config
    from mmboundary.runs import Run

    run = Run.open(tmp_path / "r", load_config(None, ["stages=[data]"]))
    d = run.stage_dir("sft")
    (d / "checkpoints" / "step-4").mkdir(parents=True)
    (d / "model").mkdir()
    (d / "partial.json").write_text("{")
    run.begin_stage("sft", keep=("checkpoints",))
    assert sorted(p.name for p in d.iterdir()) == ["checkpoints"]
    assert (d / "checkpoints" / "step-4").is_dir()


# --- SFT records ----------------------------------------------------------------------------------

def _example(i: str) -> Example:
    return Example(id=i, image=Path(f"/img/{i}.png"), question=f"How many circles in {i}?",
                   answers=("2",), chain=(ReferenceStep(text="There are 2 circles.", kind=StepKind.perception),
                                          ReferenceStep(text="So the answer is 2.", kind=StepKind.reasoning)))


def _chain(i: str, texts: list[str], correct: list[bool | None], answer: str | None = "2",
           answer_correct: bool = True) -> GeneratedChain:
    steps, pos = [], 0
    for t, c in zip(texts, correct):
        steps.append(GeneratedStep(text=t, start=pos, end=pos + len(t), correct=c))
        pos += len(t) + 1
    return GeneratedChain(example_id=i, text=" ".join(texts), steps=tuple(steps), answer=answer,
                          answer_correct=answer_correct)


def test_sft_records_attach_one_statement_per_step_and_count_what_is_left_out():
    examples = {i: _example(i) for i in ("a", "b", "c", "d")}
    chains = [
        _chain("a", ["There are 2 circles.", "So the answer is 2."], [True, True]),
        _chain("b", [], []),                                   # no steps
        _chain("c", ["There are 3 circles.", "So the answer is 3."], [False, False]),  # a level missing
        _chain("zz", ["There is 1 circle."], [True]),          # not an example of the split
        _chain("d", ["There are 2 circles."], [True], answer=None, answer_correct=False),
    ]
    levels = {("a", 0): 4, ("a", 1): 2, ("c", 0): 1, ("d", 0): 5}

    def write(steps, statements):
        return " | ".join(f"{s}<{c}>" for s, c in zip(steps, statements))

    records, skipped = sft_records(examples, chains, levels, lambda lv: f"L{lv}", write)
    assert [r["example_id"] for r in records] == ["a", "d"]
    assert records[0]["response"] == "There are 2 circles.<L4> | So the answer is 2.<L2>"
    assert records[0]["levels"] == [4, 2] and records[0]["statements"] == ["L4", "L2"]
    assert records[0]["image"] == "/img/a.png" and records[0]["choices"] is None
    assert skipped == {"no_steps": 1, "missing_level": 1, "unanswered": 0, "unknown_example": 1}
    records, skipped = sft_records(examples, chains, levels, lambda lv: f"L{lv}", write, drop_unanswered=True)
    assert [r["example_id"] for r in records] == ["a"] and skipped["unanswered"] == 1


# --- confidence report ----------------------------------------------------------------------------

def test_confidence_report_by_hand():
    chains = [
        _chain("a", ["s1.", "s2."], [True, True], answer_correct=True),
        _chain("b", ["s1.", "s2.", "s3."], [False, None, False], answer_correct=False),
        _chain("c", [], [], answer=None, answer_correct=False),
    ]
    levels = [[5, 4], [1, 3, None], []]
    r = confidence_report(chains, levels, f1=0.5)
    assert r.examples == 3 and r.accuracy == pytest.approx(1 / 3)
    assert r.steps == 5 and r.parsed_share == pytest.approx(4 / 5)
    # scored steps (level known, truth known): a0 (0.9, 1), a1 (0.7, 1), b0 (0.1, 0)
    assert r.steps_scored == 3 and r.step_accuracy == pytest.approx(2 / 3)
    # MECE: bins 0.9 -> |1-0.9|, 0.7 -> |1-0.7|, 0.1 -> |0-0.1|, each weight 1/3
    assert r.mece == pytest.approx((0.1 + 0.3 + 0.1) / 3)
    assert r.brier == pytest.approx((0.01 + 0.09 + 0.01) / 3)
    assert r.auroc == pytest.approx(1.0)
    # answers: only chain a has a last-step level (b's last is unparsed, c is empty): 0.7 vs 1
    assert r.answers_with_confidence == 1 and r.ece == pytest.approx(0.3)
    assert r.level_shares == {1: 0.25, 2: 0.0, 3: 0.25, 4: 0.25, 5: 0.25}
    assert r.f1 == 0.5


def test_confidence_report_rejects_misaligned_levels():
    chains = [_chain("a", ["s1.", "s2."], [True, True])]
    with pytest.raises(ValueError, match="'a' has 2 steps but 1 levels"):
        confidence_report(chains, [[3]])


def test_statement_writer_draws_from_the_first_k_statements_of_each_level():
    import numpy as np

    from mmboundary.config import load_config
    from mmboundary.stages.sft import statement_writer
    from mmboundary.statements.pool import default_pool

    pool = default_pool()

    class NoMapper:  # the restricted writer must not fall back to the mapper
        def statement(self, level, rng):
            raise AssertionError("mapper used")

    one = statement_writer(load_config(None, ["sft_data.statements_per_level=1"]),
                           np.random.default_rng(0), NoMapper())
    assert [one(level) for level in (1, 2, 3, 4, 5, 3)] == [pool[lv][0] for lv in (1, 2, 3, 4, 5, 3)]
    three = statement_writer(load_config(None, ["sft_data.statements_per_level=3"]),
                             np.random.default_rng(0), NoMapper())
    drawn = {three(4) for _ in range(60)}
    assert drawn == set(pool[4][:3])  # all three used, nothing beyond them


def test_caption_replay_items_have_the_sft_columns_and_no_statements():
    from mmboundary.data.benchmark import CAPTION_QUESTION
    from mmboundary.records import Scene, SceneObject
    from mmboundary.training.base import caption_replay

    scene = Scene(objects=(SceneObject(shape="circle", color="red", size="small", column="left", row="top"),))
    exs = [_example("a").model_copy(update={"scene": scene}), _example("b")]  # b has no scene
    items = caption_replay(exs, 3, ("red", "blue", "green", "yellow"), seed=0)
    assert len(items) == 3 and {it["example_id"] for it in items} == {"a"}
    assert all(it["question"] == CAPTION_QUESTION and it["statements"] == [] for it in items)
    assert "red" in items[0]["response"] and "circle" in items[0]["response"]
    assert caption_replay(exs, 0, ("red",), seed=0) == []
