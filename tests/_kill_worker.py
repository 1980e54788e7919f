"""Worker of `tests/test_kill_resume.py`: runs one stage of an existing run directory in its own
process, as `mmboundary <stage> --run-dir RUN` does (`pipeline.run_stage`), and reports where it
is, so that the test can kill it with SIGKILL at a chosen point.

    python tests/_kill_worker.py RUN_DIR STAGE

Every event is printed on its own line, flushed, as `EVENT <name>`:

    <stage>-step-<n>             after optimiser step n (`sft`) or PPO iteration n (`rl`), read
                                 from the training loop's own log line; before its checkpoint
    write-<ckpt>-filled          checkpoint <ckpt> (`step-4`, `iter-3`) written into its
                                 temporary folder `.tmp-<ckpt>`, not yet renamed into place
    write-<ckpt>-placed          <ckpt> renamed into place, the older checkpoint not yet removed
    marker-<stage>               the stage function returned; its COMPLETE marker not yet written

With `MMB_KILL_PAUSE_AT=<name>` in the environment the worker prints `PAUSED <name>` at that
event and sleeps there (at most 300 s, then exits with status 3), waiting for the test's kill.

Nothing of the package is changed: the worker only adds a logging handler, wraps
`training.loop.write_checkpoint` (and the `shutil.rmtree` that function calls, through the
`shutil` name of that module), and `Run.mark_complete`, in this process.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

PAUSE_AT = os.environ.get("MMB_KILL_PAUSE_AT")


def event(name: str) -> None:
    print(f"EVENT {name}", flush=True)
    if name == PAUSE_AT:
        print(f"PAUSED {name}", flush=True)
        time.sleep(300)
        print(f"not killed at {name}", flush=True)
        os._exit(3)


class StepEvents(logging.Handler):
    """`<stage>-step-<n>` from the log line the loops write after each step / iteration."""

    PATTERNS = (re.compile(r"^(sft) step (\d+)/\d+ loss"), re.compile(r"^(rl) iteration (\d+)/\d+:"))

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        for pattern in self.PATTERNS:
            m = pattern.match(msg)
            if m:
                event(f"{m[1]}-step-{m[2]}")


def install_hooks() -> None:
    from mmboundary.runs import Run
    from mmboundary.training import loop

    logging.getLogger("mmboundary").addHandler(StepEvents(level=logging.INFO))

    writing: dict = {}
    original_write = loop.write_checkpoint

    def write_checkpoint(directory, prefix, number, fill):
        name = f"{prefix}-{number}"

        def fill_then_report(tmp: Path) -> None:
            fill(tmp)
            event(f"write-{name}-filled")

        writing.update(final=Path(directory) / name, placed=False)
        try:
            return original_write(directory, prefix, number, fill_then_report)
        finally:
            writing.clear()

    class ShutilOfLoop:
        """`shutil` as `training.loop` sees it: `rmtree` of an older checkpoint once the new one
        is in place reports `write-<ckpt>-placed` first."""

        def __getattr__(self, attr):
            return getattr(shutil, attr)

        @staticmethod
        def rmtree(path, *args, **kwargs):
            final = writing.get("final")
            path = Path(path)
            if (final is not None and not writing["placed"] and path != final and not path.name.startswith(".")
                    and final.is_dir()):
                writing["placed"] = True
                event(f"write-{final.name}-placed")
            return shutil.rmtree(path, *args, **kwargs)

    loop.write_checkpoint = write_checkpoint
    loop.shutil = ShutilOfLoop()

    original_mark = Run.mark_complete

    def mark_complete(self, stage, *args, **kwargs):
        event(f"marker-{stage}")
        return original_mark(self, stage, *args, **kwargs)

    Run.mark_complete = mark_complete


def main(run_dir: str, stage: str) -> None:
    install_hooks()
    from mmboundary.pipeline import run_stage
    from mmboundary.runs import Run

    run_stage(Run.open(run_dir), stage)
    print(f"EVENT done-{stage}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
