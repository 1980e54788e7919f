"""The model side of `rl.algorithm: expected` (the objective itself: `level_objective`).

Per iteration, on the greedy chains of the iteration's questions (`samples.collect_samples`):

1. `prepare_level_batch`: for every step with a statement clause, the response up to the step's
   last comma followed by each level's statement(s) (`level_objective.level_alternatives`),
   tokenised as the SFT data was (the tokenizer on the response text); the tokens that differ from
   the shared prefix are the statement's; the reward table R_t(l) (`level_reward_table`, the
   rewards PPO uses) and the frozen SFT model's level log-probabilities (no gradient, once).
2. `level_update`: `ppo_epochs` passes over shuffled minibatches of `minibatch_size` chains; per
   minibatch ONE forward pass of the policy over all its alternatives and its chains, loss =
   mean over the minibatch's steps of (-expected reward + kl_coef * KL(q || q_ref)) +
   anchor_coef * k3 KL to the SFT model on the chains' non-statement tokens (`ppo.ppo_loss`'s
   anchor), one guarded optimiser step (`rl_update.minibatch_updates`, shared with PPO). One
   process only for now (`train_rl` says so before it starts).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmboundary.confidence.scorer import ScoringContext, response_inputs
from mmboundary.training.level_objective import (
    expected_level_loss,
    level_alternatives,
    level_logprobs,
    level_reward_table,
)
from mmboundary.training.ppo_math import k3_kl_sum
from mmboundary.training.rl_config import RLConfig
from mmboundary.training.rl_update import minibatch_updates, reduce_sum
from mmboundary.training.rollout import N_LEVELS
from mmboundary.training.scoring import reference_logits, response_scores

log = logging.getLogger("mmboundary.rl")

__all__ = ["LevelChain", "level_phrases", "level_update", "prepare_level_batch"]


@dataclass(eq=False)
class LevelChain:
    """One greedy chain's alternatives: `tokens[i]` the response token ids of alternative i
    (step-major, then level, then phrasing), `starts[i]` the index of its first statement token;
    `rewards` [S, 5], `ref_level_logp` [S, 5] for its S steps with a statement clause."""

    sample: Any
    tokens: list[list[int]]
    starts: list[int]
    rewards: torch.Tensor
    ref_level_logp: torch.Tensor

    @property
    def steps(self) -> int:
        return int(self.rewards.shape[0])


def level_phrases(mapper, phrasings: int) -> list[list[str]]:
    """Level -> the statements whose probabilities make the level's: the first `phrasings` of
    each level's pool (a mapper with a `pool`), else the mapper's one statement per level."""
    pool = getattr(mapper, "pool", None)
    if pool is not None:
        return [list(pool[level][:phrasings]) for level in range(1, N_LEVELS + 1)]
    return [[mapper.statement(level)] for level in range(1, N_LEVELS + 1)]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _alternatives(tokenizer, sample, phrases: list[list[str]]) -> tuple[list[list[int]], list[int], list[int]]:
    """Token ids and statement starts of every alternative of a chain, and the indices (into the
    parsed steps) of the steps that have them."""
    tokens, starts, kept = [], [], []
    parsed = sample.parsed
    for t, st in enumerate(parsed.steps):
        if st.statement_span is None:
            continue
        # the sentence's last comma (body_span ends there only when the statement was mapped)
        comma = parsed.response.rfind(",", st.span[0], st.statement_span[0])
        if comma < 0:
            continue
        alt = level_alternatives(parsed.response, comma, st.statement_span[1], st.span[1], phrases)
        prefix_ids = tokenizer(alt.prefix, add_special_tokens=False)["input_ids"]
        for level_texts in alt.texts:
            for text in level_texts:
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                tokens.append(ids)
                starts.append(min(_common_prefix(prefix_ids, ids), len(ids) - 1))
        kept.append(t)
    return tokens, starts, kept


def _sequence_logprobs(model_out_logits, n_prompt, tokens, starts) -> torch.Tensor:
    logp, _, _, _ = response_scores(model_out_logits, None, n_prompt, tokens)
    idx = torch.arange(logp.shape[1], device=logp.device).unsqueeze(0)
    lengths = torch.tensor([len(t) for t in tokens], device=logp.device).unsqueeze(1)
    first = torch.tensor(starts, device=logp.device).unsqueeze(1)
    region = (idx >= first) & (idx < lengths)
    return torch.where(region, logp, torch.zeros_like(logp)).sum(1)


@torch.no_grad()
def prepare_level_batch(samples: Sequence[Any], vlm, reference_model, ctx: ScoringContext, cfg: RLConfig,
                        reference_is_adapter_off: bool = False) -> list[LevelChain]:
    """The `LevelChain` of every active sample (greedy chains): alternatives, reward table and
    the reference model's level log-probabilities (`cfg.forward_batch_size` sequences per pass)."""
    phrases = level_phrases(ctx.mapper, cfg.level_phrasings)
    k = len(phrases[0])
    reward_cfg = cfg.reward
    model = vlm.model
    out = []
    for s in samples:
        if not s.active:
            continue
        tokens, starts, kept = _alternatives(vlm.tokenizer, s, phrases)
        if not kept:
            continue
        n = len(s.parsed.steps)
        table = level_reward_table(s.correct[:n], s.internal[:n], s.answer_correct, reward_cfg,
                                   s.knowledge[:n] if s.knowledge else None)
        rewards = torch.tensor([table[t] for t in kept], dtype=torch.float32)
        seq = []
        for i in range(0, len(tokens), cfg.forward_batch_size):
            chunk, first = tokens[i:i + cfg.forward_batch_size], starts[i:i + cfg.forward_batch_size]
            inputs, n_prompt = response_inputs(vlm, [s.prompt] * len(chunk), [s.image] * len(chunk), chunk)
            logits = reference_logits(model, reference_model, inputs, reference_is_adapter_off)
            seq.append(_sequence_logprobs(logits, n_prompt, chunk, first).float().cpu())
        ref = level_logprobs(torch.cat(seq).view(len(kept), N_LEVELS * k), k)
        out.append(LevelChain(sample=s, tokens=tokens, starts=starts, rewards=rewards, ref_level_logp=ref))
    return out


