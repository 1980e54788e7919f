"""End-to-end: the pipeline on a miniature of the built-in default, resume, and the CLI."""

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from _helpers import small_run
from mmboundary import pipeline, stages
from mmboundary.cli import app
from mmboundary.config import load_config
from mmboundary.runs import Run

SMALL = small_run()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run") / "r"
    run = Run.open(root, load_config(None, SMALL))
    pipeline.run_pipeline(run)
    return run


def test_pipeline_writes_every_stage(finished_run):
    run = finished_run
    for stage in ("data", "base", "estimate", "sft_data", "sft", "rl", "evaluate"):
        assert run.is_complete(stage), stage
    assert (run.root / "base" / "model" / "model.safetensors").exists()
    assert (run.root / "base" / "clip").is_dir()
    metrics = json.loads((run.root / "evaluate" / "metrics.json").read_text())
    assert set(metrics) == {"test", "ood"}
    assert metrics["test"]["vanilla"]["examples"] == 8
    assert (run.root / "rl" / "model" / "model.safetensors").exists()
    assert (run.root / "rl" / "metrics.jsonl").read_text().count("\n") == 1  # one iteration logged
    for model in ("vanilla", "sft", "rl"):
        chains = (run.root / "evaluate" / f"chains_{model}_test.jsonl").read_text().splitlines()
        assert len(chains) == 8
    assert (run.root / "sft" / "model" / "model.safetensors").exists()
    assert not (run.root / "sft" / "checkpoints").exists()  # removed once the model is saved
    sft = metrics["test"]["sft"]["expressed"]
    assert sft["examples"] == 8 and set(sft) >= {"ece", "mece", "auroc", "brier", "parsed_share", "level_shares"}
    assert 0.0 <= sft["parsed_share"] <= 1.0 if sft["parsed_share"] is not None else sft["steps"] == 0
    internal = metrics["test"]["vanilla"]["internal"]
    assert internal["parsed_share"] == 1.0  # every vanilla step has its internal level
    assert "config.yaml" in {p.name for p in run.root.iterdir()}
    assert "stage base: done" in (run.root / "logs" / "run.log").read_text()


