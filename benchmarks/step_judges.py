"""How well do the step judges reproduce exact step truth? (issue 22; docs/results/step-judges.md)

The built-in benchmark has both exact step truth (its checker) and reference chains, so every
text judge (`evaluation.judges`) can be measured against the checker on the same generated steps.
The reference chains are read exactly as a user's annotated data would be: each split of the run
is exported in the authors' annotated format (`data.benchmark.export_annotated`, final periods
stripped as in their files) and read back with `data.annotated.read_annotated`, so the judges see
no scene and no checker.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/step_judges.py measure --run runs/default
    python benchmarks/step_judges.py export --run runs/default --out runs/default-annotated-data
    python benchmarks/step_judges.py judged-run --exact-run runs/default --run runs/annotated

`measure`: for each text judge (encoder, consistent) with the offline MiniLM, the threshold is
chosen on the vanilla model's TRAIN steps only (the highest Cohen's kappa with the checker over
the grid 0.40, 0.45, ..., 0.95; ties: the lower threshold), then applied unchanged to every model's
test and OOD steps: agreement, precision and recall of "correct", Cohen's kappa, each with a 95 %
bootstrap interval over questions (a question's steps resampled together, 1000 resamples), and
the disagreements by step kind. Writes benchmarks/results/step_judges.json.

`export`: the run's train/test/ood splits as annotated JSON files (with their images' relative
paths), and the `--set` overrides that run the pipeline on them with `data.source: annotated`.

`judged-run`: a run made on that export (no checker available to it, steps judged by the run's
judge) against exact truth: every step of its chains is checked again with the benchmark's checker
(the examples of `--exact-run`, by id), and MECE (both definitions: over all steps, and over the
steps the judge matched, each with either truth on the same steps), step AUROC and Brier are
computed with each truth on the same chains and levels, with the paired bootstrap interval of
the difference. Writes benchmarks/results/step_judges_run.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import Counter  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

from mmboundary.artifacts import load_split, read_chains, read_step_levels  # noqa: E402
from mmboundary.confidence.similarity import SentenceSimilarity  # noqa: E402
from mmboundary.config import load_config  # noqa: E402
from mmboundary.data.annotated import read_annotated  # noqa: E402
from mmboundary.data.benchmark import check_step, export_annotated  # noqa: E402
from mmboundary.evaluation.bootstrap import metric, paired_difference, question_scores  # noqa: E402
from mmboundary.evaluation.expressed import chain_levels  # noqa: E402
from mmboundary.evaluation.judges import ConsistentJudge, EncoderJudge, agreement  # noqa: E402
from mmboundary.judging import judge_chains  # noqa: E402
from mmboundary.records import GeneratedChain  # noqa: E402
from mmboundary.runs import Run  # noqa: E402

SPLITS = ("train", "test", "ood")
GRID = tuple(round(0.40 + 0.05 * i, 2) for i in range(12))  # 0.40 .. 0.95
JUDGES = {"encoder": EncoderJudge, "consistent": ConsistentJudge}
N_RESAMPLES = 1000


class CachedSimilarity:
    """A `PairSimilarity` that scores each distinct pair once (the threshold grid re-judges the
    same pairs)."""

    def __init__(self, inner):
        self.inner = inner
        self.cache: dict[tuple[str, str], float] = {}

    def pairwise(self, pairs):
        new = list(dict.fromkeys(p for p in pairs if p not in self.cache))
        if new:
            for p, g in zip(new, np.asarray(self.inner.pairwise(new), dtype=float).reshape(-1)):
                self.cache[p] = float(g)
        return np.array([self.cache[p] for p in pairs], dtype=float)


def open_run(root: Path) -> Run:
    return Run(root, load_config(root / "config.yaml", relative_to_file=False))


def annotated_examples(run: Run, split: str, folder: Path):
    """The split's examples as a user's annotated file gives them (no scene, no checker)."""
    path = folder / f"{split}.json"
    export_annotated(load_split(run, split), path)
    return read_annotated(path, path.parent, dataset="aokvqa", check_images=False)


def run_chains(run: Run) -> dict[tuple[str, str], list[GeneratedChain]]:
    """(model, split) -> the run's chains with exact truth: the vanilla model's from the estimate
    stage, the trained models' from the evaluate stage."""
    out = {}
    for split in SPLITS:
        p = run.stage_dir("estimate") / f"chains_{split}.jsonl"
        if p.exists():
            out[("vanilla", split)] = read_chains(p)
        for model in ("sft", "rl"):
            p = run.stage_dir("evaluate") / f"chains_{model}_{split}.jsonl"
            if p.exists():
                out[(model, split)] = read_chains(p)
    return out


