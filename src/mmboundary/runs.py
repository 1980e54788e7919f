"""Run directories: the whole record of an experiment.

Layout of `runs/<name>/`:

    config.yaml          the fully resolved config (written when the run is created)
    logs/run.log         everything the stages logged
    <stage>/             one folder per stage with its artifacts
    <stage>/COMPLETE     a JSON marker written last, atomically, when the stage finished

`mmboundary run` on an existing run directory skips stages that have their marker and runs
the rest. A stage that was interrupted has no marker; it is started again (its folder is
emptied first, so no artifact of a half-finished attempt is ever mistaken for a result).
Artifacts are written to a temporary name and renamed (`atomic_write_*`).

Under several processes (`accelerate launch`), only the main process creates the directory and
writes `config.yaml` (every process first checks the saved config, so all raise the same error or
none, then waits until it is written); each other process logs to `logs/run.rank-<r>.log`
instead of `run.log`, so no file is written by two processes.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

from mmboundary.config import RunConfig, config_diff, dump_config, load_config
from mmboundary.distributed import barrier, is_distributed, is_main_process, process_state, world_info
from mmboundary.errors import RunError
from mmboundary.io import atomic_write_json, atomic_write_text

MARKER = "COMPLETE"


class Run:
    """A run directory and its config."""

    def __init__(self, root: Path, config: RunConfig):
        self.root = Path(root)
        self.config = config

    # -- creation / reopening ----------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, config: RunConfig | None = None) -> "Run":
        """Create a run directory for `config`, or reopen an existing one.

        Reopening with a config that differs from the saved one is an error naming the keys,
        since the finished stages were computed under the saved config (a path saved relative
        and given absolute, naming the same place from the working directory, is no difference).
        Reopening without a config uses the saved one, read as written (`relative_to_file=False`).
        A `root` that is a file is a `RunError`.
        """
        root = Path(root)
        saved_path = root / "config.yaml"
        if root.exists() and not root.is_dir():
            raise RunError(f"{root} is a file, not a run directory; give --run-dir a folder (new or a run's)")
        if saved_path.exists() and not saved_path.is_file():
            raise RunError(f"{saved_path} is not a file: {root} is not a run directory")
        if is_distributed():
            # every process decides from the same disk state (before anyone writes), so that all
            # raise the same error or none; then the main process writes and the others wait
            exists = saved_path.exists()
            device = (load_config(saved_path, relative_to_file=False) if exists else config or RunConfig()).device
            process_state(device)
            barrier()
            if not exists and config is None:
                raise RunError(f"{root} is not a run directory (no config.yaml)")
            if not exists:
                if is_main_process():
                    root.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(saved_path, dump_config(config))
                barrier()
                run = cls(root, config)
                run._setup_logging()
                return run
        if saved_path.exists():
            saved = load_config(saved_path, relative_to_file=False)
            if config is not None:
                diff = config_diff(saved, config, paths_from=Path.cwd())
                if diff:
                    raise RunError(
                        f"{root} was created with a different config (differs at: "
                        f"{', '.join(diff[:8])}{' ...' if len(diff) > 8 else ''}); use another "
                        "--run-dir, or resume it without a config")
            run = cls(root, saved)
        else:
            if config is None:
                raise RunError(f"{root} is not a run directory (no config.yaml)")
            root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(saved_path, dump_config(config))
            run = cls(root, config)
        run._setup_logging()
        return run

    def _setup_logging(self) -> None:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        logger = logging.getLogger("mmboundary")
        logger.setLevel(logging.INFO)
        rank, world = world_info()
        name = "run.log" if rank == 0 else f"run.rank-{rank}.log"  # one writer per file
        log_file = str((self.root / "logs" / name).resolve())
        for h in list(logger.handlers):
            if isinstance(h, logging.FileHandler):
                if h.baseFilename == log_file:
                    return
                logger.removeHandler(h)
                h.close()
        h = logging.FileHandler(log_file, encoding="utf-8")
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(h)

    # -- stages ---------------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def is_complete(self, stage: str) -> bool:
        return (self.stage_dir(stage) / MARKER).is_file()

    def begin_stage(self, stage: str, keep: tuple[str, ...] = ()) -> Path:
        """An empty folder for a stage that has not completed: leftovers of an interrupted
        attempt are removed, except the entries named in `keep` (a resumable stage keeps its
        `checkpoints`)."""
        d = self.stage_dir(stage)
        if self.is_complete(stage):
            raise RunError(f"stage {stage!r} of {self.root} is already complete")
        if d.exists():
            for p in d.iterdir():
                if p.name in keep:
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        d.mkdir(parents=True, exist_ok=True)
        return d

    def mark_complete(self, stage: str, summary: dict | None = None, started: float | None = None) -> None:
        info = {"stage": stage, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        torch = sys.modules.get("torch")
        if torch is not None:  # a stage's weights depend on these (CPU kernels split sums by thread)
            info["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads()}
        if started is not None:
            info["seconds"] = round(time.time() - started, 2)
        if summary:
            info["summary"] = summary
        atomic_write_json(self.stage_dir(stage) / MARKER, info)

    def marker(self, stage: str) -> dict:
        return json.loads((self.stage_dir(stage) / MARKER).read_text("utf-8"))

    def require(self, stage: str) -> Path:
        """The folder of a stage that must be complete (an input of another stage)."""
        if not self.is_complete(stage):
            raise RunError(f"stage {stage!r} has not completed in {self.root}; run it first "
                           f"(mmboundary {stage} --run-dir {self.root})")
        return self.stage_dir(stage)
