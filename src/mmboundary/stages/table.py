"""What a stage is: one record per stage, in pipeline order (the one table of stages).

A stage is a function (run) -> summary dict that reads only what earlier stages wrote to the run
directory; its `COMPLETE` marker is written last by the runner (`pipeline.run_stage`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mmboundary.config import STAGE_NAMES
from mmboundary.runs import Run
from mmboundary.stages.base import stage_base
from mmboundary.stages.data import stage_data
from mmboundary.stages.estimate import stage_estimate
from mmboundary.stages.evaluate import stage_evaluate
from mmboundary.stages.rl import stage_rl
from mmboundary.stages.sft import stage_sft, stage_sft_data


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline."""

    #: Its name (a `config.StageName`) and folder in the run directory.
    name: str
    #: The config sections it reads besides the top-level `seed` (read by every stage). A stage's
    #: result stays valid in a fork when neither its sections nor those of any stage before it
    #: changed; `name`, `stages` and `device` never invalidate a result (`fork.reusable_stages`).
    sections: tuple[str, ...]
    #: Whether every process runs it under `accelerate launch` (sharded training, sharded
    #: generation); the others (cheap, single-writer file work) run on the main process while
    #: the rest wait.
    distributed: bool
    #: The stage itself.
    run: Callable[[Run], dict]


STAGES: tuple[Stage, ...] = (
    Stage("data", ("data",), False, stage_data),
    Stage("base", ("model", "clip", "base"), True, stage_base),
    Stage("estimate", ("generation", "estimate"), True, stage_estimate),
    Stage("sft_data", ("statements", "sft_data"), False, stage_sft_data),
    Stage("sft", ("sft",), True, stage_sft),
    Stage("rl", ("rl",), True, stage_rl),
    Stage("evaluate", ("evaluate",), True, stage_evaluate),
)

#: name -> stage; the runner looks stages up here (tests replace entries).
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}

if tuple(BY_NAME) != STAGE_NAMES:  # the config's list of names and this table are one
    raise AssertionError(f"stages.table {tuple(BY_NAME)} != config.STAGE_NAMES {STAGE_NAMES}")
