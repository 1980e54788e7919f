"""PPO on scored samples: the batch (rewards and advantages), the loss and the update.

    prepare_batch   step rewards (`rewards.assign_rewards` under `cfg.reward`), placed on tokens
                    with the KL penalty (`rewards.token_rewards`), and the advantages of the
                    estimator `cfg.advantage` names (`estimators`) -> `PPOBatch`
    ppo_loss        clipped policy loss + vf_coef * clipped value loss (- ent_coef * entropy)
                    (+ kl_coef * k3 KL for a critic-free estimator) (+ anchor_coef * k3 KL on
                    the tokens outside the policy loss), as token means over the GLOBAL minibatch
    ppo_update      `ppo_epochs` passes over shuffled minibatches, one guarded optimiser step
                    each (`rl_update.minibatch_updates`)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mmboundary.confidence.scorer import response_inputs
from mmboundary.training.estimators import AdvantageInputs, advantage_estimator
from mmboundary.training.ppo_math import batch_token_mask, k3_kl_sum, policy_loss, value_loss
from mmboundary.training.rewards import assign_rewards, token_rewards
from mmboundary.training.rl_config import RLConfig
from mmboundary.training.rl_update import minibatch_updates, reduce_sum
from mmboundary.training.rollout import pad_right
from mmboundary.training.samples import Sample
from mmboundary.training.scoring import response_scores

log = logging.getLogger("mmboundary.rl")

__all__ = ["PPOBatch", "ppo_loss", "ppo_update", "prepare_batch"]


@dataclass(eq=False)
class PPOBatch:
    """One process's rollout batch, ready for PPO: [B, L] tensors (right padded) on the CPU.

    `rewards`: the per-token reward the estimator receives (step totals on their statements'
    last tokens + KL penalty; no KL for a critic-free estimator, where the KL goes into the
    loss); `score`: its step part alone; `policy_mask`: tokens of the policy loss (`loss_on`);
    `value_mask`: every real token of an active sample."""

    samples: list[Sample]
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    ref_logprobs: torch.Tensor
    rewards: torch.Tensor
    score: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    policy_mask: torch.Tensor
    value_mask: torch.Tensor
    kl_coef: float
    stats: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def minibatch(self, idx: list[int], length: int, device=None) -> PPOMinibatch:
        """Rows `idx`, cut to `length` tokens, on `device`."""
        return PPOMinibatch(**{f.name: getattr(self, f.name)[idx, :length].to(device)
                               for f in dataclasses.fields(PPOMinibatch)})


@dataclass(frozen=True, eq=False)
class PPOMinibatch:
    """The tensors of one (local) minibatch that `ppo_loss` reads ([b, l], on the model's device)."""

    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    ref_logprobs: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    policy_mask: torch.Tensor
    value_mask: torch.Tensor


def _finite(t: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)


def prepare_batch(samples: Sequence[Sample], cfg: RLConfig, kl_coef: float, accelerator=None) -> PPOBatch:
    """Rewards and advantages of scored samples (`scoring.score_samples`).

    Step rewards come from `rewards.assign_rewards` under `cfg.reward`; `rewards.token_rewards`
    places them on tokens and adds the KL penalty with `kl_coef` (critic-based estimators only).
    A response without steps gets `cfg.empty_response_reward` on its last token. A sample with a
    non-finite reward or log-prob is made inactive. The advantages are those of the estimator
    `cfg.advantage` names (`estimators.advantage_estimator`), 0 outside `value_mask`."""
    estimator = advantage_estimator(cfg.advantage)
    samples = [dataclasses.replace(s, rollout=assign_rewards(s.rollout, cfg.reward)) for s in samples]
    rollouts = [s.rollout for s in samples]
    for r in rollouts:
        if r.logprobs is None or r.ref_logprobs is None or r.values is None:
            raise ValueError(f"{r.example_id}: score the samples (score_samples) before prepare_batch")
    reward_kl = kl_coef if estimator.critic else 0.0
    totals, scores = [], []
    for s in samples:
        tr = token_rewards(s.rollout, reward_kl)
        score = tr.score.clone()
        if not s.rollout.steps:
            score[-1] += cfg.empty_response_reward
        scores.append(score)
        totals.append(score + tr.kl)
    finite = [bool(torch.isfinite(t).all()) and bool(torch.isfinite(s.rollout.logprobs).all())
              and bool(torch.isfinite(s.rollout.ref_logprobs).all()) for t, s in zip(totals, samples)]
    if not all(finite):
        log.warning("rl: %d sample(s) with a non-finite reward or log-prob left out of the update",
                    finite.count(False))
        samples = [s if ok else dataclasses.replace(s, active=False) for s, ok in zip(samples, finite)]
        totals = [_finite(t) for t in totals]
        scores = [_finite(t) for t in scores]
        rollouts = [s.rollout for s in samples]
    rewards, real = pad_right(totals)
    score, _ = pad_right(scores)
    old_logp = _finite(pad_right([r.logprobs.float() for r in rollouts])[0])
    old_values = _finite(pad_right([r.values.float() for r in rollouts])[0])
    ref_logp = _finite(pad_right([r.ref_logprobs.float() for r in rollouts])[0])
    active = torch.tensor([s.active for s in samples], dtype=torch.bool).unsqueeze(1)
    value_mask = real & active
    policy_mask = batch_token_mask(rollouts, length=real.shape[1], which=cfg.loss_on) & value_mask
    est = estimator(AdvantageInputs(samples=samples, rewards=rewards, values=old_values, mask=value_mask), cfg,
                    accelerator)
    adv = torch.where(value_mask, est.advantages, torch.zeros_like(est.advantages))
    return PPOBatch(samples=list(samples), old_logprobs=old_logp, old_values=old_values, ref_logprobs=ref_logp,
                    rewards=rewards, score=score, advantages=adv, returns=est.returns, policy_mask=policy_mask,
                    value_mask=value_mask, kl_coef=float(kl_coef))


def ppo_loss(logp_new: torch.Tensor, values_new: torch.Tensor | None, entropy: torch.Tensor | None,
             mb: PPOMinibatch, cfg: RLConfig, kl_coef: float,
             global_policy_tokens: float, global_value_tokens: float, world_size: int = 1,
             global_anchor_tokens: float = 1.0):
    """The loss of one (local) minibatch and its statistics as local SUMS over counted tokens.

    loss = N/P * [sum_policy-tokens (clipped surrogate - ent_coef * entropy [+ kl_coef * k3 KL
    to the reference for a critic-free estimator])] + vf_coef * N/V * sum_value-tokens (clipped
    value loss, critic-based estimators only) + anchor_coef * N/A * sum_anchor-tokens (k3 KL,
    with `loss_on='statements'`), where P, V, A are the token counts of the GLOBAL minibatch and
    N the number of processes: with DDP's gradient averaging, the gradient is that of token
    means over the global minibatch. Each term is built from `ppo_math.policy_loss` /
    `value_loss` (local masked means) times the local count. Only tokens in `mb.policy_mask`
    reach the policy term."""
    critic = advantage_estimator(cfg.advantage).critic
    pmask = mb.policy_mask
    vmask = mb.value_mask
    n_p = int(pmask.sum())
    n_v = int(vmask.sum())
    zero = logp_new.sum() * 0.0
    stats = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0,
             "value_clip_fraction": 0.0, "kl_ref": 0.0, "policy_tokens": float(n_p), "value_tokens": float(n_v)}
    loss = zero
    if n_p:
        pl = policy_loss(logp_new, mb.old_logprobs, mb.advantages, pmask, cfg.clip_eps)
        term = pl.loss
        stats["policy_loss"] = float(pl.loss.detach()) * n_p
        stats["clip_fraction"] = float(pl.clip_fraction) * n_p
        stats["approx_kl"] = float(pl.approx_kl) * n_p
        if entropy is not None:
            ent = (torch.where(pmask, entropy, torch.zeros_like(entropy))).sum() / n_p
            stats["entropy"] = float(ent.detach()) * n_p
            if cfg.ent_coef:
                term = term - cfg.ent_coef * ent
        # KL to the reference on the sampled tokens (k3, non-negative), always logged; in the loss
        # only for a critic-free estimator (a critic-based one has it in the reward).
        kl = k3_kl_sum(logp_new, mb.ref_logprobs, pmask) / n_p
        stats["kl_ref"] = float(kl.detach()) * n_p
        if not critic and kl_coef:
            term = term + kl_coef * kl
        loss = loss + term * (n_p * world_size / global_policy_tokens)
    amask = vmask & ~pmask
    n_a = int(amask.sum())
    stats["anchor_tokens"] = float(n_a)
    stats["kl_anchor"] = 0.0
    if cfg.loss_on == "statements" and n_a:
        ka = k3_kl_sum(logp_new, mb.ref_logprobs, amask) / n_a
        stats["kl_anchor"] = float(ka.detach()) * n_a
        if cfg.anchor_coef:
            loss = loss + cfg.anchor_coef * ka * (n_a * world_size / max(global_anchor_tokens, 1.0))
    if values_new is not None and critic and n_v:
        vl = value_loss(values_new, mb.old_values, mb.returns, vmask, cfg.value_clip)
        stats["value_loss"] = float(vl.loss.detach()) * n_v
        stats["value_clip_fraction"] = float(vl.clip_fraction) * n_v
        loss = loss + cfg.vf_coef * vl.loss * (n_v * world_size / global_value_tokens)
    return loss, stats


