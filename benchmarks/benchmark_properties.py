"""The vanilla model's properties on a built-in benchmark spec: what `docs/benchmark.md` freezes.

For each training seed, runs stages `data` and `base` of the config (the benchmark and the vanilla
model, nothing of the method), generates the vanilla model's greedy chains on every test and OOD
question, judges each step with the benchmark's checker, and reports, per split:

- answer accuracy, with a 95% percentile bootstrap interval over questions;
- step accuracy per stratum: visibility level x step kind (the claim type of the generated step:
  count, attribute, spatial, arithmetic, comparison, final; "unparsed" for a sentence of none),
  per visibility level, per object count, and answer accuracy per question type x level;
- the span of step accuracy over the strata with at least `--min-steps` steps on every seed
  (the lowest and highest stratum by mean over seeds).

Writes `benchmarks/results/benchmark_<name>_properties.json` (name: the spec's `name`).

    python benchmarks/benchmark_properties.py [--config configs/default.yaml] [--set key=value ...]
        [--seeds 0 1 2] [--root runs/properties] [--min-steps 100]

Resumable: a seed whose run folder finished `base` is not retrained, and a split whose chains
were written (`<run>/properties/chains_<split>.jsonl`) is not regenerated.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mmboundary.artifacts import load_split, pick_model, read_chains, write_jsonl  # noqa: E402
from mmboundary.data.benchmark.questions import question_type  # noqa: E402
from mmboundary.evaluation.bootstrap import QuestionScores, metric_intervals  # noqa: E402
from mmboundary.generation import chain_record, generate_texts  # noqa: E402
from mmboundary.models.factory import load_vlm  # noqa: E402
from mmboundary.runs import Run  # noqa: E402


def ensure_base(run_dir: Path, configs: list[str], sets: list[str], seed: int) -> float:
    """Stages data and base of one seed (skipped when complete); returns the seconds spent."""
    cmd = [sys.executable, "-m", "mmboundary.cli", "run", "--run-dir", str(run_dir),
           "--set", f"seed={seed}", "--set", "stages=[data,base]"]
    for c in configs:
        cmd += ["-c", c]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, HF_HUB_OFFLINE="1", MMBOUNDARY_PROGRESS="0")
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"seed {seed}: stages data/base failed ({proc.returncode})")
    return time.time() - t0


def vanilla_chains(run: Run, split: str) -> list:
    path = run.root / "properties" / f"chains_{split}.jsonl"
    if path.exists():
        return read_chains(path)
    examples = load_split(run, split)
    vlm = load_vlm(pick_model(run, "vanilla").path, run.config.model)
    texts = generate_texts(vlm, examples, run.config.generation, description=f"vanilla {split}")
    chains = [chain_record(ex, t) for ex, t in zip(examples, texts)]
    write_jsonl(path, chains)
    return chains


def split_rows(run: Run, split: str) -> list[dict]:
    """One row per question: its factors, answer correctness and steps (kind, correct)."""
    examples = {ex.id: ex for ex in load_split(run, split)}
    rows = []
    for chain in vanilla_chains(run, split):
        ex = examples[chain.example_id]
        d = ex.scene.difficulty
        rows.append({
            "id": ex.id, "level": d.level if d is not None else 0, "n_objects": len(ex.scene.objects),
            "type": question_type(ex.question), "answer_correct": bool(chain.answer_correct),
            "steps": [(s.kind or "unparsed", bool(s.correct)) for s in chain.steps],
        })
    return rows


def stratum_table(rows: list[dict], key) -> dict[str, dict]:
    """Step accuracy and step count per stratum; `key(row, kind)` names a step's stratum."""
    hits: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        for kind, ok in r["steps"]:
            hits[key(r, kind)].append(int(ok))
    return {k: {"steps": len(v), "accuracy": float(np.mean(v))} for k, v in sorted(hits.items())}


