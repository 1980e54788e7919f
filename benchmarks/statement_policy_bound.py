"""How low can the step-level MECE of a statement policy go on this benchmark? Bounds from saved chains.

RL changes only which of the five levels a model states after each step (the default loss is on
the statement tokens). This script reads the greedy chains a finished run's `evaluate` stage saved
for one model (default: the SFT model, where RL starts) and measures, per split, the MECE of

- `stated`: the model's own statements, as evaluated;
- `relabel`: the best relabelling of the model's own levels (each stated level replaced by the
  level nearest to the accuracy of its steps), the most a policy that keeps the model's ranking
  of steps and only renames its levels can do;
- `category+level`: a policy that states, for each step, the level nearest to the accuracy of
  steps of the same kind (count, "there is no", arithmetic, total, attribute, answer) and the same
  stated level;
- `floor`: what a perfectly calibrated policy with the same level counts scores by chance alone
  (each step right with probability p(level); 200 draws): the sampling noise of MECE on this many
  steps.

`relabel` and `category+level` are fitted on one half of the split's questions and scored on the
other (2 folds x 20 random halvings, mean): fitted on the split itself, they are optimistic bounds
for a policy trained elsewhere. Pure file reading, no model is run. Writes
`benchmarks/results/statement_policy_bound.json`.

    python benchmarks/statement_policy_bound.py [--run-dir runs/compare-default/runs/seed0/full ...] [--model sft]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from mmboundary.confidence.fusion import level_probability
from mmboundary.evaluation.calibration import ece

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (1, 2, 3, 4, 5)


def step_kind(text: str) -> str:
    """The kind of a step of the built-in benchmark's chains, from its wording."""
    if text.startswith("So the answer"):
        return "answer"
    if re.match(r"^\d+ (plus|minus|is)\b", text):
        return "arithmetic"
    if "in total" in text:
        return "total"
    if re.match(r"^There (are|is) no ", text):
        return "none"
    if re.match(r"^There (are|is) ", text):
        return "count"
    if text.startswith("The "):
        return "attribute"
    return "other"


def read_steps(path: Path) -> list[tuple[str, str, int, int]]:
    """(example id, step kind, stated level, correct) of every step with a parsed statement and a truth."""
    out = []
    for line in path.read_text("utf-8").splitlines():
        chain = json.loads(line)
        for s in chain["steps"]:
            if s.get("level") is not None and s.get("correct") is not None:
                out.append((chain["example_id"], step_kind(s["text"]), int(s["level"]), int(s["correct"])))
    return out


def mece(levels: list[int], correct: list[int]) -> float:
    return ece([level_probability(lv) for lv in levels], correct)


def nearest_level(q: float) -> int:
    return min(LEVELS, key=lambda lv: abs(level_probability(lv) - q))


def cross_fitted(steps, key, reps: int = 20) -> float:
    """Mean MECE of the policy `key(step) -> cell`, cell -> level nearest its accuracy on the other
    half of the questions (cells unseen there: the half's overall accuracy, shrunk with 2 pseudo-steps)."""
    ids = sorted({s[0] for s in steps})
    scores = []
    for rep in range(reps):
        order = ids[:]
        random.Random(rep).shuffle(order)
        half = set(order[: len(order) // 2])
        for fit_in in (True, False):
            fit = [s for s in steps if (s[0] in half) == fit_in]
            score = [s for s in steps if (s[0] in half) != fit_in]
            base = sum(s[3] for s in fit) / len(fit)
            cells: dict = defaultdict(lambda: [0, 0])
            for s in fit:
                cells[key(s)][0] += s[3]
                cells[key(s)][1] += 1
            levels = [nearest_level((cells[key(s)][0] + 2 * base) / (cells[key(s)][1] + 2)) for s in score]
            scores.append(mece(levels, [s[3] for s in score]))
    return statistics.fmean(scores)


def floor(levels: list[int], draws: int = 200) -> float:
    rng = np.random.default_rng(0)
    p = np.array([level_probability(lv) for lv in levels])
    return float(np.mean([ece(p, (rng.random(len(p)) < p).astype(int)) for _ in range(draws)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", nargs="+", type=Path,
                    default=[ROOT / f"runs/compare-default/runs/seed{k}/full" for k in range(3)])
    ap.add_argument("--model", default="sft")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/statement_policy_bound.json")
    args = ap.parse_args()
    rows = []
    for run in args.run_dir:
        for split in ("test", "ood"):
            path = run / "evaluate" / f"chains_{args.model}_{split}.jsonl"
            if not path.exists():
                continue
            steps = read_steps(path)
            levels, correct = [s[2] for s in steps], [s[3] for s in steps]
            row = {"run": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run), "split": split,
                   "model": args.model, "steps": len(steps), "stated": mece(levels, correct),
                   "relabel": cross_fitted(steps, lambda s: s[2]),
                   "category+level": cross_fitted(steps, lambda s: (s[1], s[2])),
                   "floor": floor(levels)}
            rows.append(row)
            print(f"{row['run']} {split}: " + ", ".join(f"{k} {row[k]:.3f}" for k in
                                                         ("stated", "relabel", "category+level", "floor")))
    summary = {}
    for split in ("test", "ood"):
        sel = [r for r in rows if r["split"] == split]
        if sel:
            summary[split] = {k: {"mean": statistics.fmean(r[k] for r in sel),
                                  "sd": statistics.stdev(r[k] for r in sel) if len(sel) > 1 else None}
                              for k in ("stated", "relabel", "category+level", "floor")}
            print(split, "mean over runs: " + ", ".join(f"{k} {v['mean']:.3f}" for k, v in summary[split].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "mean_over_runs": summary}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
