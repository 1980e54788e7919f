"""The RL stage over several seeds on one finished SFT run: the issue's calibration goals.

For each seed, forks the run (`mmboundary fork`: data, base, estimate, sft_data and sft are
reused, not recomputed), runs `rl` with `rl.seed=<seed>` and `evaluate`, then reports, per split,
the SFT-only model and the RL model: answer accuracy, ECE, step-level MECE, AUROC, parse rate and
level shares, as mean and spread (sample standard deviation) over the seeds, and writes
`benchmarks/results/rl_seeds.json`.

    python benchmarks/rl_seeds.py --run-dir runs/final [--seeds 0 1 2] [--set rl.key=value ...]

A seed whose fork already finished `evaluate` is read, not rerun (the script can be resumed).
The SFT-only numbers come from the same forks (identical in each: the sft model is shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _row(metrics: dict, split: str, model: str) -> dict:
    m = metrics[split][model]
    e = m["expressed"]
    return {"acc": m["answer_accuracy"], "ece": e["ece"], "mece": e["mece"], "auroc": e["auroc"],
            "brier": e["brier"], "parsed": e["parsed_share"], "f1": m.get("f1"),
            "levels": [e["level_shares"][str(k)] for k in range(1, 6)]}


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True, help="a run whose sft stage is complete")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], help="extra overrides for every fork")
    ap.add_argument("--prefix", default=None, help="fork folders: <prefix>-seed<k> (default: <run-dir>-rl)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rl_seeds.json"))
    args = ap.parse_args()
    src = Path(args.run_dir)
    prefix = args.prefix or f"{src}-rl"
    per_seed = {}
    for seed in args.seeds:
        fork = Path(f"{prefix}-seed{seed}")
        if not (fork / "evaluate" / "COMPLETE").exists():
            if not fork.exists():
                cmd = [sys.executable, "-m", "mmboundary.cli", "fork", str(src), str(fork), "--set", f"rl.seed={seed}"]
                for s in args.set:
                    cmd += ["--set", s]
                subprocess.run(cmd, check=True)
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "mmboundary.cli", "rl", "-r", str(fork)], check=True)
            subprocess.run([sys.executable, "-m", "mmboundary.cli", "evaluate", "-r", str(fork)], check=True)
            print(f"seed {seed}: {time.time() - t0:.0f} s", flush=True)
        metrics = json.loads((fork / "evaluate" / "metrics.json").read_text())
        rl_marker = json.loads((fork / "rl" / "COMPLETE").read_text())
        per_seed[seed] = {"run_dir": str(fork), "rl_seconds": rl_marker.get("seconds"),
                          **{f"{split}/{model}": _row(metrics, split, model)
                             for split in ("test", "ood") for model in ("sft", "rl")}}
    summary = {}
    for key in per_seed[args.seeds[0]]:
        if "/" not in key:
            continue
        rows = [per_seed[s][key] for s in args.seeds]
        summary[key] = {k: _mean_sd([r[k] for r in rows]) for k in ("acc", "ece", "mece", "auroc", "brier", "parsed")}
        summary[key]["levels"] = [statistics.fmean(r["levels"][i] for r in rows) for i in range(5)]
    lines = ["| split | model | Acc | ECE | MECE | AUROC | Brier | parsed | levels 1-5 (%) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, s in summary.items():
        split, model = key.split("/")
        cells = [f"{s[k][0]:.3f} ± {s[k][1]:.3f}" for k in ("acc", "ece", "mece", "auroc", "brier", "parsed")]
        lv = " ".join(f"{100 * x:.0f}" for x in s["levels"])
        lines.append(f"| {split} | {model} | " + " | ".join(cells) + f" | {lv} |")
    table = "\n".join(lines)
    print(table)
    out = {"source_run": str(src), "seeds": args.seeds, "overrides": args.set, "per_seed": per_seed,
           "summary": {k: {kk: list(v) if isinstance(v, tuple) else v for kk, v in s.items()}
                       for k, s in summary.items()}, "table": table}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
