"""Resumable checkpoints of the RL stage, `checkpoints/iter-N`, on the supervised loop's helpers
(`loop.write_checkpoint`: a temporary folder renamed into place, older ones removed;
`loop.latest_checkpoint`: the newest whole one).

A checkpoint holds the trainable weights and the value head (safetensors), the optimiser,
scheduler and KL-controller states, the iteration, the metric history and the count of skipped
non-finite steps (`torch.save` of tensors and plain values, read back with `weights_only=True`).
Randomness is derived from (seed, iteration, process) at the start of every iteration
(`samples.seed_for`), so nothing else is needed to resume exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mmboundary.training import loop  # attribute access: the kill tests wrap `loop.write_checkpoint`
from mmboundary.training.value_head import PolicyWithValue

__all__ = ["latest_rl_checkpoint", "load_rl_checkpoint", "save_rl_checkpoint"]

PREFIX = "iter"


def latest_rl_checkpoint(directory: Path) -> Path | None:
    """The newest whole checkpoint `iter-N` under `directory` (None if there is none)."""
    return loop.latest_checkpoint(directory, prefix=PREFIX)


def _trainable(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}


def save_rl_checkpoint(directory: Path, iteration: int, pv: PolicyWithValue, optimizer, scheduler, kl,
                       history: list[dict], nonfinite: int) -> Path:
    """Write `iter-<iteration>` atomically (temporary folder, then rename); remove older ones."""
    def fill(tmp: Path) -> None:
        save_file(_trainable(pv.model), str(tmp / "trainable.safetensors"))
        pv.value_head.save(tmp / "value_head.safetensors")
        torch.save({"iteration": iteration, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "kl": kl.state_dict(),
                    "history": json.dumps(history), "nonfinite": int(nonfinite)}, tmp / "trainer_state.pt")

    return loop.write_checkpoint(directory, PREFIX, iteration, fill)


def load_rl_checkpoint(path: Path, pv: PolicyWithValue, optimizer, scheduler, kl) -> dict[str, Any]:
    """Restore a checkpoint of `save_rl_checkpoint`; returns iteration, history, nonfinite."""
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(pv.model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    unexpected = [n for n in weights if n not in params]
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match the model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w.to(params[n].device, params[n].dtype))
        head = load_file(str(path / "value_head.safetensors"))
        for n, p in pv.value_head.named_parameters():
            p.copy_(head[n].to(p.device, p.dtype))
    st = torch.load(path / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(st["optimizer"])
    scheduler.load_state_dict(st["scheduler"])
    kl.load_state_dict(st["kl"])
    return {"iteration": int(st["iteration"]), "history": json.loads(st["history"]),
            "nonfinite": int(st["nonfinite"])}
