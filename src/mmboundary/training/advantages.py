"""Advantage estimation for the PPO stage (method.md section 5).

Two estimators, both pure functions over tensors / typed records:

1. `gae`: Generalized Advantage Estimation over tokens with a value head (Schulman et al. 2016,
   "High-Dimensional Continuous Control Using Generalized Advantage Estimation", eq. 16):

       delta_i = r_i + gamma * V(s_{i+1}) - V(s_i)
       A_i     = delta_i + gamma * lambda * A_{i+1}
       R_i     = A_i + V(s_i)              (the value head's regression target)

   over the generated tokens of each sequence, with V = 0 after the last token (the response is
   over: terminal value 0). The per-token rewards come from `rewards.token_rewards`. This is the
   method's estimator (section 5: "advantages by GAE over tokens with a value head").

2. `group_normalized_step_advantages` (+ `broadcast_step_values`, `group_token_advantages`):
   a critic-free estimator for several samples per question, with per-step returns normalised
   over the question's group (in the spirit of GRPO with process supervision, Shao et al. 2024,
   "DeepSeekMath", section 4.1.3). Not in the paper; an alternative the project offers.

`whiten` normalises advantages over the valid tokens of a batch (PPO's advantage whitening).
Masks are bool (or 0/1) tensors, True on real tokens; masked (padding) positions never
influence a real position and come out as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mmboundary.training.rollout import Rollout

__all__ = [
    "broadcast_step_values",
    "gae",
    "group_normalized_step_advantages",
    "group_token_advantages",
    "masked_mean",
    "masked_var",
    "step_returns",
    "whiten",
]


def _as_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if mask.shape != like.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from {tuple(like.shape)}")
    return mask.to(torch.bool)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is True (all of them pooled, a scalar).

    Raises ValueError when the mask selects nothing.
    """
    m = _as_mask(mask, x)
    count = m.sum()
    if int(count) == 0:
        raise ValueError("masked_mean over an empty mask")
    return torch.where(m, x, torch.zeros_like(x)).sum() / count


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Variance of `x` over the masked positions.

    **[choice]** The population variance (divide by n, no Bessel correction): it is defined for a
    single token (0) and the difference from n - 1 is negligible at batch sizes of tokens.
    """
    m = _as_mask(mask, x)
    mean = masked_mean(x, m)
    centred = torch.where(m, x - mean, torch.zeros_like(x))
    return (centred**2).sum() / m.sum()


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
           eps: float = 1e-8) -> torch.Tensor:
    """Advantage whitening: (x - mean) / sqrt(var + eps) over the masked positions.

    With `shift_mean=False` the mean is added back ((x - mean) / std + mean): the scale is
    normalised but the sign balance of the advantages is kept. Masked positions come out 0.
    """
    m = _as_mask(mask, x)
    mean = masked_mean(x, m)
    var = masked_var(x, m)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m, out, torch.zeros_like(out))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None,
        gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and returns over tokens.

    Args:
        rewards: [B, T] (or [T]) per-token rewards (step rewards + KL penalty).
        values: same shape, V(s_i) of the state in which token i is generated.
        mask: same shape, True on real tokens; None = all real.
        gamma, lam: discount and GAE lambda. gamma = lambda = 1 gives A_i = (sum of rewards
            from i to the end) - V(s_i); lambda = 0 gives the one-step TD errors.

    Returns (advantages, returns), both shaped like `rewards`, 0 on masked positions.

    The recursion runs backwards over real positions only: a masked position is skipped (its
    reward and value are never read), so the "next" state of a real token is the next *real*
    token, or the terminal state (value 0) after the sequence's last real token. This makes
    right padding, left padding and garbage in padded slots all harmless. The defaults
    gamma = 1, lambda = 0.95 are **[choice]**s common for language-model PPO (an episode is
    one short response; no discount within it).
    """
    if rewards.shape != values.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and values {tuple(values.shape)} "
                         "differ in shape")
    squeeze = rewards.dim() == 1
    if squeeze:
        rewards, values = rewards.unsqueeze(0), values.unsqueeze(0)
        mask = None if mask is None else mask.unsqueeze(0)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [T] or [B, T], got {tuple(rewards.shape)}")
    m = torch.ones_like(rewards, dtype=torch.bool) if mask is None else _as_mask(mask, rewards)
    values = values.detach().to(rewards.dtype)
    rewards = rewards.detach()
    batch, length = rewards.shape
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(batch, dtype=rewards.dtype, device=rewards.device)
    next_advantage = torch.zeros_like(next_value)
    for i in range(length - 1, -1, -1):
        real = m[:, i]
        delta = rewards[:, i] + gamma * next_value - values[:, i]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, i] = torch.where(real, advantage, torch.zeros_like(advantage))
        next_value = torch.where(real, values[:, i], next_value)
        next_advantage = torch.where(real, advantage, next_advantage)
    returns = torch.where(m, advantages + values, torch.zeros_like(advantages))
    if squeeze:
        return advantages[0], returns[0]
    return advantages, returns


# --- Critic-free: group-normalised per-step returns ---------------------------------------------

