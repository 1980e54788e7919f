"""Statement granularity: one statement per step (MMBoundary) or one per answer (SaySelf-style).

MMBoundary writes a confidence statement after every reasoning step (method.md section 1). The
SaySelf baseline (Xu et al. 2024, "SaySelf: Teaching LLMs to Express Fine-Grained Confidence
Estimates and Self-Reflective Rationales", EMNLP 2024) states one confidence for the whole answer.
method.md section 7 and issue 6 define it here as "the same pipeline at answer granularity":
`statements.granularity: answer` writes one statement, after the final step, in the SFT data; the
rl stage scores one step per response (the whole chain, stated level = the final statement's,
correctness = the answer's: `training.rollout.answer_rollout`), so with `rl.reward.alpha=0` and
`gamma=0` its reward is the answer-level calibration reward R_EC = 1 - 2 (p - a)^2; at evaluation
every step carries the answer's level, so that step-level MECE and AUROC are defined for it as
the paper's table reports them.

Departures from SaySelf, all **[choice]**: the answer's level comes from the internal
confidence of its steps (`answer_level`: their levels' mean, rounded half up), not from the
disagreement of sampled answers and a reflective rationale (the tiny model cannot write one); the
statement is the same pool's clause as MMBoundary's, not a number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Granularity = Literal["step", "answer"]

__all__ = ["Granularity", "answer_level", "spread_answer_level"]


def answer_level(step_levels: Sequence[int]) -> int:
    """The level of a whole answer from its steps' levels: their mean rounded half up
    ([2, 3] -> 3, [1, 2, 4] -> 2)."""
    if not step_levels:
        raise ValueError("an answer with no steps has no level")
    return int(math.floor(sum(int(v) for v in step_levels) / len(step_levels) + 0.5))


def spread_answer_level(levels: Sequence[int | None]) -> list[int | None]:
    """Per-step levels of an answer-granularity chain: every step carries the level stated after
    the final step (None for all when the final statement is missing or unparsed)."""
    if not levels:
        return []
    return [levels[-1]] * len(levels)
