"""Trivial reference rows: what a confidence source must beat to be worth stating (pure).

**[choice]** Both references are chosen on the vanilla model's TRAIN chains (the estimate
stage's `estimate/chains_train.jsonl`: its steps and their exact truth) and applied to the vanilla
model's chains on each evaluated split. They answer "what if the vanilla model stated ...

- `constant`: ... the same level after every step": the level whose constant p(L) has the
  lowest MECE (the step-level ECE) on the train steps (`constant_level`);
- `kind_prior`: ... the level of its step kind's train accuracy after every step": per claim
  type of the built-in benchmark (`GeneratedStep.kind`: count, attribute, spatial, arithmetic,
  comparison, final; None: a sentence of no type), the level nearest that kind's train step
  accuracy (`kind_prior_levels`); a kind unseen in train gets the constant level.

Neither looks at the test question: a row whose MECE is not below them states nothing a
per-kind base rate would not. They are scored by the same code as every row
(`evaluation.expressed.confidence_report`, `evaluation.bootstrap`), on the vanilla model's chains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from mmboundary.confidence.fusion import level_probability
from mmboundary.evaluation.bootstrap import Interval
from mmboundary.evaluation.calibration import ece
from mmboundary.evaluation.expressed import ConfidenceReport
from mmboundary.levels import LEVELS
from mmboundary.records import GeneratedChain

__all__ = [
    "ConstantReference",
    "KindLevel",
    "KindPriorReference",
    "constant_chain_levels",
    "constant_level",
    "kind_prior_chain_levels",
    "kind_prior_levels",
    "kind_table",
    "train_steps",
]

#: Two levels whose MECE differ by less than this are tied (floating-point noise of |acc - p|).
_TIE = 1e-12


class KindLevel(BaseModel):
    """One step kind of the kind prior: its train steps, their accuracy, the level chosen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str | None
    steps: int
    accuracy: float
    level: int


class ConstantReference(BaseModel):
    """The constant reference row of one split in `evaluate/metrics.json`: its level, the train
    steps it was chosen on and their accuracy, its report and its intervals."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: int
    train_steps: int
    train_accuracy: float
    report: ConfidenceReport
    intervals: dict[str, Interval]


class KindPriorReference(BaseModel):
    """The kind-prior reference row of one split: each train kind's level, the `fallback` level
    of kinds unseen in train (the constant level), its report and its intervals."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: tuple[KindLevel, ...]
    fallback: int
    report: ConfidenceReport
    intervals: dict[str, Interval]


def train_steps(chains: Sequence[GeneratedChain]) -> tuple[list[str | None], list[bool]]:
    """(kinds, truths) of the steps of `chains` whose truth is known (the others cannot be
    scored, as in `confidence_report`)."""
    steps = [s for c in chains for s in c.steps if s.correct is not None]
    return [s.kind for s in steps], [bool(s.correct) for s in steps]


def _nearest_level(truths: Sequence[bool]) -> int:
    """The level whose constant p(L) has the lowest ECE on `truths` (one bin: |acc - p(L)|).

    **[choice]** Ties (accuracy 0.2, 0.4, 0.6 or 0.8, midway between two p(L)) go to the UPPER
    level, as `confidence.fusion.probability_level` rounds.
    """
    if not truths:
        raise ValueError("no train steps with a known truth to choose a level on")
    y = [int(t) for t in truths]
    errors = {lv: ece([level_probability(lv)] * len(y), y) for lv in LEVELS}
    best = min(errors.values())
    return max(lv for lv, e in errors.items() if e <= best + _TIE)


def constant_level(train_steps_correct: Sequence[bool]) -> int:
    """The single level whose constant p(L) has the lowest MECE (ECE over steps) on the train
    steps: the level nearest their accuracy (ties up, see `_nearest_level`)."""
    return _nearest_level(train_steps_correct)


def kind_table(kinds: Sequence[str | None], corrects: Sequence[bool]) -> tuple[KindLevel, ...]:
    """Per step kind seen in train (in first-seen order): its steps, accuracy and level."""
    if len(kinds) != len(corrects):
        raise ValueError(f"{len(kinds)} kinds but {len(corrects)} truths")
    by_kind: dict[str | None, list[bool]] = {}
    for k, y in zip(kinds, corrects):
        by_kind.setdefault(k, []).append(bool(y))
    return tuple(KindLevel(kind=k, steps=len(ys), accuracy=sum(ys) / len(ys), level=_nearest_level(ys))
                 for k, ys in by_kind.items())


def kind_prior_levels(kinds: Sequence[str | None], corrects: Sequence[bool]) -> dict[str | None, int]:
    """Step kind -> the level nearest that kind's train step accuracy (ties up, as
    `constant_level`), for every kind in `kinds` (None, "no type", is a kind like any). A kind
    missing here falls back to `constant_level(corrects)` (see `kind_prior_chain_levels`)."""
    return {row.kind: row.level for row in kind_table(kinds, corrects)}


def constant_chain_levels(chains: Sequence[GeneratedChain], level: int) -> list[list[int]]:
    """`level` after every step of every chain (the constant reference's levels)."""
    return [[level] * len(c.steps) for c in chains]


def kind_prior_chain_levels(chains: Sequence[GeneratedChain], levels: Mapping[str | None, int],
                            fallback: int) -> list[list[int]]:
    """Each step's kind's level (`kind_prior_levels`), `fallback` for a kind unseen in train."""
    return [[levels.get(s.kind, fallback) for s in c.steps] for c in chains]
