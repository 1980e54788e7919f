"""A thin supervised training loop on accelerate (used by stages `base` and `sft`).

AdamW, linear warm-up then cosine decay, gradient clipping, seeded shuffling. The loss is the
model's own (`model(**batch).loss`) unless a `loss_fn` is given; for causal LMs the batch's
`labels` are -100 outside the response, so the loss is on response tokens only.

Numerical faults: a batch whose loss, or whose gradient norm, is not finite (NaN/inf) is not
applied to the weights: it is logged, counted (`skipped_nonfinite` in the summary) and skipped
(the learning-rate schedule still advances, so the step numbers stay aligned). After
`max_nonfinite_in_a_row` such batches in a row, training stops with `NonFiniteError`; no
checkpoint is written after a fault, and one is never written from non-finite weights, so the
newest checkpoint (from before the faults) stays intact to resume from. With several processes
the decision is taken jointly (any process's non-finite loss skips the step everywhere). Under
fp16 mixed precision a gradient overflow is left to accelerate's loss scaler, which skips that
update itself and lowers the scale.

Resumable: with `checkpoint_dir`, every `save_every` optimiser steps the trainable weights
(safetensors), the optimiser and scheduler states, the batch order, the random generators and
the loss curve are written to `checkpoint_dir/step-N` (through a temporary folder renamed into
place, so a checkpoint is whole or absent), and older checkpoints are removed. Called again
with the same arguments, training continues from the newest whole checkpoint and ends with
the same weights as an uninterrupted run (on CPU).

Several processes (`accelerate launch --multi_gpu --num_processes N`; DDP, also on CPU with
gloo): every process draws the same batch order (the shuffling generator is seeded by `seed`
alone), so all cut the same global batch of `batch_size` items, and `batch_split` says what
each computes:

- 'shard' (the default): process r takes its contiguous slice of the global batch
  (`distributed.shard_range`: sizes differ by at most one). The model's loss is a mean over
  the slice's loss terms (for a causal LM: its response tokens, counted by `weight_fn`); it is
  rescaled by N * local terms / global terms, so that DDP's average of the gradients is the
  gradient of the mean over the GLOBAL batch's terms: N processes with `batch_size` B compute
  what one process computes with B (up to the summation order of the all-reduce). The logged
  loss is that global mean.
- 'replicate': every process computes the whole global batch (for a loss that couples the
  items of a batch, as CLIP's contrastive loss does: a slice would lose the other slices'
  negatives); the gradients are equal everywhere, so the result is one process's.

Random generators per process: the batch order is the same on every process by design; the
global torch generator (dropout) is reseeded per process (seed, rank) when N > 1, so that the
processes' dropout masks differ (with one process it is left as the caller set it, so a
one-process run is unchanged). Only the main process writes checkpoints (after which every
process waits); the checkpoint keeps every process's generator state and is resumed by the same
number of processes (another number resumes too, with the main process's generator state and a
warning). With DeepSpeed or FSDP (sharded optimiser states, and under ZeRO-3 / FSDP sharded
weights) no process holds the whole state: every process writes its shard through
`accelerator.save_state` into the checkpoint's temporary folder (`sharded/`), the main process
adds `trainer_state.pt` (scheduler, batch order, generators, loss curve) and renames the folder
into place; resuming needs the same launcher config and number of processes (a different one is
an error naming both). The shards are DeepSpeed's / accelerate's own files, read back with
pickle: resume only from checkpoints you wrote.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from accelerate import Accelerator

from mmboundary.config import TrainConfig
from mmboundary.distributed import shard_range
from mmboundary.errors import NonFiniteError, RunError
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
    checkpoint_dir: Path | None = None,
    save_every: int | None = None,
    max_nonfinite_in_a_row: int | None = 3,
    batch_split: Literal["shard", "replicate"] = "shard",
    weight_fn: Callable[[dict[str, Any]], int | float] | None = None,
) -> dict[str, Any]:
    """Train `model` in place; returns a summary with the loss curve (one value per log step)
    and `skipped_nonfinite`, the number of batches skipped for a non-finite loss or gradient.

    With `checkpoint_dir` (and `save_every`), resumable as described in the module docstring.

    `max_nonfinite_in_a_row`: a batch with a non-finite loss or gradient norm is skipped (not
    applied to the weights); after this many in a row, training stops with `NonFiniteError`
    naming the step and the newest checkpoint, which is left intact. None: never stop (every
    such batch is still skipped). **[choice]** 3: one or two bad batches are survivable noise
    (a degenerate batch, an fp16 overflow); three in a row means the weights, the data or the
    learning rate are broken, and going on would waste the run.

    Several processes (see the module docstring): `batch_split` 'shard' (each process takes its
    slice of the global batch) or 'replicate' (each computes the whole batch); `weight_fn(batch)`:
    the number of terms the loss of a collated slice averages over (`response_token_count` for a
    causal LM's token-mean loss; None: the number of items, for a per-item mean), used to weight
    the slices so that the result is the global batch's mean."""
    if not items:
        raise ValueError(f"{description}: no training items")
    if batch_split not in ("shard", "replicate"):
        raise ValueError(f"batch_split must be 'shard' or 'replicate', not {batch_split!r}")
    world, rank = accelerator.num_processes, accelerator.process_index
    sharded = world > 1 and batch_split == "shard"
    if sharded and cfg.batch_size < world:
        raise ValueError(f"{description}: batch_size {cfg.batch_size} is smaller than the {world} processes "
                         "(each process takes a slice of the global batch, and one would get no item)")
    sharded_states = _sharded_states(accelerator)
    if world > 1:  # distinct dropout masks per process; one process keeps the caller's generator
        torch.manual_seed(_rank_seed(seed, rank))
    if max_nonfinite_in_a_row is not None and max_nonfinite_in_a_row < 1:
        raise ValueError(f"max_nonfinite_in_a_row must be at least 1 or None, not {max_nonfinite_in_a_row}")
    steps = total_steps(len(items), cfg)
    warmup = int(cfg.warmup_ratio * steps)
    opt = torch.optim.AdamW(adamw_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, steps, warmup))
    _set_deepspeed_micro_batch(accelerator, math.ceil(cfg.batch_size / world) if sharded else cfg.batch_size)
    model, opt = accelerator.prepare(model, opt)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    state = {"step": 0, "order": [], "curve": [], "skipped": 0, "running": 0.0}
    resumed_from = None
    if checkpoint_dir is not None:
        latest = latest_checkpoint(checkpoint_dir)
        if latest is not None:
            if sharded_states:
                state = load_sharded_checkpoint(latest, accelerator, sched, gen)
            else:
                state = load_checkpoint(latest, accelerator.unwrap_model(model), opt, sched, gen,
                                        rank=rank, world=world)
            resumed_from = latest.name
            log.info("%s: resumed from %s", description, latest)
    order: list[int] = state["order"]
    curve: list[float] = state["curve"]
    skipped: int = state["skipped"]
    running: float = state["running"]
    in_a_row = 0  # checkpoints are written only after an applied step, so this starts at 0
    with make_progress() as progress:
        task = progress.add_task(description, total=steps, info="", completed=state["step"])
        for step in range(state["step"], steps):
            if len(order) < cfg.batch_size:
                order += torch.randperm(len(items), generator=gen).tolist()
            idx, order = order[: cfg.batch_size], order[cfg.batch_size:]
            if sharded:
                start, stop = shard_range(len(idx), world, rank)
                idx = idx[start:stop]
            batch = collate([items[i] for i in idx])
            batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            if sharded:
                local = float(weight_fn(batch) if weight_fn is not None else len(idx))
                total = float(accelerator.reduce(torch.tensor(local, device=accelerator.device), reduction="sum"))
            loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
            if sharded and total > 0:
                # DDP averages the N gradients: local mean * N * local / total sums to the global mean
                loss = (loss * (world * local / total) if local > 0 else
                        sum((p * 0).sum() for p in model.parameters() if p.requires_grad))
            fault = None
            finite, global_loss = _global_loss(loss, accelerator)
            if not finite:
                fault = (f"non-finite loss {loss.item()}" if not torch.isfinite(loss).all()
                         else "non-finite loss on another process")
            else:
                accelerator.backward(loss)
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                # with fp16 loss scaling, an overflow is the scaler's to handle: opt.step() skips
                # the update and lowers the scale (skipping opt.step here would keep the scale)
                if (grad_norm is not None and accelerator.scaler is None
                        and not torch.isfinite(torch.as_tensor(grad_norm))):
                    fault = f"non-finite gradient norm {float(grad_norm)} (loss {loss.item():.4g})"
            if fault is not None:
                skipped += 1
                in_a_row += 1
                opt.zero_grad(set_to_none=True)
                sched.step()
                progress.advance(task)
                log.warning("%s step %d: %s, batch skipped (%d in a row, %d in all)", description,
                            step + 1, fault, in_a_row, skipped)
                if max_nonfinite_in_a_row is not None and in_a_row >= max_nonfinite_in_a_row:
                    latest = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
                    raise NonFiniteError(
                        f"{description}: stopped at step {step + 1}/{steps}: {in_a_row} batches in a "
                        f"row had a non-finite loss or gradient (last: {fault}); the weights were not "
                        f"updated by them. "
                        + (f"Newest checkpoint, left intact: {latest}" if latest is not None else
                           "No checkpoint was written before the faults."))
                continue
            in_a_row = 0
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            running += global_loss
            if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                k = (step % cfg.log_every) + 1
                curve.append(running / k)
                log.info("%s step %d/%d loss %.4f lr %.2e", description, step + 1, steps, running / k,
                         sched.get_last_lr()[0])
                progress.update(task, info=f"loss {running / k:.3f}")
                running = 0.0
            progress.advance(task)
            if checkpoint_dir is not None and save_every and (step + 1) % save_every == 0 and step + 1 < steps:
                bad = [n for n, p in accelerator.unwrap_model(model).named_parameters()
                       if p.requires_grad and not torch.isfinite(p).all()]
                if bad:  # never replace the last good checkpoint with broken weights
                    raise NonFiniteError(
                        f"{description}: step {step + 1}: non-finite weights ({', '.join(bad[:3])}"
                        f"{' ...' if len(bad) > 3 else ''}); checkpoint not written, newest "
                        f"checkpoint left intact: {latest_checkpoint(checkpoint_dir)}")
                extra = {"order": order, "curve": curve, "skipped": skipped, "running": running, "world": world}
                if world > 1:
                    from accelerate.utils import gather_object

                    extra["torch_rng_per_rank"] = gather_object([torch.get_rng_state()])
                if sharded_states:  # every process writes its shard, the main process the rest
                    save_sharded_checkpoint(checkpoint_dir, step + 1, accelerator, sched, gen, extra)
                elif accelerator.is_main_process:  # one writer; the others wait until it is in place
                    save_checkpoint(checkpoint_dir, step + 1, accelerator.unwrap_model(model), opt, sched, gen,
                                    extra)
                accelerator.wait_for_everyone()
    model.eval()
    summary = {"steps": steps, "final_loss": curve[-1] if curve else None, "loss_curve": curve,
               "skipped_nonfinite": skipped}
    if world > 1:
        summary["processes"] = world
        summary["batch_split"] = batch_split
    if resumed_from is not None:
        summary["resumed_from"] = resumed_from
    return summary


