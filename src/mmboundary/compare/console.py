"""The comparison on the terminal: per-row progress while `run_compare` runs (`_Display`) and the
report's tables at the end (`_print_summary`: the cells with their intervals, the MECE paired
differences with their verdicts, the findings, the total time)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mmboundary.compare.markdown import NO_INTERVAL, paired_cell
from mmboundary.compare.report_model import COLUMNS, Report, _fmt
from mmboundary.compare.results import RowResult
from mmboundary.progress import make_progress, progress_enabled, report_console


class _Display:
    """Per-row progress (a rich progress bar per row, advanced per seed when attached to a
    terminal) and one line per finished row and seed on stderr."""

    def __init__(self, rows: Sequence[tuple[str, str]], seeds: int | Mapping[str, int]):
        """`rows`: (name, label); `seeds`: how many seeds each row runs on (by name, or one count)."""
        self.console = Console(stderr=True)
        self.enabled = progress_enabled()
        self.progress = make_progress()
        totals = {name: seeds if isinstance(seeds, int) else seeds[name] for name, _ in rows}
        self.tasks = {name: self.progress.add_task(escape(label), total=totals[name], info="waiting")
                      for name, label in rows}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def start(self, row: str, seed: int, what: str = "running") -> None:
        self.progress.update(self.tasks[row], info=f"seed {seed}: {what}")

    def note(self, row: str, seed: int, label: str, what: str) -> None:
        """A row this process leaves (e.g. to another process running it)."""
        self.progress.update(self.tasks[row], info=f"seed {seed}: {what}")
        (self.progress.console if self.enabled else self.console).print(
            "[yellow]" + escape(f"seed {seed} · {label}: {what}") + "[/yellow]", highlight=False)

    def done(self, result: RowResult) -> None:
        task = self.tasks[result.row]
        self.progress.update(task, advance=1, info=f"seed {result.seed}: {result.status}")
        extra = ""
        if result.stages_reused or result.stages_run:
            extra = (f"; reused {', '.join(result.stages_reused) or 'nothing'}, "
                     f"ran {', '.join(result.stages_run) or 'nothing'}")
        secs = f", {result.seconds:.0f} s" if result.seconds is not None else ""
        why = f": {result.reason}" if result.reason and result.status != "ok" else ""
        colour = {"ok": "green", "failed": "red"}.get(result.status, "yellow")
        line = f"[{colour}]" + escape(f"seed {result.seed} · {result.label}: {result.status}{why}{secs}{extra}") \
            + f"[/{colour}]"
        (self.progress.console if self.enabled else self.console).print(line, highlight=False)


def _print_summary(report: Report) -> None:
    console = report_console()
    for t in report.tables:
        table = Table(title=f"comparison {report.name}: {t.split} (mean [95 % bootstrap interval over questions] "
                            f"± std over seeds; {NO_INTERVAL}: no per-question scores)")
        table.add_column("row")
        table.add_column("seeds", justify="right")
        for _, h, _ in COLUMNS:
            table.add_column(h, justify="right")
        for r in t.rows:
            label = escape(r.label + (f" {NO_INTERVAL}" if r.without_questions else ""))
            if r.status == "ok":
                n = max((s.n for s in r.stats.values() if s), default=0)
                table.add_row(label, f"{n}/{len(r.spec_seeds or report.seeds)}",
                              *[_fmt(r.stats.get(c), interval=r.intervals.get(c)) for c, _, _ in COLUMNS])
            else:
                table.add_row(label, "", f"[dim]{r.status.replace('_', ' ')}[/dim]", *[""] * (len(COLUMNS) - 1))
        console.print(table)
        against = list(dict.fromkeys(p.against for p in t.paired))
        if t.paired and all(p.verdict is None for p in t.paired):
            why = "the results keep no per-question scores (format /1)" \
                if all("format /1" in (p.reason or "") for p in t.paired) else escape(t.paired[0].reason or "")
            console.print(f"  paired differences: none could be measured: {why}", highlight=False)
        elif against:
            labels = {p.against: p.against_label for p in t.paired}
            paired = Table(title=f"{t.split}: MECE paired differences (row minus comparator [95 % interval] "
                                 "(seed signs) verdict)")
            paired.add_column("row")
            for a in against:
                paired.add_column(escape(f"vs {labels[a]}"))
            cells: dict[str, dict[str, str]] = {}
            names = {}
            for p in t.paired:
                if p.metric == "mece":
                    text = "not measured" if p.verdict is None else paired_cell(p).replace("**", "")
                    cells.setdefault(p.row, {})[p.against] = escape(text)
                    names[p.row] = p.label
            for row, by in cells.items():
                paired.add_row(escape(names[row]), *[by.get(a, "") for a in against])
            console.print(paired)
        for f in t.findings:
            console.print(f"  {escape(f)}", highlight=False)
    if report.total_seconds is not None:
        console.print(f"  rows' recorded time, all rows and seeds: {report.total_seconds / 3600:.2f} h",
                      highlight=False)
