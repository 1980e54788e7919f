"""The report's findings: a few sentences per split on what the numbers say (which row has the
lowest MECE; the rows paired with the full method on the same seeds; RL against SFT only; how each
ablation compares with the full method)."""

from __future__ import annotations

from mmboundary.compare.report_model import COLUMNS, PAPER_DATASETS, PAPER_TABLE, ReportRow, _fmt


def _better(col: str, a: float, b: float) -> bool:
    """Whether value a is better than value b in column `col`."""
    direction = {c: d for c, _, d in COLUMNS}[col]
    return a < b if direction == "lower" else a > b


def _findings(split: str, rows: list[ReportRow]) -> list[str]:
    """The findings of one split's table (`rows`: its rows, paired with the full method)."""
    ok = {r.row: r for r in rows if r.status == "ok" and r.stats.get("mece")}
    out: list[str] = []
    if not ok:
        return ["No row has numbers on this split."]
    ranked = sorted(ok.values(), key=lambda r: r.stats["mece"].mean)
    best = ranked[0]
    full = ok.get("full")
    if full is None:
        fr = next((r for r in rows if r.row == "full"), None)
        why = ("it is not in this comparison" if fr is None else
               f"it has no MECE ({fr.status.replace('_', ' ')}{': ' + fr.reason if fr.reason else ''})"
               if fr.status != "ok" else
               f"it has no MECE (no step with a parsed statement and a known truth; parsed share "
               f"{_fmt(fr.parsed)})")
        out.append(f"Lowest MECE: {best.label} ({best.stats['mece'].mean:.3f}); the full method: {why}.")
    elif best.row == "full":
        runner_up = ranked[1] if len(ranked) > 1 else None
        more = f", next {runner_up.label} ({runner_up.stats['mece'].mean:.3f})" if runner_up else ""
        out.append(f"The full method has the lowest MECE of all {len(ranked)} rows with numbers "
                   f"({full.stats['mece'].mean:.3f}{more}).")
    else:
        fm = full.stats["mece"]
        lower = [r for r in ranked if r.stats["mece"].mean < fm.mean]
        spread = f" (seed std {fm.std:.3f})" if fm.std is not None else ""
        out.append(f"The full method does NOT have the lowest MECE here: its MECE is {fm.mean:.3f}{spread}, rank "
                   f"{ranked.index(full) + 1} of {len(ranked)}; lower: "
                   + ", ".join(f"{r.label} ({r.stats['mece'].mean:.3f})" for r in lower) + ".")
    if full is not None:
        paired = [r for r in ok.values() if r.mece_vs_full is not None and r.mece_vs_full.n > 1]
        always = [r for r in paired if r.lower_than_full == r.mece_vs_full.n]
        never = [r for r in paired if r.lower_than_full == 0]
        if paired:
            out.append("Paired with the full method on the same seeds (MECE, row minus full): lower on every common "
                       "seed: " + (", ".join(f"{r.label} ({r.mece_vs_full.mean:+.3f}, {r.mece_vs_full.n} seeds)"
                                            for r in always) or "no row")
                       + "; lower on no common seed: "
                       + (", ".join(f"{r.label} ({r.mece_vs_full.mean:+.3f}, {r.mece_vs_full.n} seeds)"
                                    for r in never) or "no row")
                       + "; the other rows change sign between seeds.")
    sft = ok.get("sft_only")
    if full is not None and sft is not None:
        paper = PAPER_TABLE["MMBoundary"]
        paper_sft = PAPER_TABLE["MMBoundary w/o RL (SFT only)"]
        ds = PAPER_DATASETS.get(split, ())
        paper_txt = "; ".join(f"{d} {paper[d][1]:.3f} vs {paper_sft[d][1]:.3f}" for d in ds)
        verdict = "below" if full.stats["mece"].mean < sft.stats["mece"].mean else "not below"
        out.append(f"RL vs SFT only: the full method's MECE {full.stats['mece'].mean:.3f} is {verdict} SFT only's "
                   f"{sft.stats['mece'].mean:.3f}"
                   + (f" (paper, full vs SFT only: {paper_txt})." if paper_txt else "."))
    if full is not None:
        for r in rows:
            if r.kind != "ablation" or r.row not in ok:
                continue
            cols = [c for c, _, _ in COLUMNS if r.stats.get(c) and full.stats.get(c)]
            worse = [c for c in cols if _better(c, full.stats[c].mean, r.stats[c].mean)]
            out.append(f"{r.label}: worse than the full method on {len(worse)} of {len(cols)} columns"
                       + (f" ({', '.join(dict((c, h) for c, h, _ in COLUMNS)[c] for c in worse)})" if worse else "")
                       + ".")
    return out