def step_returns(rewards: Sequence[float], discount: float = 1.0) -> list[float]:
    """Return of each step: G_t = sum_{k >= t} discount^(k - t) * r_k (undiscounted by default)."""
    out = [0.0] * len(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = float(rewards[t]) + discount * running
        out[t] = running
    return out


def group_normalized_step_advantages(group: Sequence[Sequence[float]], discount: float = 1.0,
                                     eps: float = 1e-6) -> list[list[float]]:
    """Per-step advantages of the samples of one question, normalised over the group.

    `group[j][t]` is the total reward of step t of sample j. Each sample's step returns G_jt
    come from `step_returns`; then **[choice]** A_jt = (G_jt - mean) / (std + eps), where mean
    and std (population, divide by n) are over *all step returns of all samples in the group*
    pooled (a sample with more steps contributes more returns, as in GRPO's process
    supervision). If every return is equal, all advantages are 0. A sample without steps gets
    an empty list; a group without any step returns empty lists.
    """
    returns = [step_returns(rewards, discount) for rewards in group]
    pooled = [g for sample in returns for g in sample]
    if not pooled:
        return [[] for _ in group]
    mean = sum(pooled) / len(pooled)
    std = math.sqrt(sum((g - mean) ** 2 for g in pooled) / len(pooled))
    return [[(g - mean) / (std + eps) for g in sample] for sample in returns]


def broadcast_step_values(rollout: Rollout, per_step: Sequence[float],
                          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Spread one value per step over the rollout's tokens (1-D, length `len(rollout)`).

    Tokens of step t get per_step[t]. **[choice]** A token outside every step gets the value of
    the *next* step after it (tokens before the first step and between two steps precede, and
    so share the return-to-go of, that step's reward); tokens after the last step (e.g. the
    end-of-sequence token) get 0, i.e. no policy gradient in the critic-free estimator. Callers
    that want to train only inside steps can also pass a step-token mask to the loss.
    """
    if len(per_step) != len(rollout.steps):
        raise ValueError(f"{rollout.example_id}: {len(per_step)} step values for "
                         f"{len(rollout.steps)} steps")
    out = torch.zeros(len(rollout), dtype=dtype or torch.get_default_dtype())
    previous_end = 0
    for step, value in zip(rollout.steps, per_step, strict=True):
        out[previous_end: step.end] = float(value)
        previous_end = step.end
    return out


def group_token_advantages(rollouts: Sequence[Rollout], discount: float = 1.0,
                           eps: float = 1e-6) -> list[torch.Tensor]:
    """Critic-free per-token advantages for the samples of one question.

    Reads each rollout's step totals (`rollout.rewards`, see `rewards.assign_rewards`),
    normalises the step returns over the group (`group_normalized_step_advantages`) and
    spreads them over tokens (`broadcast_step_values`). The KL penalty is not part of these
    returns; a caller using this estimator adds a KL term to the loss instead.
    """
    group = []
    for r in rollouts:
        if r.rewards is None:
            raise ValueError(f"{r.example_id}: no step rewards (call assign_rewards first)")
        group.append([s.total for s in r.rewards])
    per_step = group_normalized_step_advantages(group, discount, eps)
    return [broadcast_step_values(r, a) for r, a in zip(rollouts, per_step, strict=True)]


# --- Critic-free, per statement: a leave-one-out baseline within (correctness, internal level) ---

def cell_sums(values: Sequence[float], cells: Sequence[int], n_cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell sums and counts of `values` (float64 tensors of length `n_cells`); a caller
    with several processes adds them up over all processes before `leave_one_out_advantages`."""
    sums = torch.zeros(n_cells, dtype=torch.float64)
    counts = torch.zeros(n_cells, dtype=torch.float64)
    for v, c in zip(values, cells, strict=True):
        if not 0 <= c < n_cells:
            raise ValueError(f"cell {c} is outside 0..{n_cells - 1}")
        sums[c] += float(v)
        counts[c] += 1.0
    return sums, counts


def leave_one_out_advantages(values: Sequence[float], cells: Sequence[int], sums: torch.Tensor,
                             counts: torch.Tensor) -> list[float]:
    """A_i = v_i - (mean of v_j over the OTHER items j of i's cell), 0 for an item alone in its
    cell. `sums`, `counts`: per-cell totals over the whole batch (`cell_sums`, summed over
    processes), which must include the items given here.

    Used for the statement tokens ('statement' advantage of the RL stage): v is a step's
    calibration reward (beta R_EC + gamma R_CS) and the cell is (step correctness, internal
    level), the two facts of the step that the statement after it cannot change. Items of one
    cell are steps in the same situation that said different things, so the difference is the
    credit of what was said; a baseline that does not depend on the item's own action keeps the
    policy gradient unbiased (leave-one-out), and it removes the variance of R_KA (fixed by the
    step text before the statement) exactly."""
    out = []
    for v, c in zip(values, cells, strict=True):
        n = float(counts[c])
        if n < 1:
            raise ValueError(f"cell {c}: counts do not include this item")
        out.append(0.0 if n <= 1 else float(v) - (float(sums[c]) - float(v)) / (n - 1.0))
    return out