def _global_loss(loss: torch.Tensor, accelerator: Accelerator) -> tuple[bool, float]:
    """(whether the loss is finite on every process, the mean of the processes' losses): one
    all-reduce of [non-finite flag, loss], so that all processes skip, or all apply, the same
    step. With 'shard' the processes' rescaled losses average to the global batch's mean loss;
    with one process: (finite, loss)."""
    ok = bool(torch.isfinite(loss).all())
    if accelerator.num_processes == 1:
        return ok, float(loss.item())
    t = torch.tensor([0.0 if ok else 1.0, float(loss.item()) if ok else 0.0], device=accelerator.device)
    t = accelerator.reduce(t, reduction="sum")
    return float(t[0]) == 0.0, float(t[1]) / accelerator.num_processes


def response_token_count(batch: dict[str, Any]) -> int:
    """The number of terms a causal LM's token-mean loss averages over: labels other than -100
    after the one-position shift (Hugging Face's `ForCausalLMLoss` predicts label t+1 at t)."""
    return int((batch["labels"][:, 1:] != -100).sum())


def _rank_seed(seed: int, rank: int) -> int:
    return (int(seed) * 1_000_003 + 7919 * (rank + 1)) % (2**63 - 1)


def _set_deepspeed_micro_batch(accelerator: Accelerator, per_process: int) -> None:
    """DeepSpeed wants a micro batch size per process (normally read from a prepared
    DataLoader, which this loop does not use): this loop's slice size, unless the DeepSpeed
    config sets one. DeepSpeed only logs it (the loop feeds the batches itself)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        ds["train_micro_batch_size_per_gpu"] = int(per_process)


def _sharded_states(accelerator: Accelerator) -> bool:
    """Whether the optimiser / parameters are sharded over processes (DeepSpeed, FSDP)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)


