"""Several processes (`accelerate launch`): who does what, sharding a list, gathering it back.

    shard_range(n, world, rank)      (pure) the contiguous slice [start, stop) of rank `rank`
    merge_shards(parts, n)           (pure) per-rank lists of (index, item) -> the n items in
                                     index order; an index missing or seen twice is an error
    shard_map(fn, items, state)      fn over this process's slice, results of every process
                                     gathered back in the original order (on every process)
    world_info()                     (rank, world size) from the launcher's environment,
                                     without starting anything
    process_state(device)            accelerate's `PartialState` (process group) for a device
                                     setting, the same rule as `make_accelerator`
    make_accelerator(device)         the one `Accelerator` factory of the project (every stage,
                                     the RL trainer, baselines, comparison rows)
    is_main_process() / barrier()    for code that writes files (rank 0 only) and code that
                                     reads them afterwards

Sharding **[choice]**: contiguous slices whose sizes differ by at most one (the first
`n % world` ranks take one more item), so concatenating the slices in rank order gives the
original order, and no item is dropped or repeated when `n` is not divisible by the world size
(accelerate's `split_between_processes` pads with repeats when asked to; nothing is padded here).
A rank may get an empty slice when n < world; `fn` is then not called on it.

With one process (no launcher, or `--num_processes 1`) everything here is a no-op: no process
group is started, `shard_map` calls `fn` on the whole list.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs, gather_object

from mmboundary.errors import MMBoundaryError

T = TypeVar("T")
R = TypeVar("R")


class ShardError(MMBoundaryError):
    """Gathered shards that do not cover the items exactly once."""


def shard_range(n: int, world: int, rank: int) -> tuple[int, int]:
    """[start, stop) of rank `rank`'s contiguous slice of `n` items over `world` processes: the
    first `n % world` ranks take `n // world + 1` items, the others `n // world`."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard_range: rank {rank} of world {world}")
    if n < 0:
        raise ValueError(f"shard_range: n must be >= 0, not {n}")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def merge_shards(parts: Sequence[Sequence[tuple[int, T]]], n: int) -> list[T]:
    """The `n` items, in index order, from the per-rank lists of (index, item); a missing index,
    an index seen twice or one outside [0, n) is a `ShardError` naming it."""
    out: list[Any] = [None] * n
    seen = [False] * n
    for rank, part in enumerate(parts):
        for index, item in part:
            if not 0 <= index < n:
                raise ShardError(f"rank {rank} returned item {index}, outside [0, {n})")
            if seen[index]:
                raise ShardError(f"item {index} was returned twice (again by rank {rank})")
            seen[index] = True
            out[index] = item
    missing = [i for i, s in enumerate(seen) if not s]
    if missing:
        raise ShardError(f"{len(missing)} of {n} items were returned by no rank (first: {missing[:5]})")
    return out


def world_info() -> tuple[int, int]:
    """(rank, world size) as set by `accelerate launch` / torchrun (RANK, WORLD_SIZE); (0, 1)
    outside a launcher. Starts nothing."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_info()[1] > 1


def deepspeed_on_cpu() -> bool:
    """Whether `accelerate launch` asked for DeepSpeed on a machine without a GPU (DeepSpeed's
    CPU accelerator, `DS_ACCELERATOR=cpu`)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" and not torch.cuda.is_available()


def accelerator_options(device: str = "auto") -> dict[str, Any]:
    """`Accelerator(**options)` / `PartialState(**options)` for a device setting ('cpu', 'cuda',
    'auto'): CPU (gloo) when asked or when there is no GPU. Under DeepSpeed without a GPU,
    accelerate 1.15 must be told the gloo backend and not `cpu=True` (its CPU path skips
    DeepSpeed; without a backend it counts one process per rank, so every rank would believe it
    is the main one): then `cpu=False` and `backend='gloo'`."""
    if deepspeed_on_cpu():
        return {"cpu": False, "backend": "gloo"}
    return {"cpu": device == "cpu" or (device == "auto" and not torch.cuda.is_available())}


def make_accelerator(device: str = "auto") -> Accelerator:
    """The project's one `Accelerator` factory: CPU when asked or when there is no GPU
    (`accelerator_options`, also DeepSpeed on CPU over gloo). Under DDP, parameters that get no
    gradient in a step are allowed (`find_unused_parameters`: e.g. the vision tower's unused
    post-layernorm, or the value head when only the policy loss is taken)."""
    options = accelerator_options(device)
    handlers: list = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    if "backend" in options:
        handlers.append(InitProcessGroupKwargs(backend=options["backend"]))
    return Accelerator(cpu=options["cpu"], kwargs_handlers=handlers)


def process_state(device: str = "auto"):
    """accelerate's `PartialState` (one per process, shared with every `Accelerator` made later),
    started for `device` by the rule of `accelerator_options` (the one `make_accelerator`
    uses). The first call in a process decides; later calls return the same state (so the
    helpers below, called before any `Accelerator` exists, start the process group as
    `make_accelerator` would with device 'auto', never accelerate's bare default, which on a
    machine without a GPU would make every rank believe it is the only one)."""
    return PartialState(**accelerator_options(device))


def is_main_process() -> bool:
    """Whether this process writes shared files (rank 0; always true with one process)."""
    if not is_distributed():
        return True
    return process_state().is_main_process


def barrier() -> None:
    """Wait for every process (no-op with one process)."""
    if is_distributed():
        process_state().wait_for_everyone()


def gather_lists(local: list[T]) -> list[list[T]]:
    """Every process's `local` list, in rank order (on every process)."""
    if not is_distributed():
        return [local]
    # gather_object concatenates the gathered lists; wrap each in a one-element list
    return [list(p) for p in gather_object([list(local)])]


def shard_map(fn: Callable[[list[T]], Sequence[R]], items: Sequence[T]) -> list[R]:
    """`fn(my_slice)` on this process's contiguous slice of `items` (`shard_range`), the results
    of every process gathered and put back in the order of `items` (`merge_shards`, which checks
    that each item was done exactly once). `fn` must return one result per item. With one
    process: `fn(items)`."""
    items = list(items)
    rank, world = world_info()
    if world == 1:
        out = list(fn(items))
        if len(out) != len(items):
            raise ShardError(f"shard_map: {len(out)} results for {len(items)} items")
        return out
    start, stop = shard_range(len(items), world, rank)
    mine = items[start:stop]
    results = list(fn(mine)) if mine else []
    if len(results) != len(mine):
        raise ShardError(f"shard_map: rank {rank}: {len(results)} results for {len(mine)} items")
    return merge_shards(gather_lists(list(zip(range(start, stop), results))), len(items))
