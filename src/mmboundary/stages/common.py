"""What every stage does at its start: an empty folder, made once under several processes."""

from __future__ import annotations

from pathlib import Path

from mmboundary.distributed import barrier, is_main_process
from mmboundary.runs import Run


def begin_stage_once(run: Run, stage: str, keep: tuple[str, ...] = ()) -> Path:
    """`run.begin_stage` by the main process only, the others waiting until the folder is ready
    (several processes under `accelerate launch`; a plain call with one)."""
    if is_main_process():
        run.begin_stage(stage, keep=keep)
    barrier()
    return run.stage_dir(stage)
