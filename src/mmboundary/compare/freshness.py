"""Whether a saved result still holds, so that `run_compare` reuses it instead of recomputing it:

- its **fingerprint**: a digest of the part of the run config its row depends on
  (`_model_dump`: a model's result does not depend on the stages after the model was made) and
  of the row's own settings; results written by earlier versions of the config are recognised
  by `fingerprint_history`;
- its **origin**: digests of the weights of the seed's full run it was made from
  (`stage_digest`), so that one seed's rows are never mixed from two different full runs;
- `_reusable_results`: a seed's saved results that still hold, computed from the configs alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mmboundary.ablations import row_availability, row_config, row_model
from mmboundary.compare.fingerprint_history import _ADDED_FIELDS, _FINGERPRINT_FORMS, _legacy_dump, _without_added
from mmboundary.compare.results import RowResult, load_result, result_path
from mmboundary.compare.spec import BaselineSpec, CompareSpec, CorrectionSpec
from mmboundary.config import config_diff
from mmboundary.errors import RunError
from mmboundary.stages import BY_NAME

#: The stages whose trained weights a model of a run depends on.
MODEL_STAGES = {"vanilla": ("base",), "sft": ("base", "sft"), "rl": ("base", "sft", "rl")}

#: The stages whose config cannot change a model's results: the vanilla model's numbers do not
#: depend on the statements, the SFT or the RL stage, the SFT model's not on the RL stage.
_LATER_STAGES = {"vanilla": ("sft_data", "sft", "rl"), "sft": ("rl",), "rl": ()}


# --- fingerprints: the config a result was made with ----------------------------------------------

def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _model_dump(cfg, model: str, form: int = 0) -> str | None:
    """The part of a run config that a row of `model` ('vanilla', 'sft' or 'rl') depends on, as
    text for a fingerprint: the whole `dump_config` for the RL model; without the config sections
    (and the `stages` entries) of the stages after the model was made otherwise, so that changing
    e.g. the RL settings keeps the saved vanilla, SFT-only and baseline rows. `form`
    (`_FINGERPRINT_FORMS`) gives the text as an earlier version wrote it, or None when the config
    uses a field that version did not have."""
    if form == 2:
        return _legacy_dump(cfg)
    data = cfg.model_dump(mode="json")
    later = _LATER_STAGES[model]
    for stage in later:  # first: a field of a later stage's section does not matter to the model
        for section in BY_NAME[stage].sections:
            data.pop(section, None)
    if form == 1 and not _without_added(data, _ADDED_FIELDS[-1:]):
        return None
    if not later:
        return yaml.safe_dump(data, sort_keys=False)  # = dump_config(cfg) for form 0
    data["stages"] = [s for s in data.get("stages", []) if s not in later]
    return json.dumps(data, sort_keys=True, default=str)


def _pipeline_fingerprint(cfg, model: str, form: int = 0, levels: str = "model") -> str:
    """What a pipeline row's saved result must match to be reused: the model's part of the run
    config (`_model_dump`), the model, and for a reference row where its levels come from
    (`Row.levels`; not part of a model row's fingerprint, so those of earlier results hold)."""
    data: dict[str, Any] = {"config": _model_dump(cfg, model, form), "model": model}
    if levels != "model":
        data["levels"] = levels
    return _fingerprint(data)


def _baseline_fingerprint(b: BaselineSpec, full_cfg, seed: int, splits, form: int = 0) -> str:
    """The same for a baseline row: the baseline, its resolved config, the part of the full run's
    config that the baseline's model depends on, and the splits."""
    return _fingerprint({"baseline": b.model_dump(mode="json"),
                         "config": b.resolved_config(full_cfg, seed).model_dump(mode="json"),
                         "run": _model_dump(full_cfg, b.model_name, form), "splits": splits})


def _correction_fingerprint(c: CorrectionSpec, full_cfg, seed: int, splits, form: int = 0) -> str:
    """The same for a self-correction row."""
    return _fingerprint({"correction": c.model_dump(mode="json"),
                         "config": c.resolved_config(seed).model_dump(mode="json"),
                         "run": _model_dump(full_cfg, c.model, form), "splits": splits})


# --- origins: the weights a result was made from -------------------------------------------------

def stage_digest(run, stage: str) -> str | None:
    """A digest of the weights a finished stage of `run` trained (sha256 over its `.safetensors`
    files, by relative path), or None for a stage that is not complete or trained none.

    Why: training on a CPU is reproducible bit for bit only at the same thread count (measured: the
    same seed and config, rebuilt on another day with one thread per process, gave an SFT model
    with test MECE 0.075 instead of 0.087), so a seed's full run rebuilt after its run directory
    was lost may be another experiment.
    Rows saved from the old one must not be mixed with rows forked from the new one."""
    if not run.is_complete(stage):
        return None
    d = run.stage_dir(stage)
    files = sorted(d.rglob("*.safetensors"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(d)).encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]


def _origin(digests: dict[str, str | None], stages: Sequence[str]) -> dict[str, str]:
    """The `origin` of a result that depends on `stages` of the full run (digests of the full run)."""
    return {s: digests[s] for s in stages if digests.get(s)}


def _consistent(res: RowResult, digests: dict[str, str | None], saved_at: float | None,
                base_done: float | None) -> bool:
    """Whether a saved result belongs to the seed's current full run: every stage digest it
    recorded still matches. A result without digests (saved before they were recorded) is kept
    unless its file is older than the full run's `base` stage (`saved_at` < `base_done`, file
    modification times): then it cannot have been made from these weights."""
    if not res.origin:
        return saved_at is None or base_done is None or saved_at >= base_done
    return all(digests.get(stage) == d for stage, d in res.origin.items())


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


# --- the saved results that still hold -----------------------------------------------------------

def _saved_if_current(root: Path, row: str, seed: int, fingerprints: Sequence[str],
                      statuses: tuple[str, ...] = ("ok",)) -> RowResult | None:
    """The saved result of (row, seed) when its status is one of `statuses` and its fingerprint is
    one of `fingerprints` (the same config and settings), else None."""
    path = result_path(root, row, seed)
    if not fingerprints or not path.exists():
        return None
    try:
        old = load_result(path)
    except RunError:
        return None
    return old if old.status in statuses and old.fingerprint in fingerprints else None


def _reusable_results(root: Path, spec: CompareSpec, rows, seed: int,
                      overrides: list[str]) -> tuple[dict[str, RowResult], set[str]]:
    """Saved results of a seed that still hold, by row name: computed from the configs alone (the
    fingerprints `run_compare` writes), so that no run directory is needed; and the rows that need
    no run at all (unavailable in this config). A config that cannot be built reuses nothing (the
    run then reports the error)."""
    try:
        full_cfg = row_config("full", spec.config, overrides, spec.with_rl)
    except Exception:  # noqa: BLE001 - reported by the run itself
        return {}, set()
    free: set[str] = set()
    out: dict[str, RowResult] = {}
    for kind, item in rows:
        if kind == "pipeline":
            if row_availability(item.name, spec.config, overrides, spec.with_rl):
                free.add(item.name)
                continue
            try:
                cfg = row_config(item.name, spec.config, overrides, spec.with_rl)
            except Exception:  # noqa: BLE001
                continue
            run_cfg = full_cfg if not item.own_run or not config_diff(full_cfg, cfg) else cfg
            model = row_model(item, run_cfg)
            name, fps = item.name, [_pipeline_fingerprint(run_cfg, model, f, item.levels) for f in _FINGERPRINT_FORMS]
            statuses: tuple[str, ...] = ("ok",)
        elif kind == "baseline":
            name, statuses = item.row_name, ("ok", "not_applicable")
            fps = [_baseline_fingerprint(item, full_cfg, seed, spec.splits, f) for f in _FINGERPRINT_FORMS]
        else:
            if item.model == "rl" and not spec.with_rl:
                free.add(item.row_name)
                continue
            name, statuses = item.row_name, ("ok",)
            fps = [_correction_fingerprint(item, full_cfg, seed, spec.splits, f) for f in _FINGERPRINT_FORMS]
        old = _saved_if_current(root, name, seed, fps, statuses)
        if old is not None:
            out[name] = old
    return out, free
