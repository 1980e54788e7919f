"""A baseline's result as the evaluate stage's columns (method.md section 6), so every method,
trained or not, lands in one table.

`confidence_columns` computes a `evaluation.expressed.ConfidenceReport` (the record the evaluate
stage writes for its vanilla-internal and SFT-expressed rows) from a `BaselineResult`, with the
same metric functions (`evaluation.calibration`: `ece` with 10 equal-width bins, `auroc`,
`brier`, `level_shares`) and the same conventions:

- `ece`: answer level, the answer confidence against the answer's correctness;
- `mece`, `auroc`, `brier` and Brier's parts (`brier_decomposition`: reliability, resolution,
  uncertainty): step level, over steps whose correctness is known;
- `accuracy`: the share of correct final answers; `f1`: passed through (the caller computes it
  from the chains, e.g. as the evaluate stage does with `evaluation.matching`);
- `parsed_share`: steps with a computed (not fallback) confidence / all steps;
- `level_shares`: **[choice]** a baseline's confidence may be any number in [0, 1] (an agreement
  share, a mean), so each step confidence is counted at its nearest level,
  `confidence.fusion.probability_level` (ties up); for confidences that are level probabilities
  this is the level itself.

Fallbacks, two views (`baseline_report` gives both):
- `include_fallback=True` (the baseline's row): every step and answer counts, a fallback with its
  fallback value (0.5): a method is not rewarded for having no confidence;
- `include_fallback=False` (the evaluate stage's convention for unparsed statements): fallback
  steps and answers are left out of every column but `parsed_share`. For a result whose
  confidences are level probabilities, this equals `confidence_report(chains, levels)` with the
  fallback steps' levels None (tests/test_baselines.py checks it).

`question_scores_of` gives the same row per example (`evaluation.bootstrap.QuestionScores`, the
input of the comparison's bootstrap intervals and paired differences), in the
`include_fallback=True` view.

Pure functions of saved results: a report is recomputed from `BaselineResult.load(path)` without
running any model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from mmboundary.baselines.base import BaselineResult, Cost, ParseCounts
from mmboundary.confidence.fusion import probability_level
from mmboundary.evaluation.bootstrap import QuestionScores, matched_flags
from mmboundary.evaluation.calibration import auroc, brier, brier_decomposition, ece, level_shares
from mmboundary.evaluation.expressed import ConfidenceReport

__all__ = ["BaselineReport", "baseline_report", "confidence_columns", "question_scores_of"]


def confidence_columns(result: BaselineResult, *, include_fallback: bool = True, f1: float | None = None,
                       n_bins: int = 10) -> ConfidenceReport:
    """The evaluate stage's columns of an applicable result (see the module docstring)."""
    if not result.applicable:
        raise ValueError(f"{result.label} does not apply ({result.reason}); it has no columns")
    step_p: list[float] = []
    step_y: list[int] = []
    matched_p: list[float] = []
    matched_y: list[int] = []
    levels: list[int] = []
    answer_p: list[float] = []
    answer_y: list[int] = []
    n_steps = n_computed = 0
    for ex in result.examples:
        for step, p, fb in zip(ex.chain.steps, ex.step_confidences, ex.step_fallback):
            n_steps += 1
            n_computed += not fb
            if fb and not include_fallback:
                continue
            levels.append(probability_level(p))
            if step.correct is not None:
                step_p.append(p)
                step_y.append(int(step.correct))
                if step.reference is not None:
                    matched_p.append(p)
                    matched_y.append(int(step.correct))
        if include_fallback or not ex.answer_fallback:
            answer_p.append(ex.answer_confidence)
            answer_y.append(int(ex.chain.answer_correct))
    n = len(result.examples)
    parts = brier_decomposition(step_p, step_y) if step_p else None
    return ConfidenceReport(
        examples=n,
        accuracy=sum(e.chain.answer_correct for e in result.examples) / n if n else None,
        steps=n_steps,
        parsed_share=n_computed / n_steps if n_steps else None,
        steps_scored=len(step_p),
        step_accuracy=sum(step_y) / len(step_y) if step_y else None,
        ece=ece(answer_p, answer_y, n_bins) if answer_p else None,
        mece=ece(step_p, step_y, n_bins) if step_p else None,
        auroc=auroc(step_p, step_y) if step_p else None,
        answer_auroc=auroc(answer_p, answer_y) if answer_p else None,
        brier=brier(step_p, step_y) if step_p else None,
        answers_with_confidence=len(answer_p),
        level_shares=level_shares(levels) if levels else {},
        f1=f1,
        brier_reliability=parts.reliability if parts else None,
        brier_resolution=parts.resolution if parts else None,
        brier_uncertainty=parts.uncertainty if parts else None,
        mece_matched=ece(matched_p, matched_y, n_bins) if matched_p else None,
        steps_matched=len(matched_p),
    )


