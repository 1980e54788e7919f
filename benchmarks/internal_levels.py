"""How calibrated is the target of R_CS? Internal levels recomputed on a model vs its statements.

The paper's self-calibration reward R_CS rewards stating the INTERNAL level of each step, recomputed
on the current policy (method.md section 5). This script measures, for one model of a finished run
(default: the SFT model, where RL starts), on the greedy chains of the first N questions of each
split, the step-level MECE of

- the levels the model states (its statements, backward-mapped), and
- the internal levels recomputed on the same model (`artifacts.scoring_context`: the run's signals,
  normaliser and thresholds, exactly as the rl stage computes them),

with the accuracy of the steps at each level. If the internal levels are worse calibrated on
held-out questions than the statements already are, an RL optimum that follows them cannot
improve held-out MECE. Writes `benchmarks/results/internal_levels.json`.

    python benchmarks/internal_levels.py --run-dir runs/final [--model sft] [--n 300]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mece_by_level(pairs: list[tuple[int | None, int]]) -> tuple[float, dict[str, list[float]]]:
    """MECE of (level, correct) pairs with p(level) = (level - 0.5) / 5 (unparsed steps left out;
    each level is its own bin of the 10 equal-width bins), and {level: [steps, accuracy]}."""
    cells: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for level, y in pairs:
        if level is None:
            continue
        cells[level][0] += 1
        cells[level][1] += int(y)
    n = sum(c[0] for c in cells.values())
    mece = sum(abs(c[1] / c[0] - (lv - 0.5) / 5) * c[0] for lv, c in cells.items()) / n if n else float("nan")
    return mece, {str(lv): [c[0], round(c[1] / c[0], 4)] for lv, c in sorted(cells.items())}


def main() -> None:
    from mmboundary.artifacts import load_split, scoring_context
    from mmboundary.models.factory import load_vlm
    from mmboundary.runs import Run
    from mmboundary.training.rl_config import RLConfig
    from mmboundary.training.samples import collect_samples

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--model", default="sft", choices=["sft", "rl"])
    ap.add_argument("--splits", nargs="+", default=["train", "test", "ood"])
    ap.add_argument("--n", type=int, default=300, help="questions per split (the first N)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "internal_levels.json"))
    args = ap.parse_args()
    run = Run.open(args.run_dir)
    ctx = scoring_context(run)
    vlm = load_vlm(run.require(args.model) / "model", run.config.model)
    cfg = RLConfig(algorithm="expected")  # greedy chains, as evaluated
    out: dict = {"run": args.run_dir, "model": args.model, "questions_per_split": args.n, "splits": {}}
    for split in args.splits:
        t0 = time.time()
        examples = load_split(run, split)[: args.n]
        expressed, internal = [], []
        for i in range(0, len(examples), 16):
            for s in collect_samples(vlm, examples[i:i + 16], ctx, cfg):
                for t in range(len(s.parsed.steps)):
                    y = s.correct[t]
                    expressed.append((s.expressed[t], y))
                    internal.append((s.internal[t] if s.active else None, y))
        m_e, cells_e = mece_by_level(expressed)
        m_i, cells_i = mece_by_level(internal)
        out["splits"][split] = {"steps": len(expressed), "mece_expressed": round(m_e, 4),
                                "mece_internal": round(m_i, 4), "expressed": cells_e, "internal": cells_i,
                                "seconds": round(time.time() - t0, 1)}
        print(f"{split}: {len(expressed)} steps; MECE stated {m_e:.3f}, internal on the {args.model} model "
              f"{m_i:.3f}; stated {cells_e}; internal {cells_i}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
