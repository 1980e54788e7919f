"""What both RL updates share (PPO, `ppo.ppo_update`; the expected-level objective,
`rl_levels.level_update`): the optimiser, the minibatch loop, one guarded optimiser step and
the cross-process sums.

    make_optimizer       AdamW (decay on matrices only) + constant learning rate after a linear
                         warm-up
    minibatch_updates    `ppo_epochs` passes over a fresh seeded shuffle of the batch, one
                         optimiser step per minibatch of `minibatch_size` items
    optimiser_step       backward, gradient clipping, step; a non-finite loss or gradient norm
                         skips the step on every process alike
    TooManyNonFinite     raised after `max_nonfinite_in_a_row` skipped steps in a row
    reduce_sum           float64 sums over all processes
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from mmboundary.training.loop import adamw_param_groups
from mmboundary.training.rl_config import RLConfig

log = logging.getLogger("mmboundary.rl")

__all__ = ["MinibatchTotals", "TooManyNonFinite", "check_in_a_row", "make_optimizer", "minibatch_updates",
           "optimiser_step", "reduce_sum"]


def make_optimizer(module: torch.nn.Module, cfg: RLConfig):
    """AdamW over `module`'s trainable parameters and its scheduler: linear warm-up over
    `cfg.warmup_steps` optimiser steps, then constant."""
    opt = torch.optim.AdamW(adamw_param_groups(module, cfg.weight_decay), lr=cfg.lr)
    warm = cfg.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    return opt, sched


def reduce_sum(values: Sequence[float], accelerator) -> list[float]:
    """The element-wise sums of `values` over all processes (float64; the values themselves with
    one process or no accelerator)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if accelerator is not None and accelerator.num_processes > 1:
        t = accelerator.reduce(t.to(accelerator.device), reduction="sum").cpu()
    return t.tolist()


class TooManyNonFinite(Exception):
    """`max_nonfinite_in_a_row` optimiser steps in a row were skipped; args[0] is that count."""


def check_in_a_row(count: int, cfg: RLConfig) -> None:
    """Raise `TooManyNonFinite` once `count` skipped steps in a row reach the config's limit."""
    if cfg.max_nonfinite_in_a_row is not None and count >= cfg.max_nonfinite_in_a_row:
        raise TooManyNonFinite(count)


def optimiser_step(loss: torch.Tensor, module, cfg: RLConfig, accelerator, optimizer, scheduler=None) -> str | None:
    """Backward, gradient clipping (`cfg.grad_clip`) and one optimiser (and scheduler) step, unless
    the loss or the gradient norm is not finite: then the gradients are dropped, a warning is
    logged and the fault ("loss" or "gradient norm") is returned, else None. Both checks are
    all-reduced, so every process decides alike."""
    fault = None
    if reduce_sum([0.0 if torch.isfinite(loss) else 1.0], accelerator)[0]:
        fault = "loss"
    else:
        if accelerator is not None:
            accelerator.backward(loss)
            norm = accelerator.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        else:
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        if not bool(torch.isfinite(torch.as_tensor(norm)).all()):  # all-reduced: the same on every process
            fault = "gradient norm"
    if fault is not None:
        log.warning("rl: non-finite %s in a minibatch, step skipped", fault)
        optimizer.zero_grad(set_to_none=True)
        return fault
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return None


@dataclass
class MinibatchTotals:
    """What `minibatch_updates` adds up over the applied steps (this process): the loss
    statistics of each step (`totals`), the number of applied and of skipped steps."""

    totals: Counter = field(default_factory=Counter)
    steps: int = 0
    skipped: int = 0


def minibatch_updates(n: int, cfg: RLConfig, generator: torch.Generator,
                      loss_of: Callable[[list[int]], tuple[torch.Tensor, dict[str, float]]], module, accelerator,
                      optimizer, scheduler=None) -> MinibatchTotals:
    """`cfg.ppo_epochs` passes over a shuffle (`generator`) of `n` items, one `optimiser_step` per
    minibatch of `cfg.minibatch_size` of them: `loss_of(indices)` gives the minibatch's loss and
    its statistics, added up over the applied steps. The module runs in eval mode (**[choice]**:
    no dropout, so the PPO ratio is exactly 1 on the first minibatch). A skipped step counts
    towards `cfg.max_nonfinite_in_a_row` (`TooManyNonFinite`)."""
    out = MinibatchTotals()
    in_a_row = 0
    module.eval()
    for _epoch in range(cfg.ppo_epochs):
        order = torch.randperm(n, generator=generator).tolist() if n else []
        for start in range(0, n, cfg.minibatch_size):
            loss, stats = loss_of(order[start:start + cfg.minibatch_size])
            if optimiser_step(loss, module, cfg, accelerator, optimizer, scheduler) is not None:
                out.skipped += 1
                in_a_row += 1
                check_in_a_row(in_a_row, cfg)
                continue
            in_a_row = 0
            out.steps += 1
            out.totals.update(stats)
    return out
