"""`mmboundary compare` (`compare_main`): run a comparison, then rebuild and print its report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from mmboundary.compare.console import _print_summary
from mmboundary.compare.report import build_report, write_report
from mmboundary.compare.report_model import Report
from mmboundary.compare.run import run_compare
from mmboundary.compare.spec import CompareSpec, load_spec


def compare_main(spec_path: str | Path | None, root_dir: str | Path | None, report_only: bool = False,
                 overrides: Sequence[str] | None = None) -> Report:
    """`mmboundary compare`: run the comparison of `spec_path` (None: the built-in default,
    `CompareSpec()` = configs/compare/default.yaml) into `root_dir` (None:
    `runs/compare-<spec name>`), unless `report_only`; then rebuild the report from the saved
    results into `<root_dir>/report/` and print its tables. `overrides` are appended to the
    spec's base-config overrides. Returns the report (`Report.tables[*].rows[*].seed_status`
    says which rows failed)."""
    spec = load_spec(spec_path) if spec_path is not None else CompareSpec()
    if overrides:
        spec = CompareSpec.model_validate({**spec.model_dump(), "overrides": list(spec.overrides) + list(overrides)})
    root = Path(root_dir) if root_dir is not None else Path("runs") / f"compare-{spec.name}"
    err = Console(stderr=True)
    if not report_only:
        more = len(spec.all_seeds()) - len(spec.seeds)
        err.print(f"comparison {spec.name}: {len(spec.rows())} rows x {len(spec.seeds)} seeds"
                  + (f", the method and reference rows on {more} more" if more else "") + f" into {root}")
        run_compare(spec, root)
    report = build_report(root)
    paths = write_report(report, root / "report")
    _print_summary(report)
    err.print(f"report: {paths[0]} ({len(paths) - 2} figures)")
    return report