def ppo_update(policy_value, vlm, batch: PPOBatch, cfg: RLConfig, accelerator, optimizer,
               scheduler=None, generator: torch.Generator | None = None) -> dict[str, float]:
    """`cfg.ppo_epochs` passes of shuffled minibatches (`cfg.minibatch_size` samples per process)
    over `batch`; one optimiser step per minibatch. Returns the token-weighted means of the loss
    statistics over the whole update (all processes) and `nonfinite_skipped`.

    - `policy_value`: the (accelerate-prepared) `PolicyWithValue`; `vlm`: the `VLM` whose
      `encode` builds the prompts (its model is the unwrapped policy);
    - every process must call it with a batch of the same length (same number of steps).
    The model runs in eval mode (`rl_update.minibatch_updates`)."""
    world = accelerator.num_processes if accelerator is not None else 1
    generator = generator or torch.Generator().manual_seed(0)
    device = accelerator.device if accelerator is not None else vlm.device
    critic = advantage_estimator(cfg.advantage).critic

    def loss_of(idx: list[int]):
        chunk = [batch.samples[i] for i in idx]
        tokens = [s.rollout.tokens for s in chunk]
        length = max(len(t) for t in tokens)
        mb = batch.minibatch(idx, length, device)
        g_p, g_v, g_a = reduce_sum([mb.policy_mask.sum(), mb.value_mask.sum(),
                                    (mb.value_mask & ~mb.policy_mask).sum()], accelerator)
        inputs, n_prompt = response_inputs(vlm, [s.prompt for s in chunk], [s.image for s in chunk], tokens)
        logits, values = policy_value(**inputs)
        logp, vals, ent, _ = response_scores(logits, values, n_prompt, tokens, with_entropy=True,
                                             temperature=cfg.temperature)
        return ppo_loss(logp, vals, ent, mb, cfg, batch.kl_coef, max(g_p, 1.0), max(g_v, 1.0), world, max(g_a, 1.0))

    done = minibatch_updates(len(batch), cfg, generator, loss_of, policy_value, accelerator, optimizer, scheduler)
    keys = sorted(done.totals)
    reduced = dict(zip(keys, reduce_sum([done.totals[k] for k in keys], accelerator)))
    out: dict[str, float] = {}
    p_tok, v_tok = reduced.get("policy_tokens", 0.0), reduced.get("value_tokens", 0.0)
    for k in ("policy_loss", "entropy", "clip_fraction", "approx_kl", "kl_ref"):
        out[k] = reduced.get(k, 0.0) / p_tok if p_tok else float("nan")
    a_tok = reduced.get("anchor_tokens", 0.0)
    out["kl_anchor"] = reduced.get("kl_anchor", 0.0) / a_tok if a_tok else float("nan")
    for k in ("value_loss", "value_clip_fraction"):
        out[k] = reduced.get(k, 0.0) / v_tok if v_tok and critic else float("nan")
    out["optimizer_steps"] = float(done.steps)
    out["nonfinite_skipped"] = float(reduce_sum([done.skipped], accelerator)[0] / world)
    return out
