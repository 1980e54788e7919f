"""kill -9 of a training stage run in its own process, then resumed (issue 9, item 1).

The kill points: after a step, inside a checkpoint write (files in the temporary folder, not
renamed), after the rename but before the older checkpoint is removed, and after the stage's
work but before its COMPLETE marker; for `sft` and for `rl`.

A tiny run (random-initialised tiny VLM trained 4 steps, 12 train questions, numeric statements,
two internal signals) is prepared once up to `sft_data`, in this process. Each test copies it,
starts the stage in a subprocess (`tests/_kill_worker.py`, which runs `pipeline.run_stage` as
`mmboundary <stage>` does and reports each step, each checkpoint write and the marker write),
lets the worker pause at a chosen point, checks what is on disk there, kills it with SIGKILL,
checks that the stage has no COMPLETE marker, and resumes it with the real command line
(`python -m mmboundary.cli <stage> --run-dir RUN`, a fresh process). The resumed run must end
with bitwise the same final checkpoint (every tensor, and the same file bytes) and the same
metrics as an uninterrupted run of the same command on a copy of the same run directory.

Every subprocess gets OMP_NUM_THREADS=MKL_NUM_THREADS=1: the reference and the resumed runs
then do the same arithmetic in the same order, so equality is exact (CPU), not a tolerance.
Timings (wall clock, the only thing allowed to differ) are left out of the comparison.

Each test starts two processes (mostly imports) and took 13-16 s on 2 shared cores, the
fixtures 27 s more; the 8 tests together about 150 s, hence `slow`:
`HF_HUB_OFFLINE=1 python -m pytest -q -m slow tests/test_kill_resume.py`.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("_kill_worker.py")

#: 6 SFT steps of 4 items over 12 (two passes, so the resumed batch order crosses an epoch) and
#: 4 PPO iterations, a checkpoint after every step / iteration. The RL settings are explicit
#: (not the defaults): sampling and loss on every token, GAE with the value loss reaching the
#: trunk, an adaptive KL controller. The near-random tiny model writes no parsable statement, so
#: with the default statement-only loss the policy would hardly move; these settings make every
#: part of the update (sampling RNG, minibatch shuffling, policy, value head, KL controller,
#: AdamW state) change the weights, so a resume that lost any of it would show.
TINY = [
    "device=cpu", "seed=0",
    "data.benchmark.n_train=12", "data.benchmark.n_test=2", "data.benchmark.n_ood=2",
    "model.text_num_layers=1", "model.text_hidden_size=32", "model.text_intermediate_size=64",
    "model.vision_hidden_size=32", "model.vision_num_layers=1", "model.vision_intermediate_size=64",
    "base.vlm.max_steps=4", "base.vlm.batch_size=8", "base.clip.max_steps=1", "base.clip.batch_size=8",
    "generation.max_new_tokens=24",
    "estimate.splits=[train]", "estimate.signals=[lnlp,mte]", "estimate.fusion.ablate=[token_sar,clip_score]",
    "statements.kind=numeric",
    "sft.train.max_steps=6", "sft.train.batch_size=4", "sft.train.log_every=1", "sft.save_every=1",
    "rl.iterations=4", "rl.rollout_batch_size=2", "rl.samples_per_question=2", "rl.max_new_tokens=16",
    "rl.minibatch_size=2", "rl.ppo_epochs=2", "rl.save_every=1", "rl.lr=1e-3",
    "rl.sampling=all", "rl.loss_on=all", "rl.advantage=gae", "rl.value_grad_to_policy=true",
    "rl.kl_adaptive=true", "rl.kl_target=0.01", "rl.kl_horizon=4",
    "stages=[data,base,estimate,sft_data,sft,rl]",
]

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "MMBOUNDARY_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false",
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop("MMB_KILL_PAUSE_AT", None)
TIMEOUT = 300


# --- processes ----------------------------------------------------------------------------------

class Worker:
    """`_kill_worker.py RUN STAGE` paused at `pause`; its output is read by a thread."""

    def __init__(self, run: Path, stage: str, pause: str):
        self.pause = pause
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen([sys.executable, str(WORKER), str(run), stage],
                                     env={**ENV, "MMB_KILL_PAUSE_AT": pause}, cwd=run.parent,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    def wait_paused(self, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line == f"PAUSED {self.pause}":
                return
            if line is None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"the worker never reached {self.pause!r}:\n{self.output()}")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=60) == -signal.SIGKILL

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)


def run_cli(run: Path, stage: str) -> str:
    """`mmboundary <stage> --run-dir RUN` in a fresh process (resumes from its checkpoints)."""
    done = subprocess.run([sys.executable, "-m", "mmboundary.cli", stage, "--run-dir", str(run)], env=ENV,
                          cwd=run.parent, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- comparisons --------------------------------------------------------------------------------

def assert_same_file_of_weights(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a)), load_file(str(b))
    assert sorted(wa) == sorted(wb)
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{b}: {name} differs"
    assert a.read_bytes() == b.read_bytes()


def assert_moved(before: Path, after: Path) -> None:
    """Training changed the weights (so equal results are not equal starting points)."""
    from safetensors.torch import load_file

    wa, wb = load_file(str(before)), load_file(str(after))
    assert any(not torch.equal(wa[name], wb[name]) for name in wa)


def without_timings(record: dict) -> dict:
    """A summary or metrics line without what measures wall time, and without `resumed_from`."""
    out = {}
    for k, v in record.items():
        if k.startswith("seconds") or k == "resumed_from":
            continue
        out[k] = without_timings(v) if isinstance(v, dict) else v
    return out


def marker(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "COMPLETE").read_text("utf-8"))


def metrics_lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "rl" / "metrics.jsonl").read_text("utf-8").splitlines()]


def checkpoint_names(run: Path, stage: str) -> list[str] | None:
    d = run / stage / "checkpoints"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else None


# --- the runs -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The tiny run with data, base, estimate and sft_data complete (in this process)."""
    from mmboundary import pipeline
    from mmboundary.config import load_config
    from mmboundary.runs import Run

    root = tmp_path_factory.mktemp("prepared") / "run"
    run = Run.open(root, load_config(None, TINY))
    for stage in ("data", "base", "estimate", "sft_data"):
        pipeline.run_stage(run, stage)
    return root


