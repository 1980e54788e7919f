"""`run_compare`: a comparison's runs and rows, seed by seed (the steps are in the package's
docstring).

`_Comparison` holds what the seeds of one call share (the root, the spec and its rows, the
progress display, the runners, the results so far); `_SeedRun` runs one seed: the full method's
run, then the pipeline rows, the baselines and the self-correction rows, each while holding its
lock, and saves a `RowResult` per row.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mmboundary.ablations import Row, row_availability, row_config, row_model
from mmboundary.artifacts import split_names
from mmboundary.compare.console import _Display
from mmboundary.compare.freshness import (
    MODEL_STAGES,
    _baseline_fingerprint,
    _consistent,
    _correction_fingerprint,
    _mtime,
    _origin,
    _pipeline_fingerprint,
    _reusable_results,
    stage_digest,
)
from mmboundary.compare.results import RowResult, result_path, save_result
from mmboundary.compare.runners import (
    BaselineRun,
    CorrectionRunner,
    _baseline_split,
    _correction_split,
    _default_pipeline,
    _greedy_numbers,
    _RunBaselines,
    _RunCorrections,
    pipeline_row_result,
)
from mmboundary.compare.spec import BaselineSpec, CompareSpec, CorrectionSpec, label_of, name_of
from mmboundary.config import config_diff, load_config
from mmboundary.errors import RunError
from mmboundary.io import atomic_write_json, atomic_write_text
from mmboundary.locks import Busy, hold
from mmboundary.runs import Run
from mmboundary.stages import STAGE_NAMES, fork_run

log = logging.getLogger("mmboundary.compare")


# --- run folders -----------------------------------------------------------------------------------

def _current_run(path: Path, cfg, source: Path | None = None, overrides: Sequence[str] = ()):
    """The run at `path` for config `cfg`: reopened when it was made with `cfg`; when it was made
    with another config (the spec or a default changed since), it is moved to
    `<its folder>/.stale/<name>-<k>` and replaced by a fork of it to `cfg` (its stages that the
    change leaves valid are reused, e.g. everything before `rl` when only the RL settings
    changed). A missing run is forked from `source` with `overrides` when `source` is given,
    else created. Returns (run, stages reused)."""
    if (path / "config.yaml").exists():
        if not config_diff(load_config(path / "config.yaml", relative_to_file=False), cfg):
            return Run.open(path, cfg), []
        stale_root = path.parent / ".stale"
        stale_root.mkdir(parents=True, exist_ok=True)
        k = 0
        while (stale_root / f"{path.name}-{k}").exists():
            k += 1
        stale = stale_root / f"{path.name}-{k}"
        shutil.move(str(path), str(stale))
        log.info("%s was made with another config: moved to %s, forked from it", path, stale)
        return fork_run(stale, path, config=cfg)
    if source is not None and (source / "config.yaml").exists():
        run, reused = fork_run(source, path, list(overrides))
        diff = config_diff(run.config, cfg)
        if diff:
            raise RunError(f"{path}: the fork's config differs from the row's at {diff}")
        return run, reused
    return Run.open(path, cfg), []


def _complete(run) -> list[str]:
    return [s for s in STAGE_NAMES if run.is_complete(s)]


def _run_seconds(run) -> float | None:
    """The seconds a run's complete stages took, from their COMPLETE markers (None if none says)."""
    secs = [run.marker(s).get("seconds") for s in _complete(run)]
    secs = [x for x in secs if x is not None]
    return round(sum(secs), 2) if secs else None


def _lock_file(root: Path, row: str, seed: int) -> Path:
    """The lock a process holds while it runs (row, seed) of the comparison at `root`."""
    return root / "locks" / f"seed{seed}-{row}.lock"


