"""Per-step rewards of the PPO stage and their placement on tokens (method.md section 5).

Per step t of a rollout (all bounded in [-1, 1]; the formulas are the project's **[choice]**,
the paper names the three terms only):

- R_KA,t = 2 * y_t - 1, knowledge accuracy; the final step uses the answer correctness a. Where
  the step's truth comes from a step judge that matched it to a reference chain (datasets
  without exact truth), R_KA,t = 2 * m_t - 1 with m_t in [0, 1] its matching degree
  (`RolloutStep.knowledge`, the paper's "matching degree"; method.md section 5); the exact
  checker's degree is y_t itself, so both formulas agree there.
- R_EC,t = 1 - 2 * (p_t - y_t)^2, expected calibration, with p_t = p(L_expr,t) = (L - 0.5) / 5
  (`confidence.fusion.level_probability`); a bounded proper scoring rule (a rescaled Brier
  score), whose optimum is to state the true probability of being right.
- R_CS,t = 1 - 2 * |L_expr,t - L_int,t| / 4, self-calibration: stated level vs internal level
  (`cs_scale="level"`, the default); or, with `cs_scale="probability"`, 1 - 2 * (p(L_expr,t) -
  p(L_int,t))^2, the same squared-probability scale as R_EC (in [-0.28, 1]). On the level scale
  one level of disagreement costs 0.5, more than R_EC can ever gain by moving one level (at most
  0.8 * |pi - p_mid| per step), so the optimum is always the internal level; on the probability
  scale one level costs 0.08, and with beta = gamma the expected optimum is the level nearest
  (pi + p_int) / 2, halfway between the step's chance of being right and the internal confidence.
- A step whose statement is unparsed (`expressed_level is None`) gets R_EC = R_CS = -1
  (`RewardConfig.unparsed_reward`); its R_KA is computed as usual.
- Total R_t = alpha * R_KA,t + beta * R_EC,t + gamma * R_CS,t (defaults 1, 1, 1; a weight of 0
  switches its term off, which is the "w/o R_xx" ablation).

Placement on tokens (`token_rewards`): each step's total sits on the last token of its
statement, and a per-token KL penalty against the reference (SFT) model is added on every
generated token (see `kl_penalty`). The KL coefficient is either fixed (`FixedKLController`)
or adapted to a target KL (`AdaptiveKLController`, Ziegler et al. 2019, "Fine-Tuning Language
Models from Human Preferences", section 2.2).

Every function here is pure (the controllers hold one float of state); nothing imports a
trainer. `RewardConfig` is the `rl.reward` config section itself (a pydantic `schema.Section`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from mmboundary.confidence.fusion import level_probability
from mmboundary.training.reward_config import RewardConfig
from mmboundary.training.rollout import N_LEVELS, Rollout, RolloutStep, StepRewards

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "RewardConfig",
    "TokenRewards",
    "assign_rewards",
    "kl_penalty",
    "mean_components",
    "r_cs",
    "r_ec",
    "r_ka",
    "reward_positions",
    "step_rewards",
    "token_rewards",
]


# --- The three components -----------------------------------------------------------------------

def r_ka(correct: int, degree: float | None = None) -> float:
    """Knowledge accuracy: R_KA = 2 * y - 1 (+1 right, -1 wrong); with a matching degree m in
    [0, 1] (`degree`, from a step judge), 2 * m - 1."""
    if isinstance(correct, bool) or correct not in (0, 1):
        raise ValueError(f"correctness must be 0 or 1, got {correct!r}")
    if degree is not None:
        if isinstance(degree, bool) or not 0.0 <= degree <= 1.0:
            raise ValueError(f"matching degree must be in [0, 1], got {degree!r}")
        return 2.0 * float(degree) - 1.0
    return 2.0 * correct - 1.0


def r_ec(expressed_level: int | None, correct: int, unparsed_reward: float = -1.0) -> float:
    """Expected calibration: R_EC = 1 - 2 * (p(L_expr) - y)^2; `unparsed_reward` if unparsed."""
    if isinstance(correct, bool) or correct not in (0, 1):
        raise ValueError(f"correctness must be 0 or 1, got {correct!r}")
    if expressed_level is None:
        return float(unparsed_reward)
    p = level_probability(expressed_level)
    return 1.0 - 2.0 * (p - correct) ** 2


def r_cs(expressed_level: int | None, internal_level: int, unparsed_reward: float = -1.0,
         scale: Literal["level", "probability"] = "level") -> float:
    """Self-calibration: R_CS = 1 - 2 * |L_expr - L_int| / 4 (`scale="level"`) or
    1 - 2 * (p(L_expr) - p(L_int))^2 (`scale="probability"`); `unparsed_reward` if unparsed.

    The divisor 4 = N_LEVELS - 1 is the largest possible level gap, so the level-scale R_CS is in
    [-1, 1]; the probability-scale one is in [1 - 2 * 0.8^2, 1] = [-0.28, 1].
    """
    p_int = level_probability(internal_level)  # validates the level
    if expressed_level is None:
        return float(unparsed_reward)
    p_expr = level_probability(expressed_level)
    if scale == "probability":
        return 1.0 - 2.0 * (p_expr - p_int) ** 2
    if scale != "level":
        raise ValueError(f"scale must be 'level' or 'probability', got {scale!r}")
    return 1.0 - 2.0 * abs(expressed_level - internal_level) / (N_LEVELS - 1)


def _one_step(step: RolloutStep, ka_target: int, ec_target: int,
              config: RewardConfig, degree: float | None = None) -> StepRewards:
    ka = r_ka(ka_target, degree)
    ec = r_ec(step.expressed_level, ec_target, config.unparsed_reward)
    cs = r_cs(step.expressed_level, step.internal_level, config.unparsed_reward, config.cs_scale)
    total = config.alpha * ka + config.beta * ec + config.gamma * cs
    return StepRewards(r_ka=ka, r_ec=ec, r_cs=cs, total=total)


def step_rewards(rollout: Rollout, config: RewardConfig | None = None) -> tuple[StepRewards, ...]:
    """The reward components and total of every step of `rollout`.

    The final step's R_KA uses the answer correctness a (`rollout.answer_correct`); its R_EC
    uses a or y_T as `config.final_ec_target` says. Every other step's R_KA uses its matching
    degree (`RolloutStep.knowledge`) when it has one, else y_t. A rollout without steps gets no step reward
    (an empty tuple); what to do with such a response is the trainer's decision.
    """
    config = config or RewardConfig()
    out = []
    last = len(rollout.steps) - 1
    for t, step in enumerate(rollout.steps):
        if t == last:
            ka_target = rollout.answer_correct
            ec_target = (rollout.answer_correct if config.final_ec_target == "answer"
                         else step.correct)
        else:
            ka_target = ec_target = step.correct
        degree = step.knowledge if t != last else None
        out.append(_one_step(step, ka_target, ec_target, config, degree))
    return tuple(out)


def assign_rewards(rollout: Rollout, config: RewardConfig | None = None) -> Rollout:
    """`rollout` with its `rewards` slot filled by `step_rewards`."""
    return rollout.with_(rewards=step_rewards(rollout, config))


def mean_components(rewards: Iterable[StepRewards]) -> dict[str, float]:
    """Mean of each component and of the total over steps, for logging each term separately.

    Returns NaN for every key when there are no steps.
    """
    rows = list(rewards)
    keys = ("r_ka", "r_ec", "r_cs", "total")
    if not rows:
        return {k: float("nan") for k in keys}
    return {k: sum(getattr(r, k) for r in rows) / len(rows) for k in keys}


# --- Placement on tokens ------------------------------------------------------------------------

def reward_positions(rollout: Rollout) -> tuple[int, ...]:
    """The generated-token index that carries each step's reward.

    The last token of the step's statement (method.md section 5). **[choice]** A step without a
    statement span carries its reward on the last token of the step itself: the step is still
    scored (R_KA counts, R_EC = R_CS = unparsed_reward), at the point where it ends.
    """
    return tuple((s.statement_end if s.statement_end is not None else s.end) - 1
                 for s in rollout.steps)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token KL penalty -kl_coef * (log pi(a_i) - log pi_ref(a_i)).

    **[choice]** The k1 estimator of KL(pi || pi_ref) on the sampled token: unbiased for the
    sequence KL under samples of pi, cheap, and exact in sum over a sequence; it can be negative
    on single tokens. Tensors of any matching shape; returns the same shape.
    """
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} and ref_logprobs "
                         f"{tuple(ref_logprobs.shape)} differ in shape")
    return -kl_coef * (logprobs - ref_logprobs)