def summarise(rows: list[dict]) -> dict:
    answers = [QuestionScores(id=r["id"], answer_correct=r["answer_correct"], answer_confidence=None,
                              step_confidence=(), step_correct=()) for r in rows]
    accuracy = metric_intervals(answers, names=("accuracy",))["accuracy"]
    steps = np.array([ok for r in rows for _, ok in r["steps"]], dtype=float)
    by_type_level: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        by_type_level[f"{r['type']} L{r['level']}"].append(int(r["answer_correct"]))
    return {
        "questions": len(rows),
        "answer_accuracy": {"estimate": accuracy.estimate, "low": accuracy.low, "high": accuracy.high},
        "step_accuracy": float(steps.mean()) if len(steps) else None,
        "by_level_kind": stratum_table(rows, lambda r, k: f"L{r['level']} {k}"),
        "by_level": stratum_table(rows, lambda r, k: f"L{r['level']}"),
        "by_n_objects": stratum_table(rows, lambda r, k: f"{r['n_objects']} objects"),
        "answer_by_type_level": {k: {"questions": len(v), "accuracy": float(np.mean(v))}
                                 for k, v in sorted(by_type_level.items())},
    }


def span(per_seed: list[dict], min_steps: int) -> dict:
    """Lowest and highest level x kind stratum (mean over seeds) among strata with at least
    `min_steps` steps on every seed."""
    keys = set.intersection(*(set(s["by_level_kind"]) for s in per_seed))
    ok = [k for k in keys if all(s["by_level_kind"][k]["steps"] >= min_steps for s in per_seed)]
    means = {k: float(np.mean([s["by_level_kind"][k]["accuracy"] for s in per_seed])) for k in ok}
    if not means:
        return {}
    low, high = min(means, key=means.get), max(means, key=means.get)
    return {"lowest": {"stratum": low, "accuracy": means[low]},
            "highest": {"stratum": high, "accuracy": means[high]}, "strata": dict(sorted(means.items()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", "-c", action="append", default=[])
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--root", default=str(ROOT / "runs" / "properties"))
    ap.add_argument("--min-steps", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    per_seed: dict[str, dict[int, dict]] = {"test": {}, "ood": {}}
    seconds = {}
    spec_name = None
    for seed in args.seeds:
        run_dir = Path(args.root) / f"seed{seed}"
        t0 = time.time()
        ensure_base(run_dir, args.config, args.set, seed)
        run = Run.open(run_dir)
        spec_name = run.config.data.benchmark.name
        for split in ("test", "ood"):
            per_seed[split][seed] = summarise(split_rows(run, split))
        seconds[seed] = round(time.time() - t0, 1)
        for split in ("test", "ood"):
            s = per_seed[split][seed]
            a = s["answer_accuracy"]
            print(f"seed {seed} {split}: answer accuracy {a['estimate']:.3f} [{a['low']:.3f}, {a['high']:.3f}], "
                  f"step accuracy {s['step_accuracy']:.3f}; by level: "
                  + ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in s["by_level"].items()), flush=True)
    result = {
        "spec": run.config.data.benchmark.model_dump(mode="json"),
        "configs": args.config, "overrides": args.set, "seeds": args.seeds, "min_steps": args.min_steps,
        "seconds_per_seed": seconds,
        "answer_accuracy_mean": {sp: float(np.mean([per_seed[sp][s]["answer_accuracy"]["estimate"]
                                                    for s in args.seeds])) for sp in per_seed},
        "test_step_span": span([per_seed["test"][s] for s in args.seeds], args.min_steps),
        "per_seed": per_seed,
    }
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"benchmark_{spec_name}_properties.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    sp = result["test_step_span"]
    print(f"answer accuracy (mean over seeds): test {result['answer_accuracy_mean']['test']:.3f}, "
          f"ood {result['answer_accuracy_mean']['ood']:.3f}")
    if sp:
        print(f"test step accuracy span: {sp['lowest']} .. {sp['highest']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
