"""The RL trainer (`train_rl`): PPO with per-step rewards that calibrates the stated confidence
(method.md section 5), or the expected-level objective (`rl.algorithm: expected`).

A thin, hand-written loop on accelerate over the modules that do the work. Per iteration:

1. rollouts (`samples`): take the next `rollout_batch_size` train questions of a seeded order
   (each process a disjoint contiguous shard of them); sample `samples_per_question` responses
   per question from the current policy (`VLM.generate_ids`, tempered; only the statements with
   `sampling: statements`, `training.sampling`), seeded by (seed, iteration, process); parse them
   into steps with statements, check each step and the answer, recompute each step's INTERNAL
   level on the current policy (`confidence.scorer`), and make `Rollout` records over the
   GENERATED tokens;
2. evaluation (`scoring`, `ppo.prepare_batch`, `rl_stats`): one teacher-forced pass of the
   policy (old log-probs and values) and one of the frozen SFT reference, over exactly the
   generated token ids; rewards (`rewards`), advantages (the estimator `rl.advantage` names,
   `estimators`) and the iteration's statistics;
3. update (`ppo.ppo_update`, or `rl_levels.level_update`; both through `rl_update`):
   `ppo_epochs` passes over shuffled minibatches, one optimiser step each, a non-finite loss or
   gradient skipping the step on every process (counted; `max_nonfinite_in_a_row` in a row stop
   with `errors.NonFiniteError`, the newest checkpoint kept);
4. logging (`rl_stats`): `metrics.jsonl` in the stage folder, TensorBoard when it is installed,
   one log line: mean R_KA / R_EC / R_CS / total per step, reward per response, KL to the
   reference, KL coefficient, entropy, value and policy loss, clip fractions, the level
   histograms of the expressed and internal confidence, parse rate, answer and step accuracy;
5. saving (`checkpoints`): every `save_every` iterations, `checkpoints/iter-N`, resumed from
   bitwise (randomness is derived from (seed, iteration, process) at the start of every
   iteration and the question order from (seed, pass over the data)).

Distributed (`accelerate launch --multi_gpu --num_processes N`, also `Accelerator(cpu=True)` on
gloo): every process takes `rollout_batch_size / N` questions, so every process holds the same
number of rollouts and takes the same number of optimiser steps. Losses are token means over the
GLOBAL minibatch (each process scales its local token sum by N / global token count, and DDP
averages the gradients), advantages are whitened over the global batch, and statistics are
reduced over all processes, so N processes with a per-process batch b compute what one process
computes with batch N * b. Only the main process writes files.

Departures from textbook PPO (Schulman et al. 2017; Ziegler et al. 2019 for language models),
each a **[choice]** documented in docs/defaults.md (section rl):

- the actions are exactly the sampled token ids (not a re-tokenisation of the decoded text);
- by default only the statement clauses are sampled, the reasoning is decoded greedily
  (`sampling: statements`), and only the statement tokens are in the policy loss
  (`loss_on: statements`), the other tokens held near the SFT model by a k3 KL anchor
  (`anchor_coef`); the value head reads detached hidden states (`value_grad_to_policy: false`);
- rewards are per step, on the statement's last token, not one per sequence;
- the critic-free estimators (`advantage: group | statement`) put the KL into the loss, not
  the reward; `algorithm: expected` replaces sampling, ratios, clipping and the value head by
  the exact expected reward over the five levels on the greedy chains (`level_objective`);
- updates run in eval mode (no dropout: the ratio is exactly 1 on the first minibatch).

Departures from the paper (settings unconfirmed there): the tiny default model is trained in
full (`finetune`); the learning rate is 3e-5, measured on the tiny model (the paper: 1e-5 for
7B models with LoRA).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mmboundary.confidence.scorer import ScoringContext
from mmboundary.errors import NonFiniteError
from mmboundary.training.checkpoints import latest_rl_checkpoint, load_rl_checkpoint, save_rl_checkpoint
from mmboundary.training.ppo import ppo_update, prepare_batch
from mmboundary.training.rewards import AdaptiveKLController, FixedKLController
from mmboundary.training.rl_config import RLConfig
from mmboundary.training.rl_levels import level_update, prepare_level_batch
from mmboundary.training.rl_stats import MetricsLog, log_iteration, rollout_stats
from mmboundary.training.rl_update import TooManyNonFinite, make_optimizer
from mmboundary.training.samples import collect_samples, question_indices, seed_for
from mmboundary.training.scoring import score_samples
from mmboundary.training.sft import lora_wrap
from mmboundary.training.value_head import PolicyWithValue, ValueHead, hidden_size_of

log = logging.getLogger("mmboundary.rl")

__all__ = ["train_rl"]


def _check(examples: Sequence[Any], ctx: ScoringContext, cfg: RLConfig, world: int) -> None:
    if not examples:
        raise ValueError("rl: no training questions")
    if cfg.rollout_batch_size % world:
        raise ValueError(f"rl: rollout_batch_size {cfg.rollout_batch_size} is not divisible by the "
                         f"{world} processes")
    if cfg.algorithm == "expected" and world > 1:
        raise ValueError("rl.algorithm 'expected' runs on one process (its multi-process update is not written "
                         f"yet), not {world}; use algorithm 'ppo' with several processes")
    if cfg.algorithm == "expected" and ctx.granularity != "step":
        raise ValueError("rl.algorithm 'expected' writes every level's statement after each step; it needs "
                         "statements.granularity 'step', not 'answer' (use algorithm 'ppo')")


def _models(policy, reference, cfg: RLConfig, seed: int, device) -> PolicyWithValue:
    """The policy (LoRA-wrapped with `finetune: lora`) and its value head as one module, and the
    frozen reference, on `device`."""
    if cfg.finetune == "lora":
        policy.model = lora_wrap(policy.model, cfg)
    elif reference is None:
        raise ValueError("rl: full fine-tuning needs a reference model")
    policy.model.to(device)
    if reference is not None:
        reference.model.to(device)
        reference.model.eval()
        reference.model.requires_grad_(False)
    head = ValueHead(hidden_size_of(policy.model), cfg.value_head_init_std, seed=seed).to(device)
    return PolicyWithValue(policy.model, head, detach_value_input=not cfg.value_grad_to_policy)


def train_rl(policy, reference, examples: Sequence[Any], ctx: ScoringContext, cfg: RLConfig, *, seed: int,
             accelerator, out_dir: Path | None = None,
             callback: Callable[[int, dict], None] | None = None) -> tuple[dict, PolicyWithValue]:
    """RL on `policy` (a `VLM`, trained in place) against the frozen `reference` (a `VLM`; None
    with `finetune='lora'`, where the reference is the policy with its adapters disabled).

    `out_dir`: where `metrics.jsonl`, `tensorboard/` and `checkpoints/` go (None: nothing is
    written, no checkpoint). `callback(iteration, metrics)` runs after each iteration (and its
    checkpoint). Returns the summary and the `PolicyWithValue` (unwrapped)."""
    world, rank = accelerator.num_processes, accelerator.process_index
    _check(examples, ctx, cfg, world)
    per_rank = cfg.rollout_batch_size // world
    expected = cfg.algorithm == "expected"
    pv = _models(policy, reference, cfg, seed, accelerator.device)
    ref_model = reference.model if reference is not None else None
    opt, sched = make_optimizer(pv, cfg)
    pv_ddp, opt = accelerator.prepare(pv, opt)
    kl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.kl_adaptive
          else FixedKLController(cfg.kl_coef))
    ckpt_dir = out_dir / "checkpoints" if out_dir is not None else None
    start, history, nonfinite, resumed_from = 0, [], 0, None
    latest = latest_rl_checkpoint(ckpt_dir) if ckpt_dir is not None else None
    if latest is not None:
        st = load_rl_checkpoint(latest, pv, opt, sched, kl)
        start, history, nonfinite, resumed_from = st["iteration"], st["history"], st["nonfinite"], latest.name
        log.info("rl: resumed from %s", latest)
    metrics_log = MetricsLog(out_dir, history, accelerator.is_main_process)
    started = time.time()
    for it in range(start, cfg.iterations):
        t0 = time.time()
        # --- rollouts: this process's share of the iteration's questions, sampled and parsed ---
        chosen = question_indices(len(examples), it, cfg.rollout_batch_size, seed)
        mine = [examples[i] for i in chosen[rank * per_rank:(rank + 1) * per_rank]]
        torch.manual_seed(seed_for(seed, it, rank))
        samples = collect_samples(policy, mine, ctx, cfg)
        t_sample = time.time() - t0
        # --- evaluation: teacher-forced scores, rewards, advantages, statistics ---
        samples = score_samples(pv, policy, ref_model, samples, cfg.forward_batch_size,
                                reference_is_adapter_off=reference is None,
                                temperature=1.0 if expected else cfg.temperature)
        batch = prepare_batch(samples, cfg, kl.value, accelerator)
        stats = rollout_stats(batch, accelerator)
        if expected:
            level_chains = prepare_level_batch(batch.samples, policy, ref_model, ctx, cfg,
                                               reference_is_adapter_off=reference is None)
        # --- update ---
        gen = torch.Generator().manual_seed(seed_for(seed, it, rank) + 1)
        t1 = time.time()
        try:
            if expected:
                upd = level_update(pv_ddp, policy, batch, level_chains, cfg, accelerator, opt, sched, gen)
            else:
                upd = ppo_update(pv_ddp, policy, batch, cfg, accelerator, opt, sched, gen)
        except TooManyNonFinite as e:
            newest = latest_rl_checkpoint(ckpt_dir) if ckpt_dir is not None else None
            raise NonFiniteError(
                f"rl: {e.args[0]} optimiser steps in a row had a non-finite loss or gradient at iteration "
                f"{it + 1}; stopped. Newest checkpoint (left as it was): {newest or 'none'}") from None
        # --- logging ---
        nonfinite += int(upd.pop("nonfinite_skipped"))
        metrics = {"iteration": it + 1, **stats.metrics(),
                   **{f"loss/{k}" if k in ("policy_loss", "value_loss") else k: v for k, v in upd.items()},
                   "kl_coef": kl.value, "nonfinite_skipped_total": nonfinite, "lr": sched.get_last_lr()[0],
                   "seconds/sample": t_sample, "seconds/update": time.time() - t1,
                   "seconds/iteration": time.time() - t0}
        if math.isfinite(stats.kl_per_response):
            kl.update(stats.kl_per_response, int(stats.responses))
        history.append(metrics)
        log_iteration(it + 1, cfg.iterations, expected, stats, upd, metrics["seconds/iteration"])
        metrics_log.append(metrics)
        # --- saving ---
        if ckpt_dir is not None and (it + 1) % cfg.save_every == 0 and it + 1 < cfg.iterations:
            if accelerator.is_main_process:
                save_rl_checkpoint(ckpt_dir, it + 1, pv, opt, sched, kl, history, nonfinite)
            accelerator.wait_for_everyone()
        if callback is not None:
            callback(it + 1, metrics)
    metrics_log.close()
    pv.eval()
    ran = cfg.iterations - start
    summary = {"iterations": cfg.iterations, "seconds": round(time.time() - started, 2),
               "seconds_per_iteration": round((time.time() - started) / ran, 2) if ran else None,
               "nonfinite_skipped": nonfinite, "kl_coef": kl.value, "processes": world,
               "final": history[-1] if history else None}
    if resumed_from is not None:
        summary["resumed_from"] = resumed_from
    return summary, pv