@pytest.fixture(scope="module")
def sft_reference(prepared, tmp_path_factory) -> Path:
    """`mmboundary sft` uninterrupted, in a subprocess. Its run directory (sft complete, rl not
    started) is also where every rl test starts from."""
    root = copy_run(prepared, tmp_path_factory.mktemp("sft_reference") / "run")
    run_cli(root, "sft")
    assert marker(root, "sft")["summary"]["steps"] == 6 and "resumed_from" not in marker(root, "sft")["summary"]
    assert checkpoint_names(root, "sft") is None  # removed once the model is saved
    assert_moved(root / "base" / "model" / "model.safetensors", root / "sft" / "model" / "model.safetensors")
    return root


@pytest.fixture(scope="module")
def rl_reference(sft_reference, tmp_path_factory) -> Path:
    """`mmboundary rl` uninterrupted, in a subprocess, from the reference SFT model."""
    root = copy_run(sft_reference, tmp_path_factory.mktemp("rl_reference") / "run")
    run_cli(root, "rl")
    lines = metrics_lines(root)
    assert [x["iteration"] for x in lines] == [1, 2, 3, 4]
    assert lines[-1]["kl_coef"] != lines[0]["kl_coef"]  # the KL controller's state moves
    assert lines[0]["loss/policy_loss"] is not None and lines[0]["optimizer_steps"] == 4
    assert checkpoint_names(root, "rl") is None
    assert_moved(root / "sft" / "model" / "model.safetensors", root / "rl" / "model" / "model.safetensors")
    return root


# --- sft ----------------------------------------------------------------------------------------

#: (where the worker is killed, the checkpoint folder's entries at that moment, the checkpoint the
#: resumed run starts from; None: none left, the stage reruns from its start)
SFT_KILLS = [
    pytest.param("sft-step-4", ["step-3"], "step-3", id="after-step-4"),
    pytest.param("write-step-4-filled", [".tmp-step-4", "step-3"], "step-3", id="checkpoint-4-not-renamed"),
    pytest.param("write-step-4-placed", ["step-3", "step-4"], "step-4", id="checkpoint-4-old-not-removed"),
    pytest.param("marker-sft", None, None, id="before-marker"),
]


