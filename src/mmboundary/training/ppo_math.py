"""The losses and statistics of a PPO update (method.md section 5).

PPO with a clipped surrogate objective (Schulman et al. 2017, "Proximal Policy Optimization
Algorithms", eq. 7), value clipping (as in the PPO reference implementation, OpenAI baselines
ppo2) and an entropy statistic; all over per-token torch tensors [B, T] with a mask that is
True on the tokens the loss counts (real tokens; or, to restrict the loss, only the statement
tokens: `statement_token_mask`).

**[choice]** Every mean here is a token-level mean pooled over the whole batch (each counted
token weighs the same, so long responses weigh more than short ones), not a mean of
per-sequence means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmboundary.training.advantages import masked_mean
from mmboundary.training.rollout import Rollout

__all__ = [
    "PolicyLoss",
    "ValueLoss",
    "approx_kl",
    "batch_token_mask",
    "clip_fraction",
    "entropy_from_logits",
    "k3_kl_sum",
    "masked_entropy",
    "policy_loss",
    "statement_token_mask",
    "step_token_mask",
    "value_loss",
]


@dataclass(frozen=True, eq=False)
class PolicyLoss:
    """The clipped policy loss (differentiable) and its statistics (detached scalars)."""

    loss: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor


@dataclass(frozen=True, eq=False)
class ValueLoss:
    """The clipped value loss (differentiable) and the fraction of tokens where clipping won."""

    loss: torch.Tensor
    clip_fraction: torch.Tensor


def _check_shapes(*tensors: torch.Tensor) -> None:
    shape = tensors[0].shape
    for t in tensors[1:]:
        if t.shape != shape:
            raise ValueError(f"shape mismatch: {tuple(shape)} vs {tuple(t.shape)}")


def policy_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_eps: float = 0.2) -> PolicyLoss:
    """PPO's clipped surrogate loss.

    ratio = exp(logp_new - logp_old);
    loss = masked mean of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)).

    Masked positions are replaced before the exponential, so padding (even inf/NaN there)
    never reaches the loss or its gradient.
    """
    _check_shapes(logp_new, logp_old, advantages, mask)
    m = mask.to(torch.bool)
    log_ratio = torch.where(m, logp_new - logp_old.detach(), torch.zeros_like(logp_new))
    ratio = torch.exp(log_ratio)
    adv = torch.where(m, advantages.detach(), torch.zeros_like(advantages)).to(ratio.dtype)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), m)
    with torch.no_grad():
        stats_clip = clip_fraction(ratio, m, clip_eps)
        stats_kl = approx_kl(log_ratio, m)
    return PolicyLoss(loss=loss, clip_fraction=stats_clip, approx_kl=stats_kl)


def clip_fraction(ratio: torch.Tensor, mask: torch.Tensor, clip_eps: float = 0.2) -> torch.Tensor:
    """**[choice]** Share of counted tokens whose ratio lies outside [1 - eps, 1 + eps]
    (|ratio - 1| > eps), the usual PPO diagnostic; on such tokens the clipped term caps the
    objective whenever the advantage pushes the ratio further out."""
    _check_shapes(ratio, mask)
    outside = ((ratio.detach() - 1.0).abs() > clip_eps).to(ratio.dtype)
    return masked_mean(outside, mask)


def approx_kl(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Estimate of KL(pi_old || pi_new) from tokens sampled by pi_old.

    **[choice]** The k3 estimator (ratio - 1) - log ratio with ratio = pi_new / pi_old:
    unbiased, and non-negative on every token (unlike -log ratio). `log_ratio` = logp_new -
    logp_old.
    """
    _check_shapes(log_ratio, mask)
    m = mask.to(torch.bool)
    lr = torch.where(m, log_ratio.detach(), torch.zeros_like(log_ratio))
    return masked_mean(torch.expm1(lr) - lr, m)


