"""Plots of evaluation results (PNG files, no display needed).

Figures are drawn with matplotlib's object API on an Agg canvas (`Figure` + `FigureCanvasAgg`),
never through `pyplot`: no global backend is switched, no window is opened, and nothing is
left in pyplot's figure registry. Files are written atomically (a temporary file in the same
folder, then `os.replace`), so a reader never sees half a PNG.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mmboundary.evaluation.calibration import ece, reliability_bins
from mmboundary.io import atomic_write_bytes

__all__ = ["reliability_diagram"]


def reliability_diagram(confidences: Sequence[float] | np.ndarray,
                        correct: Sequence[bool] | Sequence[int] | np.ndarray,
                        path: str | Path, title: str = "Reliability diagram",
                        n_bins: int = 10) -> Path:
    """Write a reliability diagram of (confidence, correctness) pairs as a PNG; return its path.

    Top panel: the accuracy of each non-empty equal-width bin as a bar spanning the bin, the
    bin's mean confidence as a marker, and the diagonal (perfect calibration); the title gives
    N and the ECE. Bottom panel: the number of predictions per bin. Bins and ECE are those of
    `mmboundary.evaluation.calibration` (same binning, same input checks: invalid input raises
    `ValueError` before any file is written).
    """
    bins = reliability_bins(confidences, correct, n_bins)
    error = ece(confidences, correct, n_bins)
    n = sum(b.count for b in bins)
    path = Path(path)

    fig = Figure(figsize=(5.0, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})

    lowers = np.array([b.lower for b in bins])
    widths = np.array([b.upper - b.lower for b in bins])
    centers = lowers + widths / 2
    full = [i for i, b in enumerate(bins) if b.count > 0]
    top.bar(lowers[full], [bins[i].accuracy for i in full], width=widths[full], align="edge",
            color="tab:blue", edgecolor="black", linewidth=0.6, label="accuracy")
    top.plot(centers[full], [bins[i].mean_confidence for i in full], "o", color="tab:red",
             markersize=4, label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"{title}\nN = {n}, ECE = {error:.3f}", fontsize=10)
    top.legend(loc="upper left", fontsize=8)

    bottom.bar(lowers, [b.count for b in bins], width=widths, align="edge", color="tab:gray",
               edgecolor="black", linewidth=0.6)
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("count")
    fig.tight_layout()

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path