def test_estimate_writes_scored_steps_for_every_generated_step(finished_run):
    from mmboundary.confidence.fusion import Levels, Normalizer

    est = finished_run.root / "estimate"
    Normalizer.load(est / "normalizer.json")
    levels = Levels.load(est / "levels.json")
    for split in ("train", "test", "ood"):
        chains = [json.loads(x) for x in (est / f"chains_{split}.jsonl").read_text().splitlines()]
        steps = [json.loads(x) for x in (est / f"steps_{split}.jsonl").read_text().splitlines()]
        assert len(steps) == sum(len(c["steps"]) for c in chains)
        for st in steps:
            assert st["lnlp"] >= 1.0 and st["mte"] >= 0.0 and st["token_sar"] >= 0.0
            assert 0.0 <= st["clip_score"] <= 1.0
            assert 0.0 <= st["fused"] <= 1.0 and st["level"] == levels.level(st["fused"])
            assert st["correct"] in (True, False)
    assert (est / "reliability_fused_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((finished_run.root / "evaluate" / "metrics.json").read_text())
    assert "fused" in metrics["test"]["vanilla_internal_signals"]


def test_resume_skips_finished_stages_and_reruns_unfinished(finished_run, monkeypatch):
    calls = []
    for name, stage in list(stages.BY_NAME.items()):
        monkeypatch.setitem(stages.BY_NAME, name, dataclasses.replace(
            stage, run=lambda run, name=name: calls.append(name) or {"rerun": True}))
    run = Run.open(finished_run.root)
    pipeline.run_pipeline(run)
    assert calls == []  # everything was complete
    (run.root / "evaluate" / "COMPLETE").unlink()  # as if evaluate had been interrupted
    pipeline.run_pipeline(Run.open(finished_run.root))
    assert calls == ["evaluate"]


def test_cli_reports_config_errors_by_key():
    result = CliRunner().invoke(app, ["config", "--set", "base.vlm.nope=1"])
    assert result.exit_code == 2
    assert "unknown key 'base.vlm.nope'" in result.output


def test_cli_refuses_a_run_dir_with_another_config(finished_run):
    result = CliRunner().invoke(app, ["run", "--run-dir", str(finished_run.root), "--set", "seed=5"])
    assert result.exit_code == 2
    assert "differs at: seed" in result.output


def test_answer_granularity_fork_runs_end_to_end(finished_run, tmp_path):
    """The SaySelf row's overlay on the miniature: a fork reruns sft_data, sft, rl and evaluate;
    the SFT data state once per chain, after the answer; evaluated chains carry one level per chain."""
    from datasets import load_from_disk

    from mmboundary.stages import fork_run

    run, reused = fork_run(finished_run.root, tmp_path / "sayself",
                           ["statements.granularity=answer", "rl.reward.alpha=0", "rl.reward.gamma=0"])
    assert reused == ["data", "base", "estimate"]
    pipeline.run_pipeline(run)
    ds = load_from_disk(str(run.stage_dir("sft_data") / "dataset"))
    assert len(ds) > 0
    for rec in ds:
        assert len(rec["levels"]) == 1 and all(s is None for s in rec["statements"][:-1])
        assert rec["statements"][-1] is not None and rec["response"].rstrip().endswith(".")
    summary = json.loads((run.stage_dir("sft_data") / "summary.json").read_text())
    assert summary["granularity"] == "answer"
    for model in ("sft", "rl"):
        for line in (run.stage_dir("evaluate") / f"chains_{model}_test.jsonl").read_text().splitlines():
            levels = {s["level"] for s in json.loads(line)["steps"]}
            assert len(levels) <= 1  # the answer's level (or None) on every step
    metrics = json.loads((run.stage_dir("evaluate") / "metrics.json").read_text())
    assert "expressed" in metrics["test"]["rl"]


_REPRO = """
import sys
from mmboundary import pipeline
from mmboundary.compare import stage_digest
from mmboundary.config import load_config
from mmboundary.runs import Run
run = Run.open(sys.argv[1], load_config(None, sys.argv[2:]))
pipeline.run_pipeline(run)
print("DIGESTS", stage_digest(run, "base"), stage_digest(run, "sft"), run.marker("base")["torch"]["threads"])
"""


def test_a_run_is_reproducible_at_a_given_thread_count(tmp_path):
    """The same config in two fresh processes (different hash seeds, one CPU thread each) trains
    bit-identical base and SFT weights. (Measured beside it, not asserted: with 2 threads instead
    of 1 the weights differ, so the thread count is recorded in every stage's COMPLETE marker.)"""
    import os
    import subprocess
    import sys

    overrides = [o for o in SMALL if not o.startswith(("rl.", "stages="))]
    overrides += ["stages=[data,base,estimate,sft_data,sft]"]
    out = []
    for k in (1, 2):
        env = dict(os.environ, PYTHONHASHSEED=str(k), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   HF_HUB_OFFLINE="1", MMBOUNDARY_PROGRESS="0")
        p = subprocess.run([sys.executable, "-c", _REPRO, str(tmp_path / f"r{k}"), *overrides], env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        line = next(ln for ln in p.stdout.splitlines() if ln.startswith("DIGESTS"))
        out.append(line.split()[1:])
    assert out[0] == out[1] and "None" not in out[0][:2] and out[0][2] == "1", out


def test_result_table_is_whole_in_a_log(capsys, monkeypatch):
    """Printed to a file or a pipe (not a terminal), the results table keeps its model names and
    level shares on one line per row (rich's default 80 columns cut them to 'vani…')."""
    from mmboundary.stages.evaluate import print_results

    monkeypatch.delenv("COLUMNS", raising=False)
    shares = {"1": 0.09, "2": 0.17, "3": 0.41, "4": 0.32, "5": 0.01}
    row = {"answer_accuracy": 0.46, "f1": 0.89,
           "internal": {"ece": 0.073, "mece": 0.053, "auroc": 0.751, "brier": 0.201, "parsed_share": 1.0,
                        "level_shares": shares}}
    print_results({"test": {"vanilla": row}, "ood": {"vanilla": row}})
    lines = capsys.readouterr().out.splitlines()
    rows = [ln for ln in lines if ln.startswith("│") and "vanilla" in ln]
    assert len(rows) == 2 and all("9 17 41 32 1" in ln for ln in rows), lines
    assert all("0.053" in ln and "0.751" in ln for ln in rows)

    monkeypatch.setenv("COLUMNS", "60")  # a width the user sets is honoured
    print_results({"test": {"vanilla": row}})
    assert not any(ln.startswith("│") and "vanilla" in ln for ln in capsys.readouterr().out.splitlines())