# --- checkpoints --------------------------------------------------------------------------------

def latest_checkpoint(directory: Path, prefix: str = "step") -> Path | None:
    """The newest whole checkpoint `<prefix>-N` under `directory` (one with its
    `trainer_state.pt`, which is written before the folder is renamed into place; None if there
    is none)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [(int(p.name.split("-", 1)[1]), p) for p in directory.iterdir()
             if p.is_dir() and p.name.startswith(f"{prefix}-") and p.name.split("-", 1)[1].isdigit()
             and (p / "trainer_state.pt").is_file()]
    return max(found)[1] if found else None


def adamw_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay on matrices, none on biases and norm weights."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in n.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def save_checkpoint(directory: Path, step: int, model: torch.nn.Module, opt, sched, gen: torch.Generator,
                    extra: dict[str, Any]) -> Path:
    """Write checkpoint `step-<step>` atomically (temporary folder, then rename) and remove
    older ones. Trainable weights as safetensors; the rest as tensors and plain values only,
    so loading needs no unpickling of code (`torch.load(weights_only=True)`)."""
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        weights = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(weights, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": opt.state_dict(), **_trainer_state(step, sched, gen, extra)},
                   tmp / "trainer_state.pt")

    return write_checkpoint(directory, "step", step, fill)


def _trainer_state(step: int, sched, gen: torch.Generator, extra: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint keeps besides the weights and the optimiser: tensors and plain values."""
    return {"step": step, "scheduler": sched.state_dict(),
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "order": list(extra["order"]), "curve": list(extra["curve"]),
            "skipped": int(extra["skipped"]), "running": float(extra["running"]),
            "world": int(extra.get("world", 1)),
            **({"torch_rng_per_rank": list(extra["torch_rng_per_rank"])}
               if "torch_rng_per_rank" in extra else {})}


