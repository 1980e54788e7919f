"""The confidence scale: five levels, 1 = least confident .. 5 = most (method.md section 3).

The one home of the level count; `confidence.fusion`, `statements.pool` and `training.rollout`
take it from here."""

from __future__ import annotations

#: Number of confidence levels.
N_LEVELS = 5
#: The levels, in order.
LEVELS: tuple[int, ...] = tuple(range(1, N_LEVELS + 1))