@pytest.mark.parametrize("pause, on_disk, resumed_from", SFT_KILLS)
def test_sft_killed_and_resumed_equals_an_uninterrupted_run(prepared, sft_reference, tmp_path, pause, on_disk,
                                                            resumed_from):
    run = copy_run(prepared, tmp_path / "run")
    worker = Worker(run, "sft", pause)
    try:
        worker.wait_paused()
        assert not (run / "sft" / "COMPLETE").exists()
        assert checkpoint_names(run, "sft") == on_disk
        if pause == "write-step-4-filled":
            # the temporary folder holds a whole-looking checkpoint, still never resumed from
            assert (run / "sft" / "checkpoints" / ".tmp-step-4" / "trainer_state.pt").is_file()
        if pause == "marker-sft":  # everything written but the marker
            assert (run / "sft" / "model" / "model.safetensors").is_file()
        worker.kill9()
    finally:
        worker.close()
    assert not (run / "sft" / "COMPLETE").exists(), "a killed stage has a marker"
    assert (run / "sft_data" / "COMPLETE").exists()

    run_cli(run, "sft")
    summary = marker(run, "sft")["summary"]
    assert summary.get("resumed_from") == resumed_from
    assert checkpoint_names(run, "sft") is None
    assert_same_file_of_weights(sft_reference / "sft" / "model" / "model.safetensors",
                                run / "sft" / "model" / "model.safetensors")
    reference = marker(sft_reference, "sft")["summary"]
    assert without_timings(summary) == without_timings(reference)  # loss curve included
    assert len(summary["loss_curve"]) == 6


# --- rl -----------------------------------------------------------------------------------------

#: (where the worker is killed, checkpoint entries then, metrics.jsonl lines then, the checkpoint
#: the resumed run starts from)
RL_KILLS = [
    pytest.param("rl-step-3", ["iter-2"], 2, "iter-2", id="after-iteration-3"),
    # metrics.jsonl already has iteration 3's line, the newest checkpoint is iter-2: the resumed
    # run must drop that line and log iteration 3 again, once
    pytest.param("write-iter-3-filled", [".tmp-iter-3", "iter-2"], 3, "iter-2", id="checkpoint-3-not-renamed"),
    pytest.param("write-iter-3-placed", ["iter-2", "iter-3"], 3, "iter-3", id="checkpoint-3-old-not-removed"),
    pytest.param("marker-rl", None, 4, None, id="before-marker"),
]


@pytest.mark.parametrize("pause, on_disk, lines, resumed_from", RL_KILLS)
def test_rl_killed_and_resumed_equals_an_uninterrupted_run(sft_reference, rl_reference, tmp_path, pause, on_disk,
                                                           lines, resumed_from):
    run = copy_run(sft_reference, tmp_path / "run")
    worker = Worker(run, "rl", pause)
    try:
        worker.wait_paused()
        assert not (run / "rl" / "COMPLETE").exists()
        assert checkpoint_names(run, "rl") == on_disk
        assert [x["iteration"] for x in metrics_lines(run)] == list(range(1, lines + 1))
        if pause == "marker-rl":
            assert (run / "rl" / "model" / "model.safetensors").is_file()
        worker.kill9()
    finally:
        worker.close()
    assert not (run / "rl" / "COMPLETE").exists(), "a killed stage has a marker"
    assert (run / "sft" / "COMPLETE").exists()

    run_cli(run, "rl")
    summary = marker(run, "rl")["summary"]
    assert summary.get("resumed_from") == resumed_from
    assert checkpoint_names(run, "rl") is None
    for name in ("model/model.safetensors", "value_head.safetensors"):
        assert_same_file_of_weights(rl_reference / "rl" / name, run / "rl" / name)
    got, want = metrics_lines(run), metrics_lines(rl_reference)
    assert [x["iteration"] for x in got] == [1, 2, 3, 4]
    assert [without_timings(x) for x in got] == [without_timings(x) for x in want]
    assert without_timings(summary) == without_timings(marker(rl_reference, "rl")["summary"])