@contextlib.contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """The comparison's log (progress, tracebacks of failed rows) also goes to `path` while in
    the block."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


def _failed(row: str, label: str, kind: str, seed: int, err: BaseException, t0: float, **kw) -> RowResult:
    """The result of a row that raised `err` (its traceback goes to the log); retried next time."""
    log.error("seed %d %s failed:\n%s", seed, row, "".join(traceback.format_exception(err)))
    return RowResult(row=row, label=label, kind=kind, seed=seed, status="failed",
                     reason=f"{type(err).__name__}: {str(err)[:500]}", seconds=round(time.time() - t0, 2), **kw)


# --- the comparison and its seeds ------------------------------------------------------------------

class _Comparison:
    """What the seeds of one `run_compare` share, and the results so far."""

    def __init__(self, root: Path, spec: CompareSpec, rows, labels: list[tuple[str, str]], display: _Display,
                 pipeline_runner: Callable[[Any], None], baseline_runner: Callable[[Any, int], BaselineRun],
                 correction_runner: Callable[[Any, int], CorrectionRunner]):
        self.root = root
        self.spec = spec
        self.rows = rows
        self.labels = labels
        self.display = display
        self.pipeline_runner = pipeline_runner
        self.baseline_runner = baseline_runner
        self.correction_runner = correction_runner
        self.results: list[RowResult] = []

    def take_reused(self, found: dict[str, RowResult], seed: int) -> None:
        """Saved results that still hold, taken as they are."""
        for res in found.values():
            self.results.append(res)
            self.display.done(res)
        if found:
            log.info("seed %d: %d saved result(s) reused: %s", seed, len(found), ", ".join(found))

    def finish(self, res: RowResult) -> RowResult:
        """Save a row's new result."""
        save_result(self.root, res)
        self.results.append(res)
        self.display.done(res)
        log.info("seed %d %s: %s%s", res.seed, res.row, res.status, f" ({res.reason})" if res.reason else "")
        return res


