"""The report as Markdown (`render_markdown`): a table per split (cells with their bootstrap
intervals), findings, rows without numbers, the paired differences, level shares, MECE by seed,
the self-correction rows, the rows' cost, the paper's table and the figures."""

from __future__ import annotations

from collections.abc import Sequence

from mmboundary.compare.protocol import PAIRED_METRICS
from mmboundary.compare.report_model import COLUMNS, PAPER_TABLE, Paired, Report, ReportRow, SplitTable, Stat, _fmt

#: Marks a row whose cells have no interval (a seed's result keeps no per-question scores).
NO_INTERVAL = "†"


def _fmt_seconds(stat: Stat | None) -> str:
    if stat is None:
        return "-"
    return f"{stat.mean:.0f}" + (f" ± {stat.std:.0f}" if stat.std is not None else "")


def _paper_cell(values: tuple[float, float, float, float] | None) -> str:
    if not values:
        return ""
    return " / ".join(f"{v:.3f}".lstrip("0") for v in values)


def paired_cell(p: Paired | None) -> str:
    """One paired difference: "-0.021 [-0.030, -0.012] (− − −) **better**"; its reason when it
    could not be measured."""
    if p is None:
        return ""
    if p.verdict is None:
        return f"not measured ({p.reason})".replace("|", "/")
    est = "undefined" if p.estimate is None else f"{p.estimate:+.3f}"
    iv = f" [{p.low:+.3f}, {p.high:+.3f}]" if p.low is not None and p.high is not None else ""
    signs = " ".join("?" if d is None else "+" if d > 0 else "−" if d < 0 else "0" for d in p.per_seed)
    word = f"**{p.verdict}**" if p.verdict in ("better", "worse") else p.verdict
    return f"{est}{iv} ({signs}) {word}"


def _paired_section(table: SplitTable) -> list[str]:
    """The split's paired differences: one line per (row, comparator), a cell per metric; one
    sentence instead when none could be measured."""
    if not table.paired:
        return []
    unmeasured = sorted({p.reason or "" for p in table.paired if p.verdict is None})
    if all(p.verdict is None for p in table.paired):
        return [f"Paired differences: none could be measured ({len(table.paired)} pairs): "
                + ("the results keep no per-question scores (format /1; recompute the rows to get them)"
                   if all("format /1" in r for r in unmeasured) else "; ".join(unmeasured)) + ".", ""]
    heads = {c: h for c, h, _ in COLUMNS}
    lines = ["Paired differences (row minus comparator, mean over the common seeds [95 % interval; questions "
             "resampled, the same for both rows and every seed] (sign of each seed's difference) verdict; "
             "better / worse only when the interval excludes 0 and every seed agrees in sign; lower MECE, ECE, "
             "Brier and higher Acc are better):", "",
             "| row | against | seeds | " + " | ".join(heads[m] for m, _ in PAIRED_METRICS) + " |",
             "|---|---|---:|" + "---|" * len(PAIRED_METRICS)]
    groups: dict[tuple[str, str], dict[str, Paired]] = {}
    for p in table.paired:
        groups.setdefault((p.row, p.against), {})[p.metric] = p
    for by_metric in groups.values():
        first = next(iter(by_metric.values()))
        lines.append(f"| {first.label} | {first.against_label} | {len(first.seeds) or '-'} | "
                     + " | ".join(paired_cell(by_metric.get(m)) for m, _ in PAIRED_METRICS) + " |")
    return lines + [""]


def _seeds_text(report: Report) -> str:
    """The report's seeds in words: every row's, and the method and reference rows' when they have more."""
    def listed(seeds: Sequence[int]) -> str:
        return f"{', '.join(str(s) for s in seeds)} ({len(seeds)}"

    more = report.all_seeds()
    if len(more) == len(report.seeds):
        return listed(report.seeds) + "; training seeds, the same data)"
    return (listed(more) + "; training seeds, the same data): the method and reference rows on all of them, "
            f"the ablations, baselines and self-correction rows on {listed(report.seeds)})")


def _seeds_cell(r: ReportRow, report: Report) -> str:
    """A row's seeds with numbers out of the seeds the spec runs it on."""
    n = max((s.n for s in r.stats.values() if s), default=0)
    return f"{n}/{len(r.spec_seeds or report.seeds)}"


