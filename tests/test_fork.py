"""`stages.fork_run` / `mmboundary fork`: which finished stages a changed config may reuse."""

from __future__ import annotations

import pytest

from mmboundary.config import STAGE_NAMES as STAGES
from mmboundary.config import RunConfig, load_config
from mmboundary.errors import RunError
from mmboundary.runs import Run
from mmboundary.stages import fork_run, reusable_stages


def _source(tmp_path, stages=STAGES):
    run = Run.open(tmp_path / "src", RunConfig())
    for stage in stages:
        d = run.stage_dir(stage)
        d.mkdir()
        (d / "artifact.txt").write_text(stage)
        run.mark_complete(stage)
    return run


@pytest.mark.parametrize("override, expected", [
    ("rl.lr=2e-5", ["data", "base", "estimate", "sft_data", "sft"]),
    ("rl.lr=3e-5", list(STAGES)),  # the default value: nothing changes
    ("rl.reward.beta=0", ["data", "base", "estimate", "sft_data", "sft"]),
    ("sft.train.epochs=3", ["data", "base", "estimate", "sft_data"]),
    ("statements.kind=numeric", ["data", "base", "estimate"]),
    ("estimate.fusion.pooling=max", ["data", "base"]),
    ("evaluate.match_threshold=0.5", ["data", "base", "estimate", "sft_data", "sft", "rl"]),
    ("seed=1", []),
    ("name=other", list(STAGES)),
])
def test_reusable_stages(override, expected):
    assert reusable_stages(RunConfig(), load_config(None, [override])) == expected


def test_fork_copies_valid_completed_stages(tmp_path):
    src = _source(tmp_path, stages=("data", "base", "estimate", "sft_data", "sft", "evaluate"))
    run, taken = fork_run(src.root, tmp_path / "dst", ["rl.lr=5e-5"])
    assert taken == ["data", "base", "estimate", "sft_data", "sft"]
    assert run.config.rl.lr == 5e-5 and src.config.rl.lr != 5e-5
    for stage in taken:
        assert run.is_complete(stage)
        assert (run.stage_dir(stage) / "artifact.txt").read_text() == stage
    assert not run.stage_dir("evaluate").exists()  # its inputs (the rl model) may change
    # the source is untouched by a rerun in the fork (hard links are unlinked, not rewritten)
    run.begin_stage("evaluate")
    assert (src.stage_dir("sft") / "artifact.txt").read_text() == "sft"


def test_fork_reuse_narrows_and_refuses_invalid(tmp_path):
    src = _source(tmp_path)
    run, taken = fork_run(src.root, tmp_path / "a", ["rl.lr=5e-5"], reuse=["data", "base"])
    assert taken == ["data", "base"]
    with pytest.raises(RunError, match="cannot reuse sft"):
        fork_run(src.root, tmp_path / "b", ["sft.train.epochs=2"], reuse=["data", "sft"])
    assert not (tmp_path / "b").exists()
    with pytest.raises(RunError, match="exists"):
        fork_run(src.root, tmp_path / "a", [])
    with pytest.raises(RunError, match="not a run directory"):
        fork_run(tmp_path / "nowhere", tmp_path / "c", [])
