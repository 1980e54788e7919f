"""The report of a comparison, from its saved results alone: `build_report` (pure: reads
`spec.json`, `results/` and `last_run.json`; per split and row the mean and sample standard
deviation over seeds of each column with its pooled bootstrap interval over questions, the paper's
numbers beside matching rows, the paired differences of every row with the comparators
(`compare.protocol`), the rows' MECE paired with the full method by seed, and findings) and
`write_report` (Markdown, JSON and figures)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from mmboundary.ablations import ROWS
from mmboundary.compare.figures import write_figures
from mmboundary.compare.findings import _findings
from mmboundary.compare.markdown import render_markdown
from mmboundary.compare.protocol import fill_intervals, paired_table
from mmboundary.compare.report_model import (
    PAPER_DATASETS,
    PAPER_TABLE,
    REPORT_COLUMNS,
    Report,
    ReportRow,
    SplitTable,
    Stat,
)
from mmboundary.compare.results import RowResult, load_result
from mmboundary.compare.spec import CompareSpec
from mmboundary.errors import RunError
from mmboundary.evaluation.bootstrap import LEVEL, N_RESAMPLES
from mmboundary.io import atomic_write_text


def _mixed_origins(saved: dict[str, dict[int, RowResult]], seeds: Sequence[int]) -> list[str]:
    """One line per (seed, model stage) whose rows recorded more than one weight digest."""
    out = []
    for seed in seeds:
        by_stage: dict[str, dict[str, list[str]]] = {}
        for name, per in saved.items():
            r = per.get(seed)
            for stage, digest in (r.origin.items() if r is not None else ()):
                by_stage.setdefault(stage, {}).setdefault(digest, []).append(name)
        for stage, digests in by_stage.items():
            if len(digests) > 1:
                out.append(f"seed {seed}: rows made from different `{stage}` weights: " + "; ".join(
                    f"{', '.join(sorted(rows))} ({d})" for d, rows in sorted(digests.items())))
    return out


def _pair_with_full(rows: list[ReportRow]) -> None:
    """Fill each row's `mece_vs_full` / `lower_than_full` from the seeds it shares with the full
    method's row (in place; nothing when there is no full row with MECE)."""
    full = next((r for r in rows if r.row == "full" and r.mece_by_seed), None)
    if full is None:
        return
    for r in rows:
        if r is full:
            continue
        common = sorted(set(r.mece_by_seed) & set(full.mece_by_seed))
        if not common:
            continue
        diffs = [r.mece_by_seed[s] - full.mece_by_seed[s] for s in common]
        r.mece_vs_full = Stat.of(diffs)
        r.lower_than_full = sum(d < 0 for d in diffs)


def _equivalence(have: Sequence[RowResult], split: str) -> str | None:
    """The step equivalence of an SC row's seeds (`SplitResult.extra`), "not recorded ..." for
    results from before it was recorded (they used the sentence encoder), None for other rows."""
    if not any(r.source.get("baseline") == "sc" for r in have):
        return None
    found = {r.splits[split].extra.get("equivalence")
             or "not recorded (saved before it was a setting: the sentence encoder at the threshold)" for r in have}
    return "; ".join(sorted(found))


