"""The `rl.reward` config section (`RewardConfig`), in a module that imports nothing heavy: the
run config (`config.py`, through `training.rl_config`) loads without torch. The rewards it
configures: `training.rewards`, which re-exports it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmboundary.schema import Section

__all__ = ["RewardConfig"]


class RewardConfig(Section):
    """Weights and options of the per-step reward: the `rl.reward` config section.

    - `alpha`, `beta`, `gamma`: weights of R_KA, R_EC, R_CS (paper's names; default 1 each;
      0 switches a term off).
    - `unparsed_reward`: R_EC and R_CS of a step whose statement maps to no level
      (method.md: -1, the lowest value either term can take otherwise).
    - `final_ec_target` **[choice]**: the correctness R_EC of the *final* step is scored
      against. "answer" (default): the answer correctness a, since the final step states the
      answer and its confidence is the answer confidence that the answer-level ECE evaluates
      (method.md section 6); "step": the step's own y_t, like every other step.
    - `cs_scale` **[choice]**: R_CS on the level scale (default, "level") or on R_EC's
      squared-probability scale ("probability"); see the module docstring.

    The field order is the YAML order of `rl.reward` in saved configs (compare fingerprints hash
    that text): new fields go at the end.
    """

    alpha: float = Field(1.0, description="Weight of R_KA (knowledge accuracy). Paper: 1; 0 = the 'w/o R_KA' ablation.")
    beta: float = Field(1.0, description="Weight of R_EC (expected calibration). Paper: 1; 0 = 'w/o R_EC'.")
    gamma: float = Field(1.0, description="Weight of R_CS (self-calibration). Paper: 1; 0 = 'w/o R_CS'.")
    unparsed_reward: float = Field(
        -1.0, description="R_EC and R_CS of a step whose statement maps to no level (method.md: -1).")
    final_ec_target: Literal["answer", "step"] = Field(
        "answer", description="**[choice]** What the final step's R_EC is scored against: the answer "
        "correctness a ('answer', the answer-level confidence that ECE evaluates) or its own y_t ('step').")
    cs_scale: Literal["level", "probability"] = Field(
        "level", description="**[choice]** The scale of R_CS: 'level', 1 - 2|L_expr - L_int|/4, or "
        "'probability', 1 - 2(p(L_expr) - p(L_int))^2, R_EC's scale (docs/defaults.md, section rl).")
