"""`artifacts`: reading a run folder's contents as typed records."""

from __future__ import annotations

import json

import pytest
import torch

from mmboundary.artifacts import model_device, pick_model, read_metrics, split_names
from mmboundary.config import load_config
from mmboundary.errors import RunError
from mmboundary.runs import Run

ROW = {"examples": 2, "answer_accuracy": 0.5, "answered": 1.0, "steps": 4, "steps_per_chain": 2.0,
       "step_accuracy": 0.75, "steps_with_truth": 4, "chains_all_steps_correct": 0.5, "f1": None}
REPORT = {"examples": 2, "accuracy": 0.5, "steps": 4, "parsed_share": 1.0, "steps_scored": 4, "step_accuracy": 0.75,
          "ece": 0.1, "mece": 0.2, "auroc": None, "answer_auroc": None, "brier": 0.25,
          "answers_with_confidence": 2, "level_shares": {"1": 0.0, "2": 0.0, "3": 0.5, "4": 0.5, "5": 0.0}}


def _run(tmp_path) -> Run:
    return Run.open(tmp_path / "run", load_config(None, []))


def _complete(run: Run, stage: str, files: dict[str, str]) -> None:
    d = run.begin_stage(stage)
    for name, text in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    run.mark_complete(stage)


def test_read_metrics_gives_typed_rows(tmp_path):
    run = _run(tmp_path)
    metrics = {"test": {"vanilla": {**ROW, "internal": REPORT}, "sft": {**ROW, "expressed": REPORT},
                        "vanilla_internal_signals": {"fused": {"auroc": 0.7}}}}
    _complete(run, "evaluate", {"metrics.json": json.dumps(metrics)})
    got = read_metrics(run)
    assert list(got) == ["test"] and list(got["test"].models) == ["vanilla", "sft"]
    assert got["test"].models["vanilla"].internal.mece == 0.2 and got["test"].models["vanilla"].expressed is None
    assert got["test"].models["sft"].expressed.level_shares == {1: 0.0, 2: 0.0, 3: 0.5, 4: 0.5, 5: 0.0}
    assert got["test"].vanilla_internal_signals == {"fused": {"auroc": 0.7}}


def test_read_metrics_names_the_file_and_field_of_a_bad_row(tmp_path):
    run = _run(tmp_path)
    _complete(run, "evaluate", {"metrics.json": json.dumps({"ood": {"rl": {**ROW, "steps": "many"}}})})
    with pytest.raises(RunError, match=r"metrics\.json: ood\.models\.rl\.steps"):
        read_metrics(run)


def test_pick_model_takes_the_named_or_newest_model(tmp_path):
    run = _run(tmp_path)
    _complete(run, "base", {"model/config.json": "{}"})
    assert pick_model(run).name == "vanilla"
    _complete(run, "sft", {"model/config.json": "{}"})
    assert pick_model(run) == ("sft", str(run.stage_dir("sft") / "model"), True)
    assert pick_model(run, "vanilla").expressed is False
    with pytest.raises(RunError, match=r"no 'rl' model \(this run has: vanilla, sft\)"):
        pick_model(run, "rl")


def test_split_names_and_model_device(tmp_path):
    run = _run(tmp_path)
    _complete(run, "data", {"train.jsonl": "", "ood.jsonl": ""})
    assert split_names(run) == ["train", "ood"]
    assert model_device("cpu") == torch.device("cpu")
    assert model_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