def build_report(root_dir: str | Path, *, n_resamples: int = N_RESAMPLES, level: float = LEVEL,
                 seed: int = 0) -> Report:
    """The report of the saved results under `root_dir` (pure: reads JSON only, runs no model).

    Rows, seeds and splits are those of `spec.json` (the last `run_compare`; each row on its own
    seeds, `CompareSpec.seeds_of`); without it, every saved result. A row's columns are the mean
    and sample std over the seeds whose result is "ok", each with its pooled bootstrap interval
    over questions and every row's paired differences with the comparators (`compare.protocol`,
    over the seeds both rows have; `n_resamples` resamples, coverage `level`, resampling `seed`:
    the same report from the same files)."""
    root = Path(root_dir)
    results_dir = root / "results"
    if not results_dir.is_dir():
        raise RunError(f"{root}: no saved comparison results (no results/ folder); run the comparison first")
    spec = None
    if (root / "spec.json").exists():
        try:
            spec = CompareSpec.model_validate_json((root / "spec.json").read_text("utf-8"))
        except ValidationError as e:
            raise RunError(f"{root / 'spec.json'}: not a valid comparison spec: {str(e)[:300]}") from None
    saved: dict[str, dict[int, RowResult]] = {}
    for path in sorted(results_dir.glob("*/seed*.json")):
        r = load_result(path)
        saved.setdefault(r.row, {})[r.seed] = r
    if not saved:
        raise RunError(f"{results_dir}: no saved comparison results")
    if spec is not None:
        order = [n for n in spec.row_names() if n in saved]
        seeds, splits = list(spec.seeds), list(spec.splits)
        row_seeds = spec.row_seeds()
    else:
        kind_order = {"reference": 0, "baseline": 1, "method": 2, "ablation": 3, "correction": 5}
        registry = list(ROWS)

        def key(name: str):
            any_r = next(iter(saved[name].values()))
            k = 4 if name == "full" else kind_order.get(any_r.kind, 6)
            return (k, registry.index(name) if name in registry else 99, name)

        order = sorted(saved, key=key)
        seeds = sorted({s for per in saved.values() for s in per})
        splits = [s for s in ("test", "ood") if any(s in r.splits for per in saved.values() for r in per.values())]
        row_seeds = {}
    # each row's results on the seeds the spec runs it on (`CompareSpec.seeds_of`; a row the spec
    # does not name: `seeds`); results of other seeds (an earlier spec's) are left out
    saved = {name: {s: r for s, r in per.items() if s in row_seeds.get(name, seeds)} for name, per in saved.items()}
    tables = []
    for split in splits:
        rows = []
        for name in order:
            per = saved[name]
            if not per:
                continue
            any_r = next(iter(per.values()))
            have = [r for r in per.values() if r.status == "ok" and split in r.splits]
            statuses = {s: (r.status if r.status != "ok" or split in r.splits else "no such split")
                        for s, r in sorted(per.items())}
            missing = [s for s in row_seeds.get(name, seeds) if s not in per]
            for s in missing:
                statuses[s] = "not run"
            paper_row = any_r.paper_row
            paper = {d: PAPER_TABLE[paper_row][d] for d in PAPER_DATASETS.get(split, ())
                     if paper_row in PAPER_TABLE and d in PAPER_TABLE[paper_row]}
            rr = ReportRow(row=name, label=any_r.label, kind=any_r.kind, seeds=sorted(per),
                           spec_seeds=row_seeds.get(name, seeds), status="ok",
                           seed_status=statuses, paper_row=paper_row, paper=paper,
                           note=next((r.note for r in per.values() if r.note), None))
            if have:
                reps = [r.splits[split].report for r in have]
                rr.stats = {c: Stat.of([getattr(rep, c) for rep in reps]) for c in REPORT_COLUMNS}
                fill_intervals(rr, have, split, n_resamples=n_resamples, seed=seed, level=level)
                rr.equivalence = _equivalence(have, split)
                rr.parsed = Stat.of([rep.parsed_share for rep in reps])
                rr.level_shares = {lv: st for lv in range(1, 6)
                                   if (st := Stat.of([rep.level_shares.get(lv, 0.0) for rep in reps
                                                      if rep.level_shares]))}
                rr.seconds = Stat.of([r.seconds for r in have])
                rr.total_seconds = round(sum(r.seconds for r in have if r.seconds is not None), 2) \
                    if rr.seconds else None
                first = min(have, key=lambda r: r.seed)
                rr.stages_reused, rr.stages_run = first.stages_reused, first.stages_run
                if rr.kind == "correction":
                    ex = [r.splits[split].extra for r in have]
                    rr.correction = {
                        "acc_without": Stat.of([e.get("without", {}).get("accuracy") for e in ex]),
                        "mece_without": Stat.of([e.get("without", {}).get("mece") for e in ex]),
                        "acc_gain": Stat.of([e.get("accuracy_gain") for e in ex]),
                        "extra_token_ratio": Stat.of([e.get("compute", {}).get("extra_token_ratio") for e in ex]),
                        "replaced_per_question": Stat.of([e.get("compute", {}).get("replaced_steps_per_question")
                                                          for e in ex])}
                rr.mece_by_seed = {r.seed: r.splits[split].report.mece for r in sorted(have, key=lambda r: r.seed)
                                   if r.splits[split].report.mece is not None}
                for r in sorted(have, key=lambda r: r.seed):
                    rr.step_confidence += r.splits[split].step_confidence
                    rr.step_correct += r.splits[split].step_correct
                bad = {s: per[s].reason for s in per if per[s].status != "ok"}
                if bad:
                    rr.reason = "; ".join(f"seed {s}: {why}" for s, why in bad.items())
            else:
                kinds = {r.status for r in per.values()}
                rr.status = kinds.pop() if len(kinds) == 1 else "failed"
                if rr.status == "ok":
                    rr.status = "no such split"
                reasons = {r.reason for r in per.values() if r.reason}
                rr.reason = "; ".join(sorted(reasons)) if len(reasons) > 1 else (reasons.pop() if reasons else None)
            rows.append(rr)
        _pair_with_full(rows)
        paired = paired_table(rows, n_resamples=n_resamples, seed=seed, level=level)
        tables.append(SplitTable(split=split, datasets=PAPER_DATASETS.get(split, ()), rows=rows, paired=paired,
                                 findings=_findings(split, rows, paired, n_resamples=n_resamples, seed=seed,
                                                    level=level)))
    last = None
    if (root / "last_run.json").exists():
        last = json.loads((root / "last_run.json").read_text("utf-8"))
    return Report(root=str(root), name=spec.name if spec else root.name, seeds=seeds,
                  method_seeds=spec.method_seeds if spec else None, splits=splits,
                  base_config=str(spec.config) if spec and spec.config else None,
                  overrides=list(spec.overrides) if spec else [], with_rl=spec.with_rl if spec else True,
                  tables=tables, last_run=last, mixed=_mixed_origins(saved, spec.all_seeds() if spec else seeds),
                  unchecked=sum(1 for per in saved.values() for r in per.values() if r.status == "ok" and not r.origin),
                  protocol={"unit": "question", "n_resamples": n_resamples, "level": level, "seed": seed},
                  total_seconds=round(sum(r.seconds for name in order for r in saved[name].values()
                                          if r.seconds is not None), 2))


def write_report(report: Report, out_dir: str | Path) -> list[Path]:
    """Write `report.md`, `report.json`, a step-level reliability diagram per row and split (seeds
    pooled) and a level histogram per split into `out_dir`; return the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, figures = write_figures(report, out)
    report = report.model_copy(update={"figures": figures})
    md = out / "report.md"
    atomic_write_text(md, render_markdown(report, figures))
    js = out / "report.json"
    atomic_write_text(js, report.model_dump_json(indent=1) + "\n")
    return [md, js] + written
