"""Confidence of a model's chains judged against correctness: the paper's columns (method.md
section 6) for any source of per-step confidence, as pure functions.

The same report serves
- expressed confidence: the level each step's statement maps back to, as p(L) = (L - 0.5)/5;
- the vanilla model's internal confidence: the level of its fused signals, as p(L);
so that "vanilla-internal" and "SFT-expressed" rows are computed by one code path.

Columns of `ConfidenceReport`:
- `accuracy` (Acc): share of chains whose final answer is correct;
- `ece`: answer level, confidence = p of the chain's last step, correctness = the answer's;
- `mece`: step level, the same ECE over every step with a confidence and a known truth (where
  the truth comes from a step judge, an unmatched step counts as wrong);
- `mece_matched`: the paper's Fig. 6 variant, over the steps a step judge matched to a reference
  step only (`GeneratedStep.reference` set; `steps_matched` of them); None where no step was
  matched, e.g. with exact truth, which matches nothing;
- `auroc` (step level) and `answer_auroc`, `brier` (step level) and its Murphy decomposition
  `brier_reliability - brier_resolution + brier_uncertainty` (`calibration.brier_decomposition`:
  reliability is the calibration part, resolution the discrimination part; None in reports
  written before they existed; the baselines' reports fill them the same way);
- `level_shares`: share of steps at each level 1..5 (steps with a level only);
- `parsed_share`: steps with a confidence / all steps: a step whose statement maps to no
  level has none; it is counted here and left out of the other columns, never filled in;
- `f1`: the mean per-example F1 of the step matching (`evaluation.matching`), when given.

**[choice]** A chain whose last step has no confidence (unparsed, or an empty chain) is left out
of `ece` and `answer_auroc`; `answers_with_confidence` says how many remain.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from mmboundary.confidence.fusion import level_probability
from mmboundary.evaluation.calibration import auroc, brier, brier_decomposition, ece, level_shares
from mmboundary.records import GeneratedChain


class ConfidenceReport(BaseModel):
    """The evaluation columns of one model / confidence source on one split."""

    model_config = ConfigDict(frozen=True)

    examples: int
    accuracy: float | None
    steps: int
    parsed_share: float | None
    steps_scored: int
    step_accuracy: float | None
    ece: float | None
    mece: float | None
    auroc: float | None
    answer_auroc: float | None
    brier: float | None
    answers_with_confidence: int
    level_shares: dict[int, float]
    f1: float | None = None
    brier_reliability: float | None = None
    brier_resolution: float | None = None
    brier_uncertainty: float | None = None
    mece_matched: float | None = None
    steps_matched: int | None = None


def chain_levels(chain: GeneratedChain) -> list[int | None]:
    """The expressed level of each step of a chain (None where no statement was parsed)."""
    return [s.level for s in chain.steps]


def confidence_report(chains: Sequence[GeneratedChain], levels: Sequence[Sequence[int | None]],
                      f1: float | None = None) -> ConfidenceReport:
    """The report for `chains` whose step t has level `levels[i][t]` (None: no confidence).

    `levels` must give one entry per step of every chain (a mismatch is an error naming the
    chain): a silently shifted level would corrupt every column.
    """
    if len(levels) != len(chains):
        raise ValueError(f"confidence_report: {len(chains)} chains but {len(levels)} level lists")
    step_p: list[float] = []
    step_y: list[int] = []
    matched_p: list[float] = []
    matched_y: list[int] = []
    all_levels: list[int] = []
    answer_p: list[float] = []
    answer_y: list[int] = []
    n_steps = 0
    n_parsed = 0
    for chain, lv in zip(chains, levels):
        if len(lv) != len(chain.steps):
            raise ValueError(f"confidence_report: chain {chain.example_id!r} has {len(chain.steps)} steps "
                             f"but {len(lv)} levels")
        n_steps += len(lv)
        for step, level in zip(chain.steps, lv):
            if level is None:
                continue
            n_parsed += 1
            all_levels.append(int(level))
            if step.correct is not None:
                step_p.append(level_probability(int(level)))
                step_y.append(int(step.correct))
                if step.reference is not None:
                    matched_p.append(step_p[-1])
                    matched_y.append(step_y[-1])
        if lv and lv[-1] is not None:
            answer_p.append(level_probability(int(lv[-1])))
            answer_y.append(int(chain.answer_correct))
    n = len(chains)
    parts = brier_decomposition(step_p, step_y) if step_p else None
    return ConfidenceReport(
        examples=n,
        accuracy=sum(c.answer_correct for c in chains) / n if n else None,
        steps=n_steps,
        parsed_share=n_parsed / n_steps if n_steps else None,
        steps_scored=len(step_p),
        step_accuracy=sum(step_y) / len(step_y) if step_y else None,
        ece=ece(answer_p, answer_y) if answer_p else None,
        mece=ece(step_p, step_y) if step_p else None,
        auroc=auroc(step_p, step_y) if step_p else None,
        answer_auroc=auroc(answer_p, answer_y) if answer_p else None,
        brier=brier(step_p, step_y) if step_p else None,
        answers_with_confidence=len(answer_p),
        level_shares=level_shares(all_levels) if all_levels else {},
        f1=f1,
        brier_reliability=parts.reliability if parts else None,
        brier_resolution=parts.resolution if parts else None,
        brier_uncertainty=parts.uncertainty if parts else None,
        mece_matched=ece(matched_p, matched_y) if matched_p else None,
        steps_matched=len(matched_p),
    )
