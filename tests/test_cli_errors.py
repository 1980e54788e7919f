"""Every error a user can cause on the command line is one line, `error: ...`, and exit code 2
(no traceback); a stage that fails writes the same line to logs/run.log and leaves the run
folder resumable."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from _helpers import LOADER_FIXTURES, LOADER_IMAGES
from mmboundary import pipeline
from mmboundary.cli import app
from mmboundary.config import load_config
from mmboundary.errors import DataError
from mmboundary.runs import Run


@pytest.fixture()
def places(tmp_path, monkeypatch):
    """A working directory with a file, an empty folder, a run folder without stages and an image."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "bad.yaml").write_text("data: [1, 2\n")
    Run.open(tmp_path / "run", load_config(None, ["stages=[data]"]))
    shutil.copy(LOADER_IMAGES / "red.png", tmp_path / "red.png")
    return tmp_path


#: (command line, a word the message must hold): each a user's mistake.
BAD = [
    (["run", "--run-dir", "afile"], "is a file, not a run directory"),
    (["run", "--run-dir", "afile/sub"], "afile/sub"),
    *[([stage, "--run-dir", "afile"], "is a file") for stage in ("data", "base", "estimate", "sft_data", "sft", "rl",
                                                                   "evaluate")],
    (["run", "-c", "adir"], "config file not found"),
    (["run", "-c", "missing.yaml"], "config file not found: missing.yaml"),
    (["run", "-c", "bad.yaml"], "not valid YAML"),
    (["run", "--set", "base.vlm.epochs"], "key.path=value"),
    (["run", "--set", "data.source=jsonl"], "needs data.train"),
    (["run", "--run-dir", "run", "--set", "seed=3"], "different config"),
    (["evaluate", "--run-dir", "run"], "no vanilla model"),
    (["data", "--run-dir", "mp", "--set", "model.path=nosuch_ckpt"], "no checkpoint there (no folder "),
    (["config", "-c", "adir"], "config file not found"),
    (["config", "--set", "nosuch.key=1"], "unknown key 'nosuch'"),
    (["check-data", "-c", "missing.yaml"], "config file not found"),
    (["fork", "afile", "new"], "not a run directory"),
    (["fork", "run", "afile"], "exists"),
    (["compare", "--spec", "missing.yaml"], "not found"),
    (["compare", "--root", "afile", "--report-only"], "no saved comparison results"),
    (["ask", "q", "--model", "afile", "--image", "red.png"], "neither a run directory"),
    (["ask", "q", "--model", "run", "--image", "missing.png"], "image file not found"),
    (["ask", "q", "--model", "run", "--image", "afile"], "not an image"),
    (["serve", "--model", "afile"], "neither a run directory"),
    (["serve", "--model", "run", "--max-upload-mb", "0"], "--max-upload-mb"),
]


@pytest.mark.parametrize("args, says", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_every_command_reports_a_bad_input_on_one_line(places, args, says):
    result = CliRunner().invoke(app, args)
    out = result.output.strip()
    assert result.exit_code == 2, (out, result.exception)
    assert "Traceback" not in out
    last = out.splitlines()[-1]
    assert last.startswith("error: ") and says in last, out


def test_a_run_dir_that_is_a_file_from_a_shell(tmp_path):
    """The real entry point: one line on stderr, exit code 2."""
    (tmp_path / "afile").write_text("")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMBOUNDARY_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-m", "mmboundary.cli", "run", "--run-dir", "afile"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: afile is a file, not a run directory; give --run-dir a folder " \
                                  "(new or a run's)"


def test_a_failed_stage_writes_its_error_to_run_log_and_stays_resumable(tmp_path):
    data = tmp_path / "data.jsonl"
    cfg = load_config(None, ["data.source=jsonl", f"data.train={data}", f"data.test={data}", "stages=[data]"])
    run = Run.open(tmp_path / "r", cfg)
    with pytest.raises(DataError) as e:
        pipeline.run_pipeline(run)
    log = (run.root / "logs" / "run.log").read_text()
    assert "ERROR mmboundary.pipeline: stage data: failed after " in log and log.rstrip().endswith(str(e.value))
    assert not run.is_complete("data")
    shutil.copy(LOADER_FIXTURES / "good.jsonl", data)
    shutil.copytree(LOADER_IMAGES, tmp_path / "images")
    pipeline.run_pipeline(Run.open(run.root))  # resumed once the file is there
    assert run.is_complete("data")


def test_an_unexpected_failure_is_logged_with_its_type(tmp_path, monkeypatch):
    def boom(run):
        raise ValueError("something\nbroke")

    monkeypatch.setitem(pipeline.BY_NAME, "data", dataclasses.replace(pipeline.BY_NAME["data"], run=boom))
    run = Run.open(tmp_path / "r", load_config(None, ["stages=[data]"]))
    with pytest.raises(ValueError):
        pipeline.run_pipeline(run)
    assert (run.root / "logs" / "run.log").read_text().rstrip().endswith(
        "stage data: failed after 0.0s: ValueError: something broke")
