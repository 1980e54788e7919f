"""The report as Markdown (`render_markdown`): a table per split, findings, rows without numbers,
level shares, MECE by seed, the self-correction rows, the rows' cost, the paper's table and the
figures."""

from __future__ import annotations

from collections.abc import Sequence

from mmboundary.compare.report_model import COLUMNS, PAPER_TABLE, Report, Stat, _fmt


def _fmt_seconds(stat: Stat | None) -> str:
    if stat is None:
        return "-"
    return f"{stat.mean:.0f}" + (f" ± {stat.std:.0f}" if stat.std is not None else "")


def _paper_cell(values: tuple[float, float, float, float] | None) -> str:
    if not values:
        return ""
    return " / ".join(f"{v:.3f}".lstrip("0") for v in values)


def render_markdown(report: Report, figures: Sequence[str] = ()) -> str:
    """The report as Markdown: a table per split (mean ± sample std over seeds, best value of
    each column in bold), the paper's numbers beside matching rows, findings, rows without
    numbers and why, the cost of each row, and links to `figures` (file names next to it)."""
    seeds = ", ".join(str(s) for s in report.seeds)
    lines = [f"# Comparison `{report.name}`", ""]
    lines.append(f"Rebuilt from the saved results in `{report.root}` (no model was run to write it: "
                 f"`mmboundary compare --root {report.root} --report-only`). Seeds: {seeds} "
                 f"({len(report.seeds)}; training seeds, the same data). Base config: "
                 f"{report.base_config or 'the built-in default'}"
                 + (f", overrides: `{' '.join(report.overrides)}`" if report.overrides else "")
                 + (", with the rl stage" if report.with_rl else ", without the rl stage (with_rl: false)") + ".")
    lines.append("")
    if report.mixed:
        lines.append("**Warning: some seeds mix rows made from different weights of their full run** (their rows are "
                     "not one experiment; rerun `compare` on a root with the run directories to recompute them):")
        lines += [f"- {m}" for m in report.mixed]
    else:
        lines.append("Each seed's rows were made from one set of weights of its full run (the `origin` digests "
                     "of the results agree)" + (f"; {report.unchecked} result(s) have no digests to check."
                                                if report.unchecked else "."))
    if report.last_run:
        lr = report.last_run
        lines.append("")
        lines.append(f"Last `run_compare`: started {lr.get('started')}, {lr.get('seconds', 0) / 60:.1f} min wall time"
                     + (f"; failed rows: {', '.join(lr['failed'])}" if lr.get("failed") else "") + ".")
    lines += ["", "Cells: mean ± sample standard deviation over the seeds with a result (n - 1 in the "
              "denominator; no ± with one seed). ECE: answer level; MECE, AUROC, Brier: step level; "
              "best mean of each column in bold. Paper: LLaVA-NeXT-7B on A-OKVQA / ScienceQA (in-domain) and "
              "CulturalVQA (OOD), ECE / MECE / Acc / F1 (method.md section 6), beside the rows that match; "
              "they are another model on other data: compare directions, not values.", ""]
    for table in report.tables:
        title = {"test": "test (in-domain)", "ood": "OOD"}.get(table.split, table.split)
        lines += [f"## {title}", ""]
        heads = [h for _, h, _ in COLUMNS] + ["parsed", "seeds"]
        paper_heads = [f"paper {d} (ECE / MECE / Acc / F1)" for d in table.datasets]
        lines.append("| row | " + " | ".join(heads + paper_heads) + " |")
        lines.append("|---|" + "---:|" * len(heads) + "---|" * len(paper_heads))
        ok = [r for r in table.rows if r.status == "ok"]
        best = {}
        for c, _, _ in COLUMNS:
            vals = [r.stats[c].mean for r in ok if r.stats.get(c)]
            if vals:
                best[c] = min(vals) if {x: d for x, _, d in COLUMNS}[c] == "lower" else max(vals)
        for r in table.rows:
            paper = [_paper_cell(r.paper.get(d)) for d in table.datasets]
            if r.status == "ok":
                cells = [_fmt(r.stats.get(c), bold=r.stats.get(c) is not None and r.stats[c].mean == best.get(c))
                         for c, _, _ in COLUMNS]
                n = max((s.n for s in r.stats.values() if s), default=0)
                cells += [_fmt(r.parsed), f"{n}/{len(report.seeds)}"]
            else:
                why = (r.reason or "").replace("|", "/")
                why = why if len(why) <= 80 else why[:77].rstrip() + "... (below)"
                cells = [f"{r.status.replace('_', ' ')}: {why}"] + [""] * (len(heads) - 1)
            lines.append(f"| {r.label} | " + " | ".join(cells + paper) + " |")
        lines += ["", "Findings:", ""] + [f"- {f}" for f in table.findings]
        partial = [r for r in table.rows if r.status == "ok" and r.reason]
        if partial:
            lines += [""] + [f"- {r.label}: some seeds have no result ({r.reason})." for r in partial]
        without = [r for r in table.rows if r.status != "ok"]
        if without:
            lines += ["", "Rows without numbers:", ""] + [
                f"- {r.label}: {r.status.replace('_', ' ')}: {r.reason or '-'}" for r in without]
        lines.append("")
        shares = [r for r in table.rows if r.status == "ok" and r.level_shares]
        if shares:
            lines += ["Level shares (% of steps at levels 1-5, mean over seeds):", "",
                      "| row | 1 | 2 | 3 | 4 | 5 |", "|---|---:|---:|---:|---:|---:|"]
            for r in shares:
                lines.append(f"| {r.label} | " + " | ".join(
                    f"{100 * r.level_shares[lv].mean:.0f}" if lv in r.level_shares else "-"
                    for lv in range(1, 6)) + " |")
            lines.append("")
        by_seed = [r for r in table.rows if r.status == "ok" and r.mece_by_seed]
        if len(report.seeds) > 1 and by_seed:
            lines += ["MECE by seed, and paired with the full method (row minus full on the seeds both have; "
                      "lower is better for the row):", "",
                      "| row | " + " | ".join(f"seed {s}" for s in report.seeds)
                      + " | minus full | seeds lower than full |",
                      "|---|" + "---:|" * (len(report.seeds) + 2)]
            for r in by_seed:
                cells = [f"{r.mece_by_seed[s]:.3f}" if s in r.mece_by_seed else "-" for s in report.seeds]
                d = r.mece_vs_full
                cells.append("-" if d is None else f"{d.mean:+.3f}" + (f" ± {d.std:.3f}" if d.std is not None else ""))
                cells.append("-" if d is None else f"{r.lower_than_full} of {d.n}")
                lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
            lines.append("")
    corr = [(t.split, r) for t in report.tables for r in t.rows if r.kind == "correction" and r.status == "ok"]
    if corr:
        lines += ["## Self-correction (this project's design; docs/using.md)", "",
                  "The same model with and without confidence-guided self-correction (without: its greedy "
                  "chains, its own row above). Acc: answer accuracy; MECE of the confidence the row reports "
                  "(internal levels for the vanilla model, stated levels otherwise); extra tokens: sampled + "
                  "regenerated tokens per greedy token.", "",
                  "| row | split | Acc without | Acc with | change | MECE without | MECE with | "
                  "extra tokens / greedy token | steps replaced / question |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for split, r in corr:
            c = r.correction
            gain = c.get("acc_gain")
            sign = "+" if gain is not None and gain.mean > 0 else ""
            change = "-" if gain is None else f"{sign}{100 * gain.mean:.1f} pts" + (
                f" ± {100 * gain.std:.1f}" if gain.std is not None else "")
            lines.append(f"| {r.label} | {split} | {_fmt(c.get('acc_without'))} | {_fmt(r.stats.get('accuracy'))} | "
                         f"{change} | {_fmt(c.get('mece_without'))} | {_fmt(r.stats.get('mece'))} | "
                         f"{_fmt(c.get('extra_token_ratio'))} | {_fmt(c.get('replaced_per_question'))} |")
        lines.append("")
    first = report.tables[0] if report.tables else None
    if first:
        lines += ["## Rows and their cost", "",
                  "| row | stages reused (first seed) | stages run (first seed) | seconds per seed | note |",
                  "|---|---|---|---:|---|"]
        for r in first.rows:
            lines.append(f"| {r.label} | {', '.join(r.stages_reused) or '-'} | {', '.join(r.stages_run) or '-'} | "
                         f"{_fmt_seconds(r.seconds)} | {(r.note or '').replace('|', '/')} |")
        lines.append("")
    lines += ["## The paper's table (method.md section 6)", "",
              "| paper row | "
              + " | ".join(f"{d} (ECE / MECE / Acc / F1)" for d in ("A-OKVQA", "ScienceQA", "CulturalVQA"))
              + " | our row |", "|---|---|---|---|---|"]
    ours = {r.paper_row: r.label + ("" if r.status == "ok" else f" ({r.status.replace('_', ' ')})")
            for t in report.tables[:1] for r in t.rows if r.paper_row}
    for name, per in PAPER_TABLE.items():
        lines.append(f"| {name} | " + " | ".join(_paper_cell(per[d]) for d in ("A-OKVQA", "ScienceQA", "CulturalVQA"))
                     + f" | {ours.get(name, 'not in this comparison')} |")
    lines.append("")
    if figures:
        lines += ["## Figures", ""]
        for f in figures:
            lines.append(f"- [{f}]({f})")
        lines.append("")
    return "\n".join(lines)