#: Subfolder of a checkpoint written under DeepSpeed / FSDP: `accelerator.save_state`'s shards.
SHARDED = "sharded"


def save_sharded_checkpoint(directory: Path, step: int, accelerator: Accelerator, sched, gen: torch.Generator,
                            extra: dict[str, Any]) -> Path:
    """Checkpoint `step-<step>` when the weights or optimiser states are sharded over processes
    (DeepSpeed, FSDP). Called by EVERY process: each writes its shard with
    `accelerator.save_state` into the temporary folder; the main process adds
    `trainer_state.pt` (no optimiser: it is in the shards) and renames the folder into place
    (`write_checkpoint`'s rules: whole or absent, older ones removed)."""
    directory = Path(directory)
    tmp = _temporary_path(directory, "step", step)
    if accelerator.is_main_process:
        _temporary_folder(directory, "step", step)
    accelerator.wait_for_everyone()  # the folder exists (and is empty) before anyone writes into it
    accelerator.save_state(str(tmp / SHARDED))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        torch.save({"sharded": str(accelerator.distributed_type), **_trainer_state(step, sched, gen, extra)},
                   tmp / "trainer_state.pt")
        _commit(tmp, directory, "step", step)
    return directory / f"step-{step}"


def load_sharded_checkpoint(path: Path, accelerator: Accelerator, sched, gen: torch.Generator) -> dict[str, Any]:
    """Restore a checkpoint of `save_sharded_checkpoint` on every process (weights and optimiser
    through `accelerator.load_state`, the rest from `trainer_state.pt`)."""
    st = torch.load(path / "trainer_state.pt", weights_only=True)
    world = accelerator.num_processes
    if "sharded" not in st or not (path / SHARDED).is_dir():
        raise RunError(f"{path}: written without DeepSpeed/FSDP (whole weights and optimiser), now resumed "
                       f"under {accelerator.distributed_type}: resume it with the launcher config that "
                       "wrote it, or remove the checkpoints folder to start the stage again")
    if int(st["world"]) != world:
        raise RunError(f"{path}: written by {st['world']} processes under {st['sharded']}, resumed by {world}: "
                       "sharded optimiser states need the same number of processes (or remove the "
                       "checkpoints folder to start the stage again)")
    accelerator.load_state(str(path / SHARDED))
    return _restore_trainer_state(path, st, sched, gen, rank=accelerator.process_index, world=world)