def render_markdown(report: Report, figures: Sequence[str] = ()) -> str:
    """The report as Markdown: a table per split (mean [95 % pooled bootstrap interval] ± sample
    std over seeds, best mean of each column in bold), the paper's numbers beside matching rows,
    findings, rows without numbers and why, the paired differences with their verdicts, the cost
    of each row, and links to `figures` (file names next to it)."""
    lines = [f"# Comparison `{report.name}`", ""]
    lines.append(f"Rebuilt from the saved results in `{report.root}` (no model was run to write it: "
                 f"`mmboundary compare --root {report.root} --report-only`). Seeds: {_seeds_text(report)}. "
                 "Base config: "
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
    proto = report.protocol
    lines += ["", "Cells: mean over the seeds with a result [its 95 % pooled bootstrap interval over questions] "
              "± sample standard deviation over those seeds (n - 1 in the denominator; no ± with one seed). "
              f"The interval resamples the questions ({proto.get('n_resamples', '?')} resamples, resampling seed "
              f"{proto.get('seed', '?')}; a question's steps go together; one draw of question ids serves every "
              "seed): it is how far the mean could move on other questions like these; the ± is how far seeds "
              f"move it. {NO_INTERVAL} after a row: a seed's result keeps no per-question scores (saved in format "
              "/1): its cells have no interval, and its paired differences use only the seeds with scores. F1 has no "
              "interval. "
              "ECE: answer level; MECE (over every step with a truth; 'MECE matched', shown where a step judge "
              "matched steps to reference chains: over matched steps only, the paper's Fig. 6), AUROC, Brier and "
              "its parts (reliability: lower is better; resolution: "
              "higher is better; uncertainty: the steps' base rate, Brier = rel. - res. + unc.): step level; "
              "the best mean of each column in bold (a ranking of means, not a verdict: see the paired "
              "differences). Paper: LLaVA-NeXT-7B on A-OKVQA / ScienceQA (in-domain) and "
              "CulturalVQA (OOD), ECE / MECE / Acc / F1 (method.md section 6), beside the rows that match; "
              "they are another model on other data: compare directions, not values.", ""]
    for table in report.tables:
        title = {"test": "test (in-domain)", "ood": "OOD"}.get(table.split, table.split)
        lines += [f"## {title}", ""]
        ok = [r for r in table.rows if r.status == "ok"]
        # "MECE matched" only where a step judge matched steps (never with the benchmark's exact truth)
        columns = [col for col in COLUMNS if col[0] != "mece_matched" or any(r.stats.get(col[0]) for r in ok)]
        heads = [h for _, h, _ in columns] + ["parsed", "seeds"]
        paper_heads = [f"paper {d} (ECE / MECE / Acc / F1)" for d in table.datasets]
        lines.append("| row | " + " | ".join(heads + paper_heads) + " |")
        lines.append("|---|" + "---:|" * len(heads) + "---|" * len(paper_heads))
        best = {}
        for c, _, direction in columns:
            vals = [r.stats[c].mean for r in ok if r.stats.get(c)]
            if vals and direction != "none":
                best[c] = min(vals) if direction == "lower" else max(vals)
        for r in table.rows:
            paper = [_paper_cell(r.paper.get(d)) for d in table.datasets]
            label = r.label + (f" {NO_INTERVAL}" if r.status == "ok" and r.without_questions else "")
            if r.status == "ok":
                cells = [_fmt(r.stats.get(c), bold=r.stats.get(c) is not None and r.stats[c].mean == best.get(c),
                              interval=r.intervals.get(c))
                         for c, _, _ in columns]
                cells += [_fmt(r.parsed), _seeds_cell(r, report)]
            else:
                why = (r.reason or "").replace("|", "/")
                why = why if len(why) <= 80 else why[:77].rstrip() + "... (below)"
                cells = [f"{r.status.replace('_', ' ')}: {why}"] + [""] * (len(heads) - 1)
            lines.append(f"| {label} | " + " | ".join(cells + paper) + " |")
        eq = [r for r in table.rows if r.status == "ok" and r.equivalence]
        if eq:
            lines += [""] + [f"- {r.label}: a sampled step agrees with a judged one by the step equivalence "
                             f"**{r.equivalence}** (docs/baselines.md, `sc`)." for r in eq]
        lines += ["", "Findings:", ""] + [f"- {f}" for f in table.findings]
        partial = [r for r in table.rows if r.status == "ok" and r.reason]
        if partial:
            lines += [""] + [f"- {r.label}: some seeds have no result ({r.reason})." for r in partial]
        without = [r for r in table.rows if r.status != "ok"]
        if without:
            lines += ["", "Rows without numbers:", ""] + [
                f"- {r.label}: {r.status.replace('_', ' ')}: {r.reason or '-'}" for r in without]
        lines.append("")
        lines += _paired_section(table)
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
        all_seeds = report.all_seeds()
        if len(all_seeds) > 1 and by_seed:
            lines += ["MECE by seed, and paired with the full method (row minus full on the seeds both have; "
                      "lower is better for the row):", "",
                      "| row | " + " | ".join(f"seed {s}" for s in all_seeds)
                      + " | minus full | seeds lower than full |",
                      "|---|" + "---:|" * (len(all_seeds) + 2)]
            for r in by_seed:
                cells = [f"{r.mece_by_seed[s]:.3f}" if s in r.mece_by_seed else "-" for s in all_seeds]
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
        total = report.total_seconds
        wall = (report.last_run or {}).get("seconds")
        lines += ["## Rows and their cost", "",
                  "Seconds: the wall time each row's result records (a row read from a run: reading it; the full "
                  "row: its whole run). Total over every row and seed: "
                  + (f"{total:.0f} s ({total / 3600:.2f} h)" if total is not None else "-")
                  + (f"; wall time of the last `run_compare`: {wall:.0f} s ({wall / 3600:.2f} h), less than the "
                     "total when processes share the rows or results are reused" if wall is not None else "")
                  + ".", "",
                  "| row | seeds | stages reused (first seed) | stages run (first seed) | seconds per seed | "
                  "seconds, all seeds | equivalence | note |",
                  "|---|---:|---|---|---:|---:|---|---|"]
        for r in first.rows:
            lines.append(f"| {r.label} | {_seeds_cell(r, report)} | {', '.join(r.stages_reused) or '-'} | "
                         f"{', '.join(r.stages_run) or '-'} | {_fmt_seconds(r.seconds)} | "
                         f"{'-' if r.total_seconds is None else f'{r.total_seconds:.0f}'} | {r.equivalence or '-'} | "
                         f"{(r.note or '').replace('|', '/')} |")
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