def question_scores_of(result: BaselineResult) -> list[QuestionScores]:
    """Each example of an applicable result as the scores of the baseline's row: the answer's
    confidence and correctness, and per step its confidence, truth and kind (`GeneratedStep.kind`,
    None where unknown). Fallbacks count at their fallback value, as in the row's columns
    (`include_fallback=True`), so the metrics of these scores are the row's."""
    if not result.applicable:
        raise ValueError(f"{result.label} does not apply ({result.reason}); it has no scores")
    return [QuestionScores(id=ex.example_id, answer_correct=bool(ex.chain.answer_correct),
                           answer_confidence=float(ex.answer_confidence),
                           step_confidence=tuple(float(p) for p in ex.step_confidences),
                           step_correct=tuple(s.correct for s in ex.chain.steps),
                           step_kind=tuple(s.kind for s in ex.chain.steps),
                           step_matched=matched_flags(ex.chain.steps))
            for ex in result.examples]


class BaselineReport(BaseModel):
    """One method's row: its columns with fallbacks (`confidence`) and without (`parsed_only`),
    the answer-level Brier score, fallback counts, parse counts and cost. A method that does not
    apply has `applicable=False`, its `reason`, and no columns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str
    variant: str | None
    label: str
    applicable: bool
    reason: str | None
    examples: int
    confidence: ConfidenceReport | None
    parsed_only: ConfidenceReport | None
    answer_brier: float | None
    fallback_steps: int
    fallback_answers: int
    parse: ParseCounts | None
    cost: Cost
    cost_per_example: dict[str, float]

    def row(self) -> dict[str, Any]:
        """The flat row of a results table: the paper's columns (Acc, ECE, MECE, F1, AUROC, Brier),
        the share of computed confidences, and the cost per example; None where undefined, and
        `reason` for a method that does not apply."""
        c = self.confidence
        return {
            "method": self.label, "applicable": self.applicable, "reason": self.reason,
            "acc": c.accuracy if c else None, "ece": c.ece if c else None, "mece": c.mece if c else None,
            "f1": c.f1 if c else None, "auroc": c.auroc if c else None, "brier": c.brier if c else None,
            "parsed": c.parsed_share if c else None,
            "sequences_per_example": self.cost_per_example.get("sequences"),
            "tokens_per_example": self.cost_per_example.get("tokens"),
        }


def baseline_report(result: BaselineResult, *, f1: float | None = None, n_bins: int = 10) -> BaselineReport:
    """The report of a result (applicable or not); `f1`: the chains' mean step-matching F1, when
    the caller has it."""
    cost = result.cost
    n = len(result.examples)
    if not result.applicable:
        return BaselineReport(method=result.method, variant=result.variant, label=result.label, applicable=False,
                              reason=result.reason, examples=0, confidence=None, parsed_only=None, answer_brier=None,
                              fallback_steps=0, fallback_answers=0, parse=None, cost=cost, cost_per_example={})
    answers = [(e.answer_confidence, int(e.chain.answer_correct)) for e in result.examples]
    return BaselineReport(
        method=result.method, variant=result.variant, label=result.label, applicable=True, reason=None, examples=n,
        confidence=confidence_columns(result, include_fallback=True, f1=f1, n_bins=n_bins),
        parsed_only=confidence_columns(result, include_fallback=False, f1=f1, n_bins=n_bins),
        answer_brier=brier([p for p, _ in answers], [y for _, y in answers]) if answers else None,
        fallback_steps=result.fallback_steps, fallback_answers=result.fallback_answers, parse=result.parse,
        cost=cost,
        cost_per_example={k: v / n for k, v in cost.model_dump().items()} if n else {},
    )
