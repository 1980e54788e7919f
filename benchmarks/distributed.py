"""Time and peak memory per stage of a small pipeline run, 1 process vs 2 processes (CPU, DDP on
gloo), for the table of docs/running-at-scale.md.

For each process count, a fresh run directory is made and every stage is run as its own command
(`python -m mmboundary.cli <stage> --run-dir DIR`, or the same under `accelerate launch
--config_file configs/accelerate/cpu_2proc.yaml` for 2 processes). While a stage runs, the
resident memory of the whole process tree (launcher and workers) is sampled every 0.1 s with
psutil: `peak_rss_mb_total` is the highest sum over the tree, `peak_rss_mb_process` the highest
single process. Wall time is the command's, start-up (imports, process group) included; the
stage's own time is read from its `COMPLETE` marker. Writes `benchmarks/results/distributed.json`.

    python benchmarks/distributed.py [--set key=value ...] [--processes 1 2]

The machine's other load is not controlled: run it on an otherwise idle machine and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import cpu_name  # noqa: E402

#: A small version of the built-in default: the tiny model, a few steps per stage, every stage.
SMALL = [
    "data.benchmark.n_train=96", "data.benchmark.n_test=24", "data.benchmark.n_ood=24",
    "base.vlm.max_steps=30", "base.vlm.batch_size=16", "base.clip.max_steps=10", "base.clip.batch_size=16",
    "generation.max_new_tokens=48", "sft.train.max_steps=20", "sft.train.batch_size=16",
    "rl.iterations=2", "rl.rollout_batch_size=4", "rl.samples_per_question=2", "rl.max_new_tokens=48",
    "rl.minibatch_size=4", "rl.ppo_epochs=1",
    "stages=[data,base,estimate,sft_data,sft,rl,evaluate]",
]
STAGES = ["data", "base", "estimate", "sft_data", "sft", "rl", "evaluate"]


def _sample_tree(pid: int, stop: threading.Event, peak: dict) -> None:
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        try:
            procs = [root] + root.children(recursive=True)
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            peak["total"] = max(peak["total"], sum(rss))
            peak["process"] = max(peak["process"], max(rss, default=0))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)


def run_stage(cmd: list[str], env: dict) -> dict:
    peak = {"total": 0, "process": 0}
    stop = threading.Event()
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = threading.Thread(target=_sample_tree, args=(proc.pid, stop, peak), daemon=True)
    sampler.start()
    _, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall_s": round(time.time() - t0, 1), "peak_rss_mb_total": round(peak["total"] / 2**20),
            "peak_rss_mb_process": round(peak["process"] / 2**20)}


def bench(processes: int, overrides: list[str], workdir: Path) -> dict:
    run_dir = workdir / f"run-{processes}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMBOUNDARY_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    if processes == 1:
        head = [sys.executable, "-m", "mmboundary.cli"]
    else:
        head = ["accelerate", "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"),
                "--num_processes", str(processes), "-m", "mmboundary.cli"]
    stages = {}
    for i, stage in enumerate(STAGES):
        cmd = head + [stage, "--run-dir", str(run_dir)]
        if i == 0:
            for s in overrides:
                cmd += ["--set", s]
        row = run_stage(cmd, env)
        marker = json.loads((run_dir / stage / "COMPLETE").read_text())
        row["stage_s"] = marker.get("seconds")
        stages[stage] = row
        print(f"{processes} process(es) {stage}: {row}", flush=True)
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    return {"stages": stages, "total_wall_s": round(sum(r["wall_s"] for r in stages.values()), 1),
            "evaluate_examples": {split: {m: v.get("examples") for m, v in rows.items() if isinstance(v, dict)}
                                  for split, rows in metrics.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], help="more overrides (after the small settings)")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distributed.json"))
    args = ap.parse_args()
    overrides = SMALL + args.set
    workdir = Path(tempfile.mkdtemp(prefix="mmb-dist-"))
    results = {str(n): bench(n, overrides, workdir) for n in args.processes}
    out = {"what": "per-stage wall time and peak RSS of a small run, 1 vs 2 CPU processes (DDP, gloo)",
           "overrides": overrides, "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                                               "python": platform.python_version()},
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "processes": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
