"""Time and peak memory of `mmboundary run` on the built-in default, per stage.

Runs the whole default pipeline in a fresh run directory as a subprocess (so its peak RSS is
measured by the OS: `ru_maxrss` of the child), then reads each stage's duration from its
`COMPLETE` marker, and writes `benchmarks/results/run_default.json`.

    python benchmarks/run_default.py [--config configs/default.yaml] [--set key=value ...] [--run-dir DIR]

The run directory is a fresh temporary one unless `--run-dir` names a new folder to keep.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "run_default.json"))
    ap.add_argument("--run-dir", default=None, help="a new folder to keep the run in (default: a temporary one)")
    args = ap.parse_args()
    if args.run_dir is not None and Path(args.run_dir).exists():
        raise SystemExit(f"{args.run_dir} exists: the benchmark times a fresh run")
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="mmb-bench-")) / "run"
    cmd = [sys.executable, "-m", "mmboundary.cli", "run", "-c", args.config, "--run-dir", str(run_dir)]
    for s in args.set:
        cmd += ["--set", s]
    env = dict(os.environ, HF_HUB_OFFLINE="1", MMBOUNDARY_PROGRESS="0")
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"run failed with exit code {proc.returncode}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    stages = {}
    for marker in sorted(run_dir.glob("*/COMPLETE")):
        info = json.loads(marker.read_text())
        stages[info["stage"]] = info.get("seconds")
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    result = {
        "command": " ".join(cmd[2:]),
        "wall_seconds": round(wall, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "stage_seconds": stages,
        "metrics": metrics,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(proc.stdout)
    print(json.dumps({k: result[k] for k in ("wall_seconds", "peak_rss_mb", "stage_seconds")}, indent=2))


if __name__ == "__main__":
    main()
