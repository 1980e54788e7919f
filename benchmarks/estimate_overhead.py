"""Overhead of the four internal-confidence signals over plain greedy generation.

On a finished run (stages data and base complete), takes the first N test examples, times
greedy generation of their chains, then `estimate_signals` (one teacher-forced pass + batched
MiniLM and CLIP calls; the encoder's embedding cache starts empty in every repeat, and loading
the encoder is counted) on those chains, best of R repeats each, and writes the ratio and the
per-step throughput to `benchmarks/results/estimate_overhead.json`.

    python benchmarks/estimate_overhead.py --run-dir runs/default [--n 64] [--repeats 3]

Only the tiny model is measured here; the issue's SmolLM2 row and the lm-polygraph
side-by-side are not written yet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MMBOUNDARY_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]


def best_of(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    from mmboundary.confidence.estimator import estimate_signals
    from mmboundary.confidence.similarity import SentenceSimilarity
    from mmboundary.generation import generate_chains
    from mmboundary.models import load_clip, load_vlm
    from mmboundary.pipeline import load_split, resolve_vlm_path
    from mmboundary.runs import Run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "estimate_overhead.json"))
    args = ap.parse_args()
    run = Run.open(args.run_dir)
    cfg = run.config
    vlm = load_vlm(resolve_vlm_path(run), cfg.model)
    clip = load_clip(run.require("base") / "clip")
    examples = load_split(run, "test", args.n)
    gen_s, chains = best_of(lambda: generate_chains(vlm, examples, cfg.generation), args.repeats)
    # a new similarity object per repeat: its embedding cache starts cold every time
    est_s, steps = best_of(lambda: estimate_signals(vlm, clip, SentenceSimilarity(None), examples, chains,
                                                    batch_size=cfg.estimate.batch_size, progress=False),
                           args.repeats)
    result = {
        "model": "tiny", "examples": len(examples), "steps": len(steps),
        "generation_seconds": round(gen_s, 3), "estimate_seconds": round(est_s, 3),
        "estimate_over_generation": round(est_s / gen_s, 2),
        "steps_per_second": round(len(steps) / est_s, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