def k3_kl_sum(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over the masked tokens of the k3 estimate of KL(pi || pi_ref) on tokens of pi:
    (r - 1) - log r with log r = ref_logp - logp; non-negative on every token, differentiable in
    `logp` (the caller divides by its token count)."""
    _check_shapes(logp, ref_logp, mask)
    lr = torch.where(mask.to(torch.bool), ref_logp - logp, torch.zeros_like(logp))
    return (torch.expm1(lr) - lr).sum()


def value_loss(values_new: torch.Tensor, values_old: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, clip_range: float | None = 0.2) -> ValueLoss:
    """Clipped value loss: masked mean of 0.5 * max((v - R)^2, (v_clip - R)^2), with
    v_clip = v_old + clip(v - v_old, -clip_range, clip_range). `clip_range=None` turns clipping
    off (plain 0.5 * (v - R)^2). Note that clip_range is in reward units."""
    _check_shapes(values_new, values_old, returns, mask)
    m = mask.to(torch.bool)
    zero = torch.zeros_like(values_new)
    v = torch.where(m, values_new, zero)
    v_old = torch.where(m, values_old.detach().to(v.dtype), zero)
    target = torch.where(m, returns.detach().to(v.dtype), zero)
    unclipped = (v - target) ** 2
    if clip_range is None:
        return ValueLoss(loss=0.5 * masked_mean(unclipped, m),
                         clip_fraction=torch.zeros((), dtype=v.dtype))
    v_clipped = v_old + torch.clamp(v - v_old, -clip_range, clip_range)
    clipped = (v_clipped - target) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), m)
    with torch.no_grad():
        fraction = masked_mean((clipped > unclipped).to(v.dtype), m)
    return ValueLoss(loss=loss, clip_fraction=fraction)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the softmax distribution over the last dimension: [..., V] -> [...].

    Computed in at least float32 from log_softmax (stable for large logits). Tokens with
    probability 0 (logit -inf, e.g. a banned token) contribute 0, with a finite gradient."""
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    log_p = torch.log_softmax(x, dim=-1)
    p = log_p.exp()
    safe_log_p = torch.where(p > 0, log_p, torch.zeros_like(log_p))
    return -(p * safe_log_p).sum(dim=-1)


def masked_entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean entropy over the counted tokens; logits [B, T, V], mask [B, T]."""
    return masked_mean(entropy_from_logits(logits), mask)


# --- Token masks from rollout records -----------------------------------------------------------

def _span_mask(rollout: Rollout, statements: bool) -> torch.Tensor:
    mask = torch.zeros(len(rollout), dtype=torch.bool)
    for step in rollout.steps:
        if statements:
            if step.statement_start is not None:
                mask[step.statement_start: step.statement_end] = True
        else:
            mask[step.start: step.end] = True
    return mask


def statement_token_mask(rollout: Rollout) -> torch.Tensor:
    """True on the tokens of the rollout's confidence statements (1-D, length `len(rollout)`).

    A step without a statement span contributes no token. Pass it (padded, see
    `batch_token_mask`) as the loss mask to train only the statements.
    """
    return _span_mask(rollout, statements=True)


def step_token_mask(rollout: Rollout) -> torch.Tensor:
    """True on the tokens inside any step span (1-D, length `len(rollout)`)."""
    return _span_mask(rollout, statements=False)


def batch_token_mask(rollouts: Sequence[Rollout], length: int | None = None,
                     which: str = "all") -> torch.Tensor:
    """A right-padded [B, T] bool mask for a batch of rollouts.

    `which`: "all" (every generated token), "steps" (`step_token_mask`) or "statements"
    (`statement_token_mask`). Padding is False. `length` defaults to the longest rollout.
    """
    if which not in ("all", "steps", "statements"):
        raise ValueError(f"which must be 'all', 'steps' or 'statements', got {which!r}")
    longest = max((len(r) for r in rollouts), default=0)
    length = longest if length is None else length
    if length < longest:
        raise ValueError(f"length {length} is shorter than the longest rollout ({longest})")
    out = torch.zeros((len(rollouts), length), dtype=torch.bool)
    for i, r in enumerate(rollouts):
        if which == "all":
            out[i, : len(r)] = True
        elif which == "steps":
            out[i, : len(r)] = step_token_mask(r)
        else:
            out[i, : len(r)] = statement_token_mask(r)
    return out