def _temporary_path(directory: Path, prefix: str, number: int) -> Path:
    return directory / f".tmp-{prefix}-{number}"


def _temporary_folder(directory: Path, prefix: str, number: int) -> Path:
    """The empty temporary folder of checkpoint `<prefix>-<number>` (a stale one is removed)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_path(directory, prefix, number)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def write_checkpoint(directory: Path, prefix: str, number: int, fill: Callable[[Path], None]) -> Path:
    """Checkpoint `<prefix>-<number>` under `directory`, whole or absent: `fill(tmp)` writes its
    files into a temporary folder, which is then renamed into place; older `<prefix>-*`
    checkpoints are removed afterwards."""
    directory = Path(directory)
    tmp = _temporary_folder(directory, prefix, number)
    fill(tmp)
    return _commit(tmp, directory, prefix, number)


def _commit(tmp: Path, directory: Path, prefix: str, number: int) -> Path:
    """fsync the temporary folder's files, rename it to `<prefix>-<number>`, remove older checkpoints."""
    final = directory / f"{prefix}-{number}"
    for f in tmp.rglob("*"):  # on disk before the rename, so a power cut cannot leave a renamed, partial checkpoint
        if f.is_file():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for p in directory.iterdir():
        if p != final and p.is_dir() and p.name.startswith(f"{prefix}-"):
            shutil.rmtree(p)
    return final


def load_checkpoint(path: Path, model: torch.nn.Module, opt, sched, gen: torch.Generator, *,
                    rank: int = 0, world: int = 1) -> dict[str, Any]:
    """Restore a checkpoint written by `save_checkpoint` into `model`, `opt`, `sched`, `gen`;
    process `rank` of `world` takes its own saved torch generator state when the checkpoint was
    written by as many processes (else the main process's, with a warning)."""
    from safetensors.torch import load_file

    if not (path / "trainable.safetensors").is_file() and (path / SHARDED).is_dir():
        raise RunError(f"{path}: written under DeepSpeed/FSDP (sharded states), now resumed without it: "
                       "resume it with the launcher config that wrote it, or remove the checkpoints "
                       "folder to start the stage again")
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing or any(n not in params for n in weights):
        raise ValueError(f"{path}: checkpoint does not match the model (missing {missing[:3]}, "
                         f"unexpected {[n for n in weights if n not in params][:3]})")
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w.to(params[n].device, params[n].dtype))
    st = torch.load(path / "trainer_state.pt", weights_only=True)
    opt.load_state_dict(st["optimizer"])
    return _restore_trainer_state(path, st, sched, gen, rank=rank, world=world)


def _restore_trainer_state(path: Path, st: dict[str, Any], sched, gen: torch.Generator, *,
                           rank: int, world: int) -> dict[str, Any]:
    """Restore `_trainer_state`'s part of a checkpoint (scheduler, generators) and return the
    loop's own state; process `rank` takes its own torch generator state when `world` processes
    wrote it, else the main process's (with a warning)."""
    sched.load_state_dict(st["scheduler"])
    gen.set_state(st["generator"])
    per_rank = st.get("torch_rng_per_rank")
    if world > 1 and per_rank is not None and len(per_rank) == world:
        torch.set_rng_state(per_rank[rank])
    else:
        if int(st.get("world", 1)) != world:
            log.warning("%s: written by %s process(es), resumed by %d: the batches are the same, the "
                        "dropout generators are not", path, st.get("world", 1), world)
        torch.set_rng_state(st["torch_rng"])
    return {"step": st["step"], "order": list(st["order"]), "curve": list(st["curve"]),
            "skipped": st["skipped"], "running": st["running"]}
