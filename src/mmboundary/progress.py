"""Progress bars for long loops (rich), quiet when not attached to a terminal unless forced; the
console that result tables are printed on."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def progress_enabled() -> bool:
    if os.environ.get("MMBOUNDARY_PROGRESS") == "0":
        return False
    return sys.stderr.isatty() or os.environ.get("MMBOUNDARY_PROGRESS") == "1"


#: Width of result tables when stdout is not a terminal (a log file, a pipe, CI): rich would use
#: 80 columns and abbreviate the model names and wrap the level shares; a log has no width limit.
LOG_WIDTH = 160


def report_console(**kwargs) -> Console:
    """A console for result tables on stdout: the terminal's width in a terminal, `LOG_WIDTH`
    columns otherwise (unless COLUMNS is set, which rich honours)."""
    console = Console(**kwargs)
    if not console.is_terminal and "COLUMNS" not in os.environ and "width" not in kwargs:
        console = Console(width=LOG_WIDTH, **kwargs)
    return console


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=not progress_enabled(), transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as p:
        task = p.add_task(description, total=total, info="")
        for x in items:
            yield x
            p.advance(task)
