"""The runner: a config's stages in order, each skipped when it has completed, under the run
folder's lock. What each stage is and writes: `mmboundary.stages`; reading what they wrote:
`mmboundary.artifacts`."""

from __future__ import annotations

import contextlib
import logging
import time

import datasets
import transformers
from rich.console import Console

from mmboundary.distributed import barrier, is_main_process
from mmboundary.errors import user_message
from mmboundary.locks import hold
from mmboundary.progress import progress_enabled
from mmboundary.runs import MARKER, Run
from mmboundary.stages import BY_NAME

log = logging.getLogger("mmboundary.pipeline")
console = Console(stderr=True)


def run_lock(run: Run):
    """The run folder's lock (`locks.hold` on `<run>/.lock`), taken by the main process: a second
    process on the same folder (another `mmboundary run`, a stage command, a comparison) gets a
    clear error naming the process that writes it, instead of both writing the same files. The
    other processes of one `accelerate launch` are the same run and do not take it."""
    if not is_main_process():
        return contextlib.nullcontext()
    return hold(run.root / ".lock", what=f"the run folder {run.root}")


def failure_message(error: BaseException) -> str:
    """The one line a failed stage writes to run.log: what the user reads after `error: ` on the
    command line (`errors.user_message`: the project's own errors as they are, any other
    exception with its type first, `ValueError: ...`), or `interrupted (KeyboardInterrupt)`."""
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        return f"interrupted ({type(error).__name__})"
    return user_message(error)


def run_stage(run: Run, stage: str, *, force: bool = False) -> dict | None:
    """Run one stage unless it has completed (or `force`). Returns its summary, None if skipped.
    Holds the run folder's lock (`run_lock`) while it runs."""
    with run_lock(run):
        return _run_stage(run, stage, force=force)


def _run_stage(run: Run, name: str, *, force: bool = False) -> dict | None:
    stage = BY_NAME[name]
    barrier()
    complete = run.is_complete(name)
    # every process has decided before any can write this stage's marker (rank 0 runs a
    # main-only stage without waiting: a late process would otherwise see its marker and skip)
    barrier()
    if complete:
        if not force:
            console.print(f"[dim]stage {name}: complete, skipped[/dim]")
            log.info("stage %s: complete, skipped", name)
            return None
        if is_main_process():
            (run.stage_dir(name) / MARKER).unlink()
        barrier()
    console.print(f"[bold cyan]stage {name}[/bold cyan]")
    log.info("stage %s: start", name)
    started = time.time()
    try:
        if stage.distributed or is_main_process():
            summary = stage.run(run)
        else:
            summary = None  # a main-process-only stage: this process waits, then reads its summary
    except BaseException as e:
        log.error("stage %s: failed after %.1fs: %s", name, time.time() - started, failure_message(e))
        raise
    # under `accelerate launch`: one marker, by the main process; the others wait for it
    if is_main_process():
        run.mark_complete(name, summary, started)
    barrier()
    if summary is None:
        summary = run.marker(name).get("summary")
    log.info("stage %s: done in %.1fs", name, time.time() - started)
    console.print(f"[green]stage {name}: done in {time.time() - started:.1f}s[/green]")
    return summary


def run_pipeline(run: Run) -> dict[str, dict | None]:
    """Run the config's stages in order, skipping completed ones."""
    if not progress_enabled():
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    with run_lock(run):  # held across the stages: no other process slips in between two of them
        return {stage: run_stage(run, stage) for stage in run.config.stages}
