"""How well does the backward mapping (statement -> level) read statements it was never tuned on?

Loads the statement mapper exactly as the pipeline does (`artifacts.make_statement_mapper` on the
run config, default `configs/default.yaml`) and maps

- the held-out statements (`src/mmboundary/statements/data/heldout_statements.jsonl`, written by
  hand, never used to tune the mapper; see that folder's README.md),
- the tuning paraphrases (`PARAPHRASES` of tests/test_statements.py, the 61 statements the
  mapper's settings were chosen on),
- ordinary sentence tails (`src/mmboundary/statements/data/ordinary_tails.jsonl`, and the tuning
  tails `NOT_STATEMENTS` of tests/test_statements.py), which must stay unparsed.

Reports, per set of statements: exact and within-one accuracy (unparsed counted as wrong, as the
tests do), the confusion matrix (true level x mapped level, plus unparsed), the share of misses too
low / too high / unparsed, and breakdowns by form (held-out); per set of tails: the share read as
statements (false positives). Also the best cosine to the references (the quantity thresholded by
`min_similarity`) on each set, and the time to map a batch of 1,000 statements (the held-out set
repeated to 1,000) on one CPU thread with a warm mapper (pool embedded and read-out fitted before).
Writes `benchmarks/results/statement_mapping.json` and prints a compact table.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/statement_mapping.py [--config configs/default.yaml]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import ast  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from importlib import resources  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

LEVELS = (1, 2, 3, 4, 5)
BATCH = 1000
#: The held-out sets: (statements, ordinary tails) in the package's `statements/data` folder.
HELDOUT = {"v1": ("heldout_statements.jsonl", "ordinary_tails.jsonl"),
           "v2": ("heldout_v2_statements.jsonl", "heldout_v2_tails.jsonl")}


# --- the sets -----------------------------------------------------------------------------------

def read_jsonl_resource(name: str) -> list[dict]:
    """Records of a JSONL file in the package's `statements/data` folder."""
    text = resources.files("mmboundary.statements").joinpath("data", name).read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def tuning_sets(path: Path = ROOT / "tests" / "test_statements.py") -> tuple[dict[int, list[str]], list[str]]:
    """`PARAPHRASES` (level -> statements) and `NOT_STATEMENTS` of the statements test, read as
    literals from its source (the test module itself is not imported)."""
    found = {}
    for node in ast.parse(path.read_text("utf-8")).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id in ("PARAPHRASES", "NOT_STATEMENTS"):
            found[target.id] = ast.literal_eval(node.value)
    return {int(k): list(v) for k, v in found["PARAPHRASES"].items()}, list(found["NOT_STATEMENTS"])


# --- metrics ------------------------------------------------------------------------------------

def statement_metrics(truth: list[int], got: list[int | None]) -> dict:
    """Exact / within-one accuracy (unparsed = wrong), confusion matrix, direction of the misses."""
    n = len(truth)
    pred = np.array([0 if g is None else g for g in got])
    y = np.array(truth)
    parsed = pred > 0
    exact = pred == y
    within = parsed & (np.abs(pred - y) <= 1)
    misses = ~exact
    low = parsed & (pred < y)
    high = parsed & (pred > y)
    confusion = {str(t): {**{str(p): int(np.sum((y == t) & (pred == p))) for p in LEVELS},
                          "unparsed": int(np.sum((y == t) & ~parsed))} for t in LEVELS}
    n_miss = int(misses.sum())
    return {
        "n": n,
        "exact": round(float(exact.mean()), 4),
        "within_one": round(float(within.mean()), 4),
        "parsed": round(float(parsed.mean()), 4),
        "exact_among_parsed": round(float(exact[parsed].mean()), 4) if parsed.any() else None,
        "misses": n_miss,
        "misses_too_low": int(low.sum()),
        "misses_too_high": int(high.sum()),
        "misses_unparsed": int((~parsed).sum()),
        "share_of_misses": {
            "too_low": round(float(low.sum()) / n_miss, 4) if n_miss else None,
            "too_high": round(float(high.sum()) / n_miss, 4) if n_miss else None,
            "unparsed": round(float((~parsed).sum()) / n_miss, 4) if n_miss else None,
        },
        "mean_signed_error_parsed": round(float((pred[parsed] - y[parsed]).mean()), 4) if parsed.any() else None,
        "confusion": confusion,
    }


def quantiles(values: np.ndarray) -> dict:
    """min, 5/25/50/75/95% quantiles and max, rounded."""
    if len(values) == 0:
        return {}
    qs = np.quantile(values, [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1])
    return dict(zip(["min", "q05", "q25", "median", "q75", "q95", "max"], [round(float(q), 4) for q in qs]))