class _SeedRun:
    """One seed of a comparison: its saved results that still hold, the full method's run, then
    its pipeline rows, baselines and self-correction rows (`run`)."""

    def __init__(self, comparison: _Comparison, seed: int, later: Sequence[int]):
        self.c = comparison
        self.spec = comparison.spec
        self.seed = seed
        # the rows that run on this seed (`CompareSpec.seeds_of`: a seed of `method_seeds` only
        # runs the method and reference rows)
        self.rows = [(kind, item) for kind, item in comparison.rows if seed in self.spec.seeds_of(kind, item)]
        self.labels = [(name_of(kind, item), label_of(kind, item)) for kind, item in self.rows]
        self.later = later  # the seeds still to run after this one
        self.overrides = list(self.spec.overrides) + [f"seed={seed}"]
        self.seed_root = comparison.root / "runs" / f"seed{seed}"
        self.full_dir = self.seed_root / "full"
        self.full_run: Run | None = None
        self.full_cfg = None
        self.full_error: BaseException | None = None
        self.reused: dict[str, RowResult] = {}
        self.digests: dict[str, str | None] = {}
        self.base_done: float | None = None
        self._baselines: BaselineRun | None = None
        self._corrections: CorrectionRunner | None = None

    def run(self) -> bool:
        """Run the seed; False (nothing done) when another process is making its full run and
        other seeds are left: it is to be run again after them."""
        c = self.c
        # 0. rows whose saved result still holds (same fingerprint) are not recomputed; when
        # every row of the seed has one, its runs are not even opened (results kept from an
        # earlier session, without the run directories, still count)
        self.reused, free = _reusable_results(c.root, self.spec, self.rows, self.seed, self.overrides)
        if all(name in self.reused or name in free for name, _ in self.labels):
            c.take_reused(self.reused, self.seed)
            self._record_unavailable(free)  # the unavailable rows are recorded without a run
            return True
        if not self._make_full_run():
            return False
        self._drop_other_weights()
        c.take_reused(self.reused, self.seed)
        for row in self._claimed("pipeline"):  # 2-3. the pipeline rows
            self._pipeline_row(row)
        for b in self._claimed("baseline"):  # 4. the baselines on the seed's models
            self._baseline_row(b)
        self._baselines = None  # their models are released before the next ones are loaded
        for corr in self._claimed("correction"):  # 5. self-correction on the seed's models
            self._correction_row(corr)
        self._corrections = None
        return True

    def _record_unavailable(self, free: set[str]) -> None:
        """Save the rows this config cannot express (`free`) as unavailable, with the reason."""
        spec = self.spec
        for kind, item in self.rows:
            name = name_of(kind, item)
            if name not in free:
                continue
            reason = (row_availability(name, spec.config, self.overrides, spec.with_rl) if kind == "pipeline"
                      else "the comparison has no rl stage (with_rl: false)")
            self.c.finish(RowResult(row=name, label=label_of(kind, item),
                                    kind=item.kind if kind == "pipeline" else "correction", seed=self.seed,
                                    status="unavailable", reason=reason,
                                    paper_row=item.paper_row if kind == "pipeline" else None))

    def _make_full_run(self) -> bool:
        """1. the full method's run (the source of every fork of this seed), made or resumed; its
        error is kept for the rows that need it. False when another process is making it and
        other seeds are left (this process goes on with them and comes back); with no other seed
        left, it waits for that process."""
        c, seed = self.c, self.seed
        if "full" in c.display.tasks and "full" not in self.reused:
            c.display.start("full", seed, "the full method's run")
        try:
            self.full_cfg = row_config("full", self.spec.config, self.overrides, self.spec.with_rl)
            with hold(_lock_file(c.root, "full-run", seed), what=f"seed {seed}'s full run",
                      wait=not self.later, on_wait=self._waiting_for_full_run):
                self.full_run, _ = _current_run(self.full_dir, self.full_cfg)
                c.pipeline_runner(self.full_run)
        except Exception as e:  # noqa: BLE001 - recorded, the other seeds go on
            if isinstance(e, Busy) and self.full_run is None and self.later:
                log.info("seed %d: its full run is being made by %s; seed %d first", seed, e.holder, self.later[0])
                c.display.note("full", seed, "the full method's run", f"made by {e.holder}; later")
                return False
            self.full_error = e
            log.error("seed %d: the full method's run failed:\n%s", seed, "".join(traceback.format_exception(e)))
        return True

    def _waiting_for_full_run(self, who: str) -> None:
        self.c.display.note("full", self.seed, "the full method's run",
                            f"waiting for {who}, which makes this seed's full run")

    def _drop_other_weights(self) -> None:
        """A saved result is kept only if it was made from this full run's weights: one seed's rows
        then always share one vanilla / SFT / RL model (see `stage_digest`)."""
        run = self.full_run
        self.digests = {st: stage_digest(run, st) for st in MODEL_STAGES["rl"]} if run is not None else {}
        self.base_done = _mtime(run.stage_dir("base") / "COMPLETE") if run is not None else None
        for name in list(self.reused):
            if not self._consistent(self.reused[name]):
                log.info("seed %d %s: its saved result was made from other weights than this seed's "
                         "full run (rebuilt since); recomputed", self.seed, name)
                del self.reused[name]

    def _consistent(self, res: RowResult) -> bool:
        """Whether a saved result was made from this seed's full run (`freshness._consistent`)."""
        if self.full_run is None:
            return True
        saved_at = _mtime(result_path(self.c.root, res.row, self.seed))
        return _consistent(res, self.digests, saved_at, self.base_done)

    def _claimed(self, wanted: str) -> Iterator[Any]:
        """The rows of kind `wanted` this process runs, each while holding its lock: a row
        another process is running is left to it (it saves the result); one another
        process finished since this seed started is reused."""
        c, seed = self.c, self.seed
        for kind, item in self.rows:
            if kind != wanted:
                continue
            name = name_of(kind, item)
            if name in self.reused:
                continue
            try:
                with hold(_lock_file(c.root, name, seed), what=f"row {name} of seed {seed}"):
                    again, _ = _reusable_results(c.root, self.spec, [(kind, item)], seed, self.overrides)
                    if name in again and self._consistent(again[name]):
                        c.results.append(again[name])
                        c.display.done(again[name])
                        continue
                    yield item
            except Busy as e:
                log.info("seed %d %s: run by %s; left to it", seed, name, e.holder)
                c.display.note(name, seed, label_of(kind, item), f"running in {e.holder}; left to it")

    def _full_run_failed(self) -> RunError:
        return RunError(f"the full method's run {self.full_dir} failed: "
                        f"{type(self.full_error).__name__}: {self.full_error}")

    # --- the rows ---

    def _pipeline_row(self, row: Row) -> None:
        self.c.display.start(row.name, self.seed)
        t0 = time.time()
        common = dict(row=row.name, label=row.label, kind=row.kind, seed=self.seed, paper_row=row.paper_row)
        reason = row_availability(row.name, self.spec.config, self.overrides, self.spec.with_rl)
        if reason:
            self.c.finish(RowResult(**common, status="unavailable", reason=reason))
            return
        try:
            self.c.finish(self._pipeline_result(row, common, t0))
        except Exception as e:  # noqa: BLE001 - recorded as a failed row, retried next time
            self.c.finish(_failed(row.name, row.label, row.kind, self.seed, e, t0, paper_row=row.paper_row))

    def _pipeline_result(self, row: Row, common: dict, t0: float) -> RowResult:
        """A pipeline row from its run: the full run for a model of the full method (or a row with
        its config), else the row's fork of it, made or resumed here."""
        cfg = row_config(row.name, self.spec.config, self.overrides, self.spec.with_rl)
        stages_reused: list[str] = []
        note = None
        if self.full_cfg is None or not row.own_run or not config_diff(self.full_cfg, cfg):
            if self.full_error is not None:
                raise self._full_run_failed()
            run = self.full_run
            # the full row costs the full run, whichever process made it
            ran = _complete(self.full_run) if row.name == "full" else []
            if row.levels != "model":
                note = ("the full run's vanilla chains at reference levels chosen on its train chains "
                        "(no model run)")
            elif row.name != "full":
                note = "a model of the full method's run (no run of its own)" if not row.own_run \
                    else "same config as the full method: its run"
        else:
            run, stages_reused = _current_run(self.seed_root / row.name, cfg, self.full_dir, row.overrides)
            before = _complete(run)
            self.c.pipeline_runner(run)
            ran = [s for s in _complete(run) if s not in before]
        splits = pipeline_row_result(run, row, self.seed, self.spec.splits)
        model = row_model(row, run.config)
        depends = MODEL_STAGES[model] if run is self.full_run else \
            [st for st in MODEL_STAGES[model] if st in stages_reused]
        root = self.c.root
        return RowResult(
            **common, status="ok", splits=splits,
            source={"run": str(run.root.relative_to(root)) if run.root.is_relative_to(root)
                    else str(run.root), "model": model},
            stages_reused=stages_reused, stages_run=ran,
            seconds=_run_seconds(self.full_run) if row.name == "full" else round(time.time() - t0, 2),
            fingerprint=_pipeline_fingerprint(run.config, model, levels=row.levels),
            origin=_origin(self.digests, depends), note=note)

    def _baseline_row(self, b: BaselineSpec) -> None:
        self.c.display.start(b.row_name, self.seed)
        t0 = time.time()
        try:
            self.c.finish(self._baseline_result(b, t0))
        except Exception as e:  # noqa: BLE001
            self.c.finish(_failed(b.row_name, b.row_label, "baseline", self.seed, e, t0))

    def _baseline_result(self, b: BaselineSpec, t0: float) -> RowResult:
        """A baseline on the full run's model, split by split (each raw result saved under
        `baselines/`), up to the first split where it does not apply."""
        root, seed, splits_wanted = self.c.root, self.seed, self.spec.splits
        if self.full_error is not None or self.full_run is None:
            raise self._full_run_failed()
        fp = _baseline_fingerprint(b, self.full_run.config, seed, splits_wanted)
        self._baselines = self._baselines or self.c.baseline_runner(self.full_run, seed)
        splits, raw, notes, reason = {}, {}, set(), None
        for split in [s for s in splits_wanted if s in split_names(self.full_run)]:
            result, f1, note = self._baselines(b, split)
            raw[split] = str(result.save(root / "baselines" / b.row_name / f"seed{seed}_{split}.json")
                             .relative_to(root))
            if note:
                notes.add(note)
            if not result.applicable:
                reason = result.reason
                break
            splits[split] = _baseline_split(result, f1)
        source = {"baseline": b.method, "model": b.model_name, "run": str(self.full_dir.relative_to(root)),
                  "results": raw}
        status = "not_applicable" if reason else "ok"
        if status == "ok" and not splits:
            raise RunError(f"{self.full_dir}: none of the splits {splits_wanted} exists")
        return RowResult(row=b.row_name, label=b.row_label, kind="baseline", seed=seed, status=status,
                         reason=reason, splits={} if reason else splits, source=source,
                         seconds=round(time.time() - t0, 2), fingerprint=fp,
                         origin=_origin(self.digests, MODEL_STAGES[b.model_name]),
                         note="; ".join(sorted(notes)) or None)

    def _correction_row(self, corr: CorrectionSpec) -> None:
        self.c.display.start(corr.row_name, self.seed)
        t0 = time.time()
        if corr.model == "rl" and not self.spec.with_rl:
            self.c.finish(RowResult(row=corr.row_name, label=corr.row_label, kind="correction", seed=self.seed,
                                    status="unavailable", reason="the comparison has no rl stage (with_rl: false)"))
            return
        try:
            self.c.finish(self._correction_result(corr, t0))
        except Exception as e:  # noqa: BLE001
            self.c.finish(_failed(corr.row_name, corr.row_label, "correction", self.seed, e, t0))

    def _correction_result(self, corr: CorrectionSpec, t0: float) -> RowResult:
        """Self-correction on the full run's model, split by split, with the model's greedy
        numbers from the evaluate stage beside it."""
        seed = self.seed
        if self.full_error is not None or self.full_run is None:
            raise self._full_run_failed()
        fp = _correction_fingerprint(corr, self.full_run.config, seed, self.spec.splits)
        self._corrections = self._corrections or self.c.correction_runner(self.full_run, seed)
        splits = {}
        for split in [s for s in self.spec.splits if s in split_names(self.full_run)]:
            without = _greedy_numbers(self.full_run, corr.model, split)
            splits[split] = _correction_split(self._corrections(corr, split), without)
        if not splits:
            raise RunError(f"{self.full_dir}: none of the splits {self.spec.splits} exists")
        return RowResult(row=corr.row_name, label=corr.row_label, kind="correction", seed=seed, status="ok",
                         splits=splits,
                         source={"run": str(self.full_dir.relative_to(self.c.root)), "model": corr.model,
                                 "correction": corr.resolved_config(seed).model_dump(mode="json")},
                         seconds=round(time.time() - t0, 2), fingerprint=fp,
                         origin=_origin(self.digests, MODEL_STAGES[corr.model]),
                         note="chains with confidence-guided self-correction; the model's greedy "
                              "numbers (without) are its own row's")


