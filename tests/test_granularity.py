"""Answer-granularity statements (the SaySelf-style baseline, `statements/granularity.py`): the
answer's level, the SFT records, the evaluation's chain records and the rl stage's one-step
rollouts, each by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmboundary.records import Example, GeneratedChain, GeneratedStep, ReferenceStep, StepKind
from mmboundary.statements.granularity import answer_level, spread_answer_level
from mmboundary.training.rewards import RewardConfig, reward_positions, step_rewards
from mmboundary.training.rollout import Rollout, RolloutStep, answer_rollout
from mmboundary.training.sft import sft_records


def test_answer_level_rounds_the_mean_half_up():
    assert answer_level([2, 3]) == 3  # 2.5 -> 3
    assert answer_level([1, 2, 4]) == 2  # 2.33 -> 2
    assert answer_level([4, 5, 5]) == 5  # 4.67 -> 5
    assert answer_level([1]) == 1
    with pytest.raises(ValueError, match="no steps"):
        answer_level([])
    assert spread_answer_level([2, None, 4]) == [4, 4, 4]
    assert spread_answer_level([3, None]) == [None, None]  # no final statement: no level anywhere
    assert spread_answer_level([]) == []


def _example(i: str) -> Example:
    return Example(id=i, image=Path(f"/img/{i}.png"), question="How many?", answers=("2",),
                   chain=(ReferenceStep(text="There are 2 circles.", kind=StepKind.perception),))


def test_sft_records_at_answer_granularity_state_once_after_the_answer():
    steps = ["There are 2 circles.", "There is 1 square.", "So the answer is 3."]
    pos, gsteps = 0, []
    for t in steps:
        gsteps.append(GeneratedStep(text=t, start=pos, end=pos + len(t), correct=True))
        pos += len(t) + 1
    chain = GeneratedChain(example_id="a", text=" ".join(steps), steps=tuple(gsteps), answer="3", answer_correct=True)
    levels = {("a", 0): 4, ("a", 1): 1, ("a", 2): 2}  # mean 7/3 -> level 2

    def write(texts, statements):
        return " | ".join(f"{s}<{c}>" for s, c in zip(texts, statements))

    records, _ = sft_records({"a": _example("a")}, [chain], levels, lambda lv: f"L{lv}", write, granularity="answer")
    assert records[0]["response"] == "There are 2 circles.<None> | There is 1 square.<None> | So the answer is 3.<L2>"
    assert records[0]["levels"] == [2] and records[0]["statements"] == [None, None, "L2"]
    step_records, _ = sft_records({"a": _example("a")}, [chain], levels, lambda lv: f"L{lv}", write)
    assert step_records[0]["statements"] == ["L4", "L1", "L2"]  # the default: every step


def test_evaluation_chains_carry_the_answer_level_on_every_step():
    from mmboundary.generation import expressed_chain_record
    from mmboundary.statements.chain_format import parse_chain, write_chain
    from mmboundary.statements.mapping import NumericMapper

    mapper = NumericMapper()
    text = write_chain(["There are 2 circles.", "So the answer is 2."], [None, mapper.statement(4, None)])
    parsed = parse_chain(text, mapper)
    assert [p.level for p in parsed.steps] == [None, 4]
    ex = _example("a")
    by_step = expressed_chain_record(ex, text, parsed)
    by_answer = expressed_chain_record(ex, text, parsed, granularity="answer")
    assert [s.level for s in by_step.steps] == [None, 4]
    assert [s.level for s in by_answer.steps] == [4, 4]
    assert [s.statement for s in by_answer.steps] == [s.statement for s in by_step.steps]
    assert by_answer.answer == by_step.answer == "2"


def test_answer_rollout_is_one_step_scored_against_the_answer():
    # three steps; only the last has a statement (level 4); internal levels 1, 2, 2 -> answer level 2;
    # step correctness 1, 0, 0 but the answer is right (a = 1)
    steps = (
        RolloutStep(0, 3, None, None, expressed_level=None, internal_level=1, correct=1),
        RolloutStep(3, 6, None, None, expressed_level=None, internal_level=2, correct=0),
        RolloutStep(6, 10, 8, 10, expressed_level=4, internal_level=2, correct=0),
    )
    r = answer_rollout(Rollout(example_id="e", prompt_length=5, tokens=tuple(range(11)), steps=steps,
                               answer_correct=1))
    assert len(r.steps) == 1
    s = r.steps[0]
    assert (s.start, s.end, s.statement_start, s.statement_end) == (0, 10, 8, 10)
    assert (s.expressed_level, s.internal_level, s.correct) == (4, 2, 1)
    assert reward_positions(r) == (9,)  # the last token of the answer's statement
    # the sayself row's reward: alpha = gamma = 0, so R = R_EC = 1 - 2 (0.7 - 1)^2 = 0.82
    (rw,) = step_rewards(r, RewardConfig(alpha=0.0, beta=1.0, gamma=0.0))
    assert rw.total == pytest.approx(0.82) and rw.r_ec == pytest.approx(0.82)
    # an unparsed answer statement is a format failure, as for steps
    bad = answer_rollout(Rollout(example_id="e", prompt_length=0, tokens=tuple(range(6)), steps=(
        RolloutStep(0, 6, 4, 6, expressed_level=None, internal_level=3, correct=0),), answer_correct=0))
    assert step_rewards(bad, RewardConfig(alpha=0.0, gamma=0.0))[0].total == -1.0
    empty = Rollout(example_id="e", prompt_length=0, tokens=(1,), steps=(), answer_correct=0)
    assert answer_rollout(empty) is empty