def best_cosines(mapper, texts: list[str]) -> np.ndarray:
    """The best cosine of each text to the mapper's references (what `min_similarity` thresholds)."""
    if not texts:
        return np.zeros(0)
    best, _ = mapper.scores(mapper.encoder.embed([t.strip() for t in texts]))
    return np.asarray(best, dtype=np.float64)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# --- main ---------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"),
                    help="run config whose `statements` section builds the mapper")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the 1,000-statement batch")
    ap.add_argument("--heldout", choices=sorted(HELDOUT), default="v1",
                    help="which held-out set: v1 (phase 1) or v2 (written 2026-12-03, before phase 3)")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/statement_mapping[_v2].json")
    args = ap.parse_args()
    statements_file, tails_file = HELDOUT[args.heldout]
    if args.out is None:
        suffix = "" if args.heldout == "v1" else f"_{args.heldout}"
        args.out = str(ROOT / "benchmarks" / "results" / f"statement_mapping{suffix}.json")

    import torch

    torch.set_num_threads(1)
    from _machine import cpu_name
    from mmboundary.artifacts import make_statement_mapper
    from mmboundary.config import load_config

    cfg = load_config(args.config)
    if cfg.statements.kind != "statement":
        raise SystemExit(f"{args.config}: statements.kind is {cfg.statements.kind!r}; "
                         "this measures the statement mapper")

    heldout = read_jsonl_resource(statements_file)
    tails = read_jsonl_resource(tails_file)
    paraphrases, tuning_tails = tuning_sets()
    tuning = [{"text": t, "level": lv} for lv in LEVELS for t in paraphrases[lv]]

    # Cold: build the mapper as the pipeline does, then the first call embeds the pool, fits the
    # read-out and maps (the encoder load is inside).
    t0 = time.perf_counter()
    mapper = make_statement_mapper(cfg)
    mapper.level_of("and I am fairly sure of it")  # a pool statement: builds nothing but the exact table
    mapper.pool_embeddings()
    mapper.scores(mapper.pool_embeddings()[:1])  # fits the read-out
    cold_s = time.perf_counter() - t0

    got_held = mapper.levels_of([r["text"] for r in heldout])
    got_tune = mapper.levels_of([r["text"] for r in tuning])
    got_tails = mapper.levels_of([r["text"] for r in tails])
    got_tuning_tails = mapper.levels_of(tuning_tails)

    held = statement_metrics([r["level"] for r in heldout], got_held)
    tune = statement_metrics([r["level"] for r in tuning], got_tune)

    by_form: dict[str, dict] = {}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(heldout):
        groups[r["form"]].append(i)
    for form, idx in sorted(groups.items()):
        m = statement_metrics([heldout[i]["level"] for i in idx], [got_held[i] for i in idx])
        by_form[form] = {k: m[k] for k in ("n", "exact", "within_one", "parsed", "misses_too_low",
                                            "misses_too_high", "misses_unparsed")}
    by_person: dict[str, dict] = {}
    groups = defaultdict(list)
    for i, r in enumerate(heldout):
        groups[r.get("person", "?")].append(i)
    for person, idx in sorted(groups.items()):
        m = statement_metrics([heldout[i]["level"] for i in idx], [got_held[i] for i in idx])
        by_person[person] = {k: m[k] for k in ("n", "exact", "within_one", "parsed")}

    tail_fp = [g is not None for g in got_tails]
    by_kind: dict[str, dict] = {}
    kinds: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(tails):
        kinds[r["kind"]].append(i)
    for kind, idx in sorted(kinds.items()):
        by_kind[kind] = {"n": len(idx), "read_as_statement": int(sum(tail_fp[i] for i in idx))}

    cos_held = best_cosines(mapper, [r["text"] for r in heldout])
    cos_tune = best_cosines(mapper, [r["text"] for r in tuning])
    cos_tails = best_cosines(mapper, [r["text"] for r in tails])

    # Speed: the held-out set repeated to 1,000 statements, warm mapper, one thread.
    batch = [heldout[i % len(heldout)]["text"] for i in range(BATCH)]
    times = []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        out = mapper.levels_of(batch)
        times.append(time.perf_counter() - t0)
    assert out == [got_held[i % len(heldout)] for i in range(BATCH)]

    result = {
        "what": "backward mapping (statement -> level) on held-out statements, tuning paraphrases and "
                "ordinary sentence tails (benchmarks/statement_mapping.py)",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "commit": git_commit(),
        "config": str(Path(args.config).resolve().relative_to(ROOT)) if Path(args.config).resolve().is_relative_to(ROOT)
        else str(args.config),
        "mapper": {
            "built_by": "mmboundary.artifacts.make_statement_mapper(load_config(config))",
            "class": type(mapper).__name__,
            "method": mapper.method,
            "min_similarity": mapper.min_similarity,
            "strip_connectives": mapper.strip_connectives,
            "exact_match": mapper.exact_match,
            "pool_sizes": {str(lv): len(v) for lv, v in mapper.pool.items()},
            "references": len(mapper.references),
            "encoder": Path(mapper.encoder.path).name,
        },
        "unparsed_counted_as": "wrong (exact and within-one)",
        "sets": {
            "heldout": {"source": f"src/mmboundary/statements/data/{statements_file}", **held,
                        "by_form": by_form, "by_person": by_person,
                        "best_cosine": quantiles(cos_held),
                        "below_min_similarity": int(np.sum(cos_held < mapper.min_similarity))},
            "tuning": {"source": "tests/test_statements.py::PARAPHRASES", **tune,
                       "best_cosine": quantiles(cos_tune),
                       "below_min_similarity": int(np.sum(cos_tune < mapper.min_similarity))},
        },
        "gap_tuning_minus_heldout": {"exact": round(tune["exact"] - held["exact"], 4),
                                     "within_one": round(tune["within_one"] - held["within_one"], 4)},
        "tails": {
            "ordinary": {"source": f"src/mmboundary/statements/data/{tails_file}", "n": len(tails),
                         "read_as_statement": int(sum(tail_fp)),
                         "false_positive_rate": round(float(np.mean(tail_fp)), 4),
                         "by_kind": by_kind,
                         "false_positives": [{"text": r["text"], "kind": r["kind"], "level": g}
                                             for r, g in zip(tails, got_tails) if g is not None],
                         "best_cosine": quantiles(cos_tails)},
            "tuning": {"source": "tests/test_statements.py::NOT_STATEMENTS", "n": len(tuning_tails),
                       "read_as_statement": int(sum(g is not None for g in got_tuning_tails)),
                       "false_positive_rate": round(float(np.mean([g is not None for g in got_tuning_tails])), 4)},
        },
        "heldout_misses": [{"text": r["text"], "level": r["level"], "form": r["form"], "mapped": g}
                           for r, g in zip(heldout, got_held) if g != r["level"]],
        "tuning_misses": [{"text": r["text"], "level": r["level"], "mapped": g}
                          for r, g in zip(tuning, got_tune) if g != r["level"]],
        "speed": {
            "batch": BATCH,
            "batch_content": "the held-out statements repeated to 1,000 (none matches the pool exactly, "
                             "so every one is embedded)",
            "torch_threads": torch.get_num_threads(),
            "device": str(mapper.encoder.model.device),
            "cpu": cpu_name(),
            "cold_start_s": round(cold_s, 3),
            "cold_start_includes": "encoder load, pool embedding, read-out fit",
            "warm_batch_s": [round(t, 3) for t in times],
            "warm_batch_median_s": round(statistics.median(times), 3),
            "note": "2 shared CPU cores, other jobs running: times are indicative",
        },
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", "utf-8")

    # --- compact table ---
    def row(name, m):
        s = m["share_of_misses"]
        pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
        return (f"{name:<10} {m['n']:>4} {100 * m['exact']:>6.1f} {100 * m['within_one']:>7.1f} "
                f"{100 * m['parsed']:>7.1f}   low {pct(s['too_low']):>4} high {pct(s['too_high']):>4} "
                f"unparsed {pct(s['unparsed']):>4}")

    print(f"{'set':<10} {'n':>4} {'exact%':>6} {'within1%':>7} {'parsed%':>7}   misses")
    print(row("heldout", held))
    print(row("tuning", tune))
    print(f"gap (tuning - heldout): exact {100 * result['gap_tuning_minus_heldout']['exact']:+.1f} pts, "
          f"within one {100 * result['gap_tuning_minus_heldout']['within_one']:+.1f} pts")
    print("\nheld-out confusion (rows: true level; columns: mapped 1..5, unparsed)")
    print("      " + " ".join(f"{c:>4}" for c in ["1", "2", "3", "4", "5", "none"]))
    for t in LEVELS:
        c = held["confusion"][str(t)]
        print(f"  {t}   " + " ".join(f"{c[k]:>4}" for k in ["1", "2", "3", "4", "5", "unparsed"]))
    print("\nheld-out by form: " + "; ".join(f"{f} {v['n']}: {100 * v['exact']:.0f}% / {100 * v['within_one']:.0f}%"
                                            for f, v in by_form.items()))
    o = result["tails"]["ordinary"]
    print(f"\ntails read as statements: ordinary {o['read_as_statement']}/{o['n']} "
          f"({100 * o['false_positive_rate']:.1f}%), "
          f"tuning {result['tails']['tuning']['read_as_statement']}/{result['tails']['tuning']['n']}")
    print(f"best cosine medians: heldout {result['sets']['heldout']['best_cosine']['median']}, tuning "
          f"{result['sets']['tuning']['best_cosine']['median']}, tails {o['best_cosine']['median']} "
          f"(max {o['best_cosine']['max']}); threshold {mapper.min_similarity}")
    sp = result["speed"]
    print(f"speed: {BATCH} statements in {sp['warm_batch_median_s']:.2f} s (median of {len(times)}, "
          f"{sp['torch_threads']} thread, {sp['device']}); cold start {sp['cold_start_s']:.1f} s")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
