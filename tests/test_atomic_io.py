"""Atomic artifacts and stage markers (issue 9, part 1, the parts testable without killing a
process): `io.atomic_write_*` never leaves half a file, and a stage that fails gets no
`COMPLETE` marker, so its next attempt starts from an empty folder."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from mmboundary import io as mio
from mmboundary.config import load_config
from mmboundary.runs import MARKER, Run


def test_atomic_write_goes_through_a_temporary_name_in_the_same_folder(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(mio.os, "replace", spy)
    target = tmp_path / "sub" / "metrics.json"
    mio.atomic_write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    [(src, dst)] = renames
    assert dst == target and src != target and src.parent == target.parent  # same filesystem
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_a_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    mio.atomic_write_text(target, "old")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mio.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        mio.atomic_write_text(target, "new and longer")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_stage_that_fails_gets_no_marker_and_restarts_clean(tmp_path, monkeypatch):
    from mmboundary import pipeline, stages

    def failing_stage(run):
        out = run.begin_stage("data")
        (out / "train.jsonl").write_text('{"id": "half"')  # an artifact of a half-done attempt
        raise RuntimeError("killed half-way")

    monkeypatch.setitem(stages.BY_NAME, "data", dataclasses.replace(stages.BY_NAME["data"], run=failing_stage))
    run = Run.open(tmp_path / "run", load_config(None, ["stages=[data]"]))
    with pytest.raises(RuntimeError, match="killed half-way"):
        pipeline.run_stage(run, "data")
    assert not run.is_complete("data")
    assert not (run.stage_dir("data") / MARKER).exists()
    with pytest.raises(Exception, match="has not completed"):
        run.require("data")  # a later stage refuses to read it
    assert list(run.begin_stage("data").iterdir()) == []  # the next attempt starts empty
