"""Folder locks (`mmboundary.locks`): another process is refused or waited for, the lock is free
again once its holder has ended however it ended, and a process may take its own lock again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mmboundary.locks import Busy, hold

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock locks are POSIX only")

_HOLDER = """
import sys, time
from pathlib import Path
from mmboundary.locks import hold
with hold(sys.argv[1], what="test"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    Path(sys.argv[1] + ".released").touch()  # the last thing done while holding it
"""


def hold_in_other_process(path, seconds: float) -> subprocess.Popen:
    """A process that holds the lock at `path` for `seconds`; returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_busy_names_the_holder_and_a_killed_holder_frees_the_lock(tmp_path):
    lock = tmp_path / "run" / ".lock"
    proc = hold_in_other_process(lock, 60)
    try:
        with pytest.raises(Busy) as e, hold(lock, what="the run folder run"):
            pass
        assert f"pid {proc.pid}" in e.value.holder
        assert str(e.value).startswith("the run folder run is in use by pid") and str(lock) in str(e.value)
    finally:
        proc.kill()
        proc.wait()
    with hold(lock, what="the run folder run"):  # no stale lock after a kill
        pass


def test_wait_blocks_until_the_holder_ends(tmp_path):
    lock = tmp_path / "x.lock"
    proc = hold_in_other_process(lock, 1.0)
    waited_for = []
    with hold(lock, what="x", wait=True, on_wait=waited_for.append):
        assert (tmp_path / "x.lock.released").exists()  # acquired only once the holder had let go
    assert len(waited_for) == 1 and f"pid {proc.pid}" in waited_for[0]
    proc.wait()


def test_reentrant_in_one_process_and_released_at_the_outer_exit(tmp_path):
    lock = tmp_path / "x.lock"
    with hold(lock, what="x"), hold(lock, what="x"):  # a pipeline holds it, and each stage again
        pass
    proc = hold_in_other_process(lock, 0)  # free for another process afterwards
    proc.wait()
    assert proc.returncode == 0


def test_a_stage_on_a_folder_another_process_writes_is_refused(tmp_path):
    from mmboundary.config import load_config
    from mmboundary.errors import RunError
    from mmboundary.pipeline import run_stage
    from mmboundary.runs import Run

    run = Run.open(tmp_path / "r", load_config(None))
    proc = hold_in_other_process(run.root / ".lock", 60)
    try:
        with pytest.raises(RunError, match=f"in use by pid {proc.pid}"):
            run_stage(run, "data")
        assert not run.is_complete("data") and not (run.root / "data").exists()
    finally:
        proc.kill()
        proc.wait()