def run_compare(spec: CompareSpec, root_dir: str | Path, *,
                pipeline_runner: Callable[[Any], None] | None = None,
                baseline_runner: Callable[[Any, int], BaselineRun] | None = None,
                correction_runner: Callable[[Any, int], CorrectionRunner] | None = None) -> list[RowResult]:
    """Run a comparison into `root_dir` (see the package docstring) and return the rows' results.

    `pipeline_runner(run)` runs a run's missing stages (default `pipeline.run_pipeline`);
    `baseline_runner(run, seed)` returns a callable (BaselineSpec, split) -> (BaselineResult, F1,
    note) for the full run of a seed (default: the real baselines on its models);
    `correction_runner(run, seed)` a callable (CorrectionSpec, split) -> CorrectionOutcome
    (default: self-correction on its models). They are parameters so the orchestration can be
    tested with stubs."""
    root = Path(root_dir)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "spec.json", spec.model_dump_json(indent=1) + "\n")
    started = time.time()
    rows = spec.rows()
    labels = [(name_of(kind, item), label_of(kind, item)) for kind, item in rows]
    totals = {name_of(kind, item): len(spec.seeds_of(kind, item)) for kind, item in rows}
    with _logging_to(root / "compare.log"), _Display(labels, totals) as display:
        comparison = _Comparison(root, spec, rows, labels, display, pipeline_runner or _default_pipeline,
                                 baseline_runner or _RunBaselines, correction_runner or _RunCorrections)
        pending = spec.all_seeds()  # `seeds` first: every row's seeds are done before the further method seeds
        while pending:
            seed = pending.pop(0)
            if not _SeedRun(comparison, seed, later=pending).run():
                pending.append(seed)  # its full run is being made by another process: after the others
    results = comparison.results
    atomic_write_json(root / "last_run.json", {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 2), "seeds": spec.seeds,
        **({"method_seeds": spec.method_seeds} if spec.method_seeds is not None else {}), "rows": spec.row_names(),
        "failed": sorted({f"{r.row} (seed {r.seed})" for r in results if r.status == "failed"})})
    return results
