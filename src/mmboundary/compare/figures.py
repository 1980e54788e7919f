"""The report's figures: a step-level reliability diagram per row and split (seeds pooled;
`evaluation.plots.reliability_diagram`) and a level histogram per split (`_level_histogram`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mmboundary.compare.report_model import Report, SplitTable
from mmboundary.evaluation.plots import reliability_diagram
from mmboundary.io import atomic_write_bytes


def _figure_name(kind: str, row: str | None, split: str) -> str:
    return f"reliability_{row}_{split}.png" if kind == "reliability" else f"levels_{split}.png"


def _level_histogram(table: SplitTable, path: Path) -> Path | None:
    """Stacked horizontal bars: the mean share of steps at each level, one bar per row."""
    rows = [r for r in table.rows if r.status == "ok" and r.level_shares]
    if not rows:
        return None
    fig = Figure(figsize=(8.0, 1.0 + 0.4 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    colours = ["#d73027", "#fc8d59", "#fee090", "#91bfdb", "#4575b4"]
    for lv in range(1, 6):
        share = np.array([r.level_shares[lv].mean if lv in r.level_shares else 0.0 for r in rows])
        ax.barh(y, share, left=left, color=colours[lv - 1], edgecolor="black", linewidth=0.4, label=f"level {lv}")
        left += share
    ax.set_yticks(y)
    ax.set_yticklabels([r.label for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of steps (mean over seeds)")
    ax.set_title(f"Confidence levels of the steps, {table.split}", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_figures(report: Report, out: Path) -> tuple[list[Path], list[str]]:
    """Write the report's figures into `out`: a step-level reliability diagram per row and split
    with numbers, then the split's level histogram. Returns the paths written and their names."""
    written: list[Path] = []
    figures: list[str] = []
    for table in report.tables:
        for r in table.rows:
            if r.status != "ok" or not r.step_confidence:
                continue
            name = _figure_name("reliability", r.row, table.split)
            seeds = ", ".join(str(s) for s in r.seeds if r.seed_status.get(s) == "ok")
            written.append(reliability_diagram(r.step_confidence, r.step_correct, out / name,
                                               title=f"{r.label}: {table.split} steps (seeds {seeds} pooled)"))
            figures.append(name)
        hist = _level_histogram(table, out / _figure_name("levels", None, table.split))
        if hist is not None:
            written.append(hist)
            figures.append(hist.name)
    return written, figures
