"""A thin supervised training loop on accelerate (used by stage `base`).

AdamW, linear warm-up then cosine decay, gradient clipping, seeded shuffling. The loss is the
model's own (`model(**batch).loss`) unless a `loss_fn` is given; for causal LMs the batch's
`labels` are -100 outside the response, so the loss is on response tokens only.
Non-finite losses are not applied to the weights (the step is skipped and counted).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from accelerate import Accelerator

from mmboundary.config import TrainConfig
from mmboundary.progress import make_progress

log = logging.getLogger("mmboundary.training")
T = TypeVar("T")


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to 0.1."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def total_steps(n_items: int, cfg: TrainConfig) -> int:
    per_epoch = math.ceil(n_items / cfg.batch_size)
    return cfg.max_steps if cfg.max_steps is not None else max(1, int(round(per_epoch * cfg.epochs)))


def train_supervised(
    model: torch.nn.Module,
    items: Sequence[T],
    collate: Callable[[list[T]], dict[str, Any]],
    cfg: TrainConfig,
    *,
    seed: int,
    accelerator: Accelerator,
    description: str = "train",
    loss_fn: Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Train `model` in place; returns a summary with the loss curve (one value per log step)."""
    if not items:
        raise ValueError(f"{description}: no training items")
    steps = total_steps(len(items), cfg)
    warmup = int(cfg.warmup_ratio * steps)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in n.lower() else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, steps, warmup))
    model, opt = accelerator.prepare(model, opt)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    curve: list[float] = []
    skipped = 0
    running = 0.0
    with make_progress() as progress:
        task = progress.add_task(description, total=steps, info="")
        for step in range(steps):
            if len(order) < cfg.batch_size:
                order += torch.randperm(len(items), generator=gen).tolist()
            idx, order = order[: cfg.batch_size], order[cfg.batch_size:]
            batch = collate([items[i] for i in idx])
            batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
            if not torch.isfinite(loss):
                skipped += 1
                log.warning("%s step %d: non-finite loss %s, step skipped", description, step, loss.item())
                opt.zero_grad(set_to_none=True)
                sched.step()
                continue
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            running += loss.item()
            if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                k = (step % cfg.log_every) + 1
                curve.append(running / k)
                log.info("%s step %d/%d loss %.4f lr %.2e", description, step + 1, steps, running / k,
                         sched.get_last_lr()[0])
                progress.update(task, info=f"loss {running / k:.3f}")
                running = 0.0
            progress.advance(task)
    model.eval()
    return {"steps": steps, "final_loss": curve[-1] if curve else None, "loss_curve": curve,
            "skipped_nonfinite": skipped}