@dataclass(frozen=True, eq=False)
class TokenRewards:
    """The per-token reward of one rollout, and its two parts (1-D tensors over its tokens).

    `score`: the step totals at `reward_positions` (0 elsewhere); `kl`: the KL penalty
    (already multiplied by -kl_coef); `total` = score + kl, what GAE receives.
    """

    score: torch.Tensor
    kl: torch.Tensor
    total: torch.Tensor


def token_rewards(rollout: Rollout, kl_coef: float,
                  rewards: Sequence[StepRewards] | None = None) -> TokenRewards:
    """Place a rollout's step rewards on its tokens and add the per-token KL penalty.

    `rewards` defaults to `rollout.rewards`. `rollout.logprobs` and `rollout.ref_logprobs`
    are needed unless `kl_coef` is 0 (then the KL part is zero). If two steps carried their
    rewards on the same token they would add up; the span checks of `Rollout` make that
    impossible.
    """
    rewards = rollout.rewards if rewards is None else tuple(rewards)
    if rewards is None:
        raise ValueError(f"{rollout.example_id}: no step rewards (call assign_rewards first)")
    if len(rewards) != len(rollout.steps):
        raise ValueError(f"{rollout.example_id}: {len(rewards)} step rewards for "
                         f"{len(rollout.steps)} steps")
    n = len(rollout.tokens)
    like = rollout.logprobs if rollout.logprobs is not None else rollout.ref_logprobs
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    score = torch.zeros(n, dtype=dtype, device=device)
    for position, reward in zip(reward_positions(rollout), rewards, strict=True):
        score[position] += reward.total
    if rollout.logprobs is None or rollout.ref_logprobs is None:
        if kl_coef != 0:
            raise ValueError(f"{rollout.example_id}: kl_coef={kl_coef} needs logprobs and "
                             "ref_logprobs")
        kl = torch.zeros_like(score)
    else:
        kl = kl_penalty(rollout.logprobs, rollout.ref_logprobs, kl_coef).to(dtype)
    return TokenRewards(score=score, kl=kl, total=score + kl)


# --- KL coefficient controllers -----------------------------------------------------------------

class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float) -> None:
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, observed_kl: float, n_steps: int) -> float:
        """No change; returns the coefficient."""
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """A KL coefficient steered towards a target KL (Ziegler et al. 2019, section 2.2).

    After a batch with mean sequence KL `observed_kl`, worth `n_steps` samples:

        e     = clip(observed_kl / target - 1, -0.2, 0.2)
        beta <- beta * (1 + e * n_steps / horizon)

    so the coefficient grows when the policy drifts further than `target` from the reference
    and shrinks when it stays closer; the proportional error is clipped at +-20% as in the
    paper, and `horizon` (in samples) sets how fast it reacts (the paper's K_beta = 0.1 per
    step corresponds to n_steps / horizon = 0.1).
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if init_kl_coef < 0 or target <= 0 or horizon <= 0:
            raise ValueError("need init_kl_coef >= 0, target > 0 and horizon > 0, got "
                             f"{init_kl_coef}, {target}, {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, observed_kl: float, n_steps: int) -> float:
        """Adapt the coefficient to the observed KL; returns the new coefficient."""
        error = min(max(observed_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = float(state["horizon"])