def step_pairs(exact: list[GeneratedChain], judged: list[GeneratedChain]):
    """Per question: [(judged correct, exact correct, kind)] over steps both know."""
    out = []
    for e, j in zip(exact, judged):
        out.append([(bool(sj.correct), bool(se.correct), se.kind) for se, sj in zip(e.steps, j.steps)
                    if se.correct is not None and sj.correct is not None])
    return out


def _stats(questions) -> dict:
    flat = [p for q in questions for p in q]
    a = agreement([p[0] for p in flat], [p[1] for p in flat])
    return a.model_dump() if hasattr(a, "model_dump") else dict(a._asdict())


def with_intervals(questions, seed: int = 0) -> dict:
    """`agreement` over all steps, with percentile intervals of agreement and kappa over questions."""
    point = _stats(questions)
    rng = np.random.default_rng(seed)
    draws = {"agreement": [], "kappa": []}
    n = len(questions)
    for _ in range(N_RESAMPLES):
        sample = [questions[i] for i in rng.integers(0, n, n)]
        s = _stats(sample)
        for k in draws:
            if s.get(k) is not None:
                draws[k].append(s[k])
    for k, v in draws.items():
        point[f"{k}_interval"] = [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else None
    return point


def disagreements(questions) -> dict:
    """Counts of judged-correct-but-wrong and judged-wrong-but-correct steps by step kind."""
    fp, fn = Counter(), Counter()
    for q in questions:
        for j, e, kind in q:
            if j and not e:
                fp[kind or "-"] += 1
            elif e and not j:
                fn[kind or "-"] += 1
    return {"judged_right_but_wrong": dict(fp), "judged_wrong_but_right": dict(fn)}


def measure(args) -> dict:
    run = open_run(Path(args.run))
    chains = run_chains(run)
    if ("vanilla", "train") not in chains:
        sys.exit(f"{run.root}: no estimate/chains_train.jsonl (run the estimate stage first)")
    sim = CachedSimilarity(SentenceSimilarity())
    with tempfile.TemporaryDirectory() as tmp:
        examples = {s: {ex.id: ex for ex in annotated_examples(run, s, Path(tmp))} for s in SPLITS}
    result: dict = {"run": str(run.root), "grid": list(GRID), "judges": {},
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "similarity": "all-MiniLM-L6-v2 (offline), bi-encoder"}
    for name, cls in JUDGES.items():
        train = chains[("vanilla", "train")]
        sweep = {}
        for t in GRID:
            judged = judge_chains(train, examples["train"], cls(sim, t))
            sweep[t] = _stats(step_pairs(train, judged))
        best = max(GRID, key=lambda t: ((sweep[t]["kappa"] or -1.0), -t))
        entry = {"threshold": best, "train_sweep": {str(t): sweep[t] for t in GRID}, "measured": {}}
        judge = cls(sim, best)
        for (model, split), cs in sorted(chains.items()):
            if split == "train" and model != "vanilla":
                continue
            qs = step_pairs(cs, judge_chains(cs, examples[split], judge))
            entry["measured"][f"{model}/{split}"] = {**with_intervals(qs), **disagreements(qs),
                                                     "questions": len(qs)}
        result["judges"][name] = entry
        print(f"\n{name}: threshold {best} (train kappa {sweep[best]['kappa']:.3f})")
        for key, m in entry["measured"].items():
            print(f"  {key:14s} n={m['n']:5d} agreement {m['agreement']:.3f} {m['agreement_interval']} "
                  f"kappa {m['kappa'] if m['kappa'] is None else round(m['kappa'], 3)} {m['kappa_interval']} "
                  f"precision {m['precision']} recall {m['recall']}")
    out = Path(args.out or RESULTS / "step_judges.json")
    out.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    print(f"\nwrote {out}")
    return result


def export(args) -> None:
    run = open_run(Path(args.run))
    out = Path(args.out).resolve()
    for split in SPLITS:
        n = export_annotated(load_split(run, split), out / f"{split}.json")
        print(f"{split}: {n} records -> {out / f'{split}.json'}")
    sets = ["data.source=annotated", f"data.train={out / 'train.json'}", f"data.test={out / 'test.json'}",
            f"data.ood={out / 'ood.json'}", f"data.image_dir={out}", "data.annotated_dataset=aokvqa",
            "data.match_split=false"]
    print("\nmmboundary run -r runs/annotated " + " ".join(f"--set {s}" for s in sets))


def _exact(chains: list[GeneratedChain], by_id: dict) -> list[GeneratedChain]:
    """The chains with every step checked again by the benchmark's checker. Each step keeps the
    judge's `reference`, so that "MECE over matched steps" is computed on the same steps with
    either truth."""
    out = []
    for c in chains:
        ex = by_id[c.example_id]
        steps = tuple(s.model_copy(update={"correct": check_step(s.text, ex), "match_degree": None})
                      for s in c.steps)
        out.append(c.model_copy(update={"steps": steps}))
    return out


def judged_run(args) -> dict:
    exact_run, run = open_run(Path(args.exact_run)), open_run(Path(args.run))
    result: dict = {"run": str(run.root), "exact_run": str(exact_run.root), "judge": run.config.judge.model_dump(),
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": {}}
    for split in ("test", "ood"):
        by_id = {ex.id: ex for ex in load_split(exact_run, split)}
        for model in ("vanilla", "sft", "rl"):
            path = run.stage_dir("evaluate") / f"chains_{model}_{split}.jsonl"
            if not path.exists():
                continue
            judged = read_chains(path)
            if model == "vanilla":
                levels = read_step_levels(run.stage_dir("estimate") / f"steps_{split}.jsonl")
                lv = [[levels.get((c.example_id, i)) for i in range(len(c.steps))] for c in judged]
            else:
                lv = [chain_levels(c) for c in judged]
            exact = _exact(judged, by_id)
            qj = [question_scores(c, v) for c, v in zip(judged, lv)]
            qe = [question_scores(c, v) for c, v in zip(exact, lv)]
            row = {"questions": len(qj)}
            for name in ("mece", "mece_matched", "auroc", "brier", "step_accuracy"):
                d = paired_difference([qj], [qe], name)
                row[name] = {"judge": metric(name, qj), "exact": metric(name, qe), "difference": d.estimate,
                             "interval": [d.low, d.high]}
            row["matched_share"] = sum(s.reference is not None for c in judged for s in c.steps) / max(
                1, sum(len(c.steps) for c in judged))
            result["rows"][f"{model}/{split}"] = row
            print(f"{model}/{split}: " + "  ".join(
                f"{k} {v['judge']:.3f} vs {v['exact']:.3f}" for k, v in row.items()
                if isinstance(v, dict) and v["judge"] is not None) + f"  matched {row['matched_share']:.2f}")
    out = Path(args.out or RESULTS / "step_judges_run.json")
    out.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    print(f"wrote {out}")
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--run", required=True)
    m.add_argument("--out")
    e = sub.add_parser("export")
    e.add_argument("--run", required=True)
    e.add_argument("--out", required=True)
    j = sub.add_parser("judged-run")
    j.add_argument("--exact-run", required=True)
    j.add_argument("--run", required=True)
    j.add_argument("--out")
    args = ap.parse_args(argv)
    {"measure": measure, "export": export, "judged-run": judged_run}[args.command](args)


if __name__ == "__main__":
    main()