def level_update(policy_value, vlm, batch, chains: Sequence[LevelChain], cfg: RLConfig, accelerator, optimizer,
                 scheduler=None, generator: torch.Generator | None = None) -> dict[str, float]:
    """`cfg.ppo_epochs` passes over shuffled minibatches of `cfg.minibatch_size` chains of
    `chains` (one optimiser step each); `batch`: the iteration's `ppo.PPOBatch` of the same
    greedy chains, whose reference log-probs and statement masks give the anchor term. Returns
    token/step-weighted means of the statistics over the update (all processes)."""
    world = accelerator.num_processes if accelerator is not None else 1
    generator = generator or torch.Generator().manual_seed(0)
    device = accelerator.device if accelerator is not None else vlm.device
    phrasings = cfg.level_phrasings
    row_of = {id(s): i for i, s in enumerate(batch.samples)}
    if world > 1:
        raise ValueError("rl.algorithm 'expected' runs on one process (its multi-process update is not "
                         "written yet); use algorithm 'ppo' with several processes")

    def loss_of(idx: list[int]):
        chunk = [chains[i] for i in idx]
        tokens = [t for c in chunk for t in c.tokens]
        starts = [x for c in chunk for x in c.starts]
        prompts = [c.sample.prompt for c in chunk for _ in c.tokens]
        images = [c.sample.image for c in chunk for _ in c.tokens]
        rows = [row_of[id(c.sample)] for c in chunk]
        chain_tokens = [c.sample.rollout.tokens for c in chunk]
        n_alt = len(tokens)
        n_steps = sum(c.steps for c in chunk)
        length = max(len(t) for t in chain_tokens)
        amask = (batch.value_mask[rows, :length] & ~batch.policy_mask[rows, :length]).to(device)
        ref_chain = batch.ref_logprobs[rows, :length].to(device)
        inputs, n_prompt = response_inputs(vlm, prompts + [c.sample.prompt for c in chunk],
                                           images + [c.sample.image for c in chunk],
                                           tokens + [list(t) for t in chain_tokens])
        logits, _ = policy_value(**inputs)
        seq = _sequence_logprobs(logits[:n_alt], n_prompt[:n_alt], tokens, starts)
        level_logp = level_logprobs(seq.view(n_steps, N_LEVELS * phrasings), phrasings)
        rewards = torch.cat([c.rewards for c in chunk]).to(device)
        ref = torch.cat([c.ref_level_logp for c in chunk]).to(device)
        obj = expected_level_loss(level_logp, rewards, ref, cfg.kl_coef, cfg.level_gradient,
                                  cfg.level_temperature, cfg.level_floor)
        loss = obj.loss / max(n_steps, 1)
        logp, _, _, _ = response_scores(logits[n_alt:], None, n_prompt[n_alt:], chain_tokens)
        ka = k3_kl_sum(logp, ref_chain, amask)
        if cfg.anchor_coef:
            loss = loss + cfg.anchor_coef * ka / max(int(amask.sum()), 1)
        best = obj.probs.argmax(-1)
        stats = {"expected_reward": float(obj.expected_reward.sum()), "level_kl": float(obj.kl.sum()),
                 "kl_anchor": float(ka.detach()), "steps": float(n_steps),
                 "anchor_tokens": float(amask.sum()),
                 "level_entropy": float(-(obj.probs * obj.probs.clamp_min(1e-12).log()).sum()),
                 **{f"mode_{lv}": float((best == lv - 1).sum()) for lv in range(1, N_LEVELS + 1)}}
        return loss, stats

    done = minibatch_updates(len(chains), cfg, generator, loss_of, policy_value, accelerator, optimizer, scheduler)
    totals = done.totals
    keys = sorted(set(totals) | {"steps", "anchor_tokens"})
    reduced = dict(zip(keys, reduce_sum([totals.get(k, 0.0) for k in keys], accelerator)))
    n_s, n_a = reduced["steps"], reduced["anchor_tokens"]
    nan = float("nan")
    out = {"expected_reward": reduced.get("expected_reward", 0.0) / n_s if n_s else nan,
           "level_kl": reduced.get("level_kl", 0.0) / n_s if n_s else nan,
           "level_entropy": reduced.get("level_entropy", 0.0) / n_s if n_s else nan,
           "kl_anchor": reduced.get("kl_anchor", 0.0) / n_a if n_a else nan,
           **{f"levels/mode_{lv}": reduced.get(f"mode_{lv}", 0.0) / n_s if n_s else nan
              for lv in range(1, N_LEVELS + 1)},
           # PPO's keys, for the shared log line and metrics (no policy ratio or value here)
           "policy_loss": nan, "value_loss": nan, "clip_fraction": nan, "entropy": nan, "approx_kl": nan,
           "kl_ref": nan, "value_clip_fraction": nan,
           "optimizer_steps": float(done.steps),
           "nonfinite_skipped": float(reduce_sum([done.skipped], accelerator)[0] / world)}
    return out
