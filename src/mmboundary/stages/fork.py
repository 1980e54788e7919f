"""Forking a run: a new run folder that starts with every finished stage of another that a
config change leaves valid (ablations, seeds, `mmboundary fork`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mmboundary.config import RunConfig, config_diff, dump_config, load_config
from mmboundary.errors import RunError
from mmboundary.io import atomic_write_text
from mmboundary.runs import Run
from mmboundary.stages.table import STAGES


def reusable_stages(source: RunConfig, target: RunConfig) -> list[str]:
    """The stages (pipeline order) whose results under `source` are also results under
    `target`: the longest prefix of the stages before the first stage whose config sections
    (`Stage.sections`) differ; none if the seed differs."""
    changed = {key.split(".")[0] for key in config_diff(source, target)}
    if "seed" in changed:
        return []
    out = []
    for stage in STAGES:
        if changed & set(stage.sections):
            break
        out.append(stage.name)
    return out


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a stage folder, hard-linking files where the file system allows (stages never
    modify an earlier stage's files, and a rerun unlinks rather than overwrites)."""

    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)


def fork_run(source: str | Path, target: str | Path, overrides: list[str] | None = None,
             reuse: list[str] | None = None, config: RunConfig | None = None) -> tuple[Run, list[str]]:
    """A new run directory `target` whose config is `source`'s with `overrides` applied (or
    `config` itself, when given, instead of the overrides) and
    which starts with `source`'s completed stages that the change leaves valid
    (`reusable_stages`; `reuse` narrows them to the named ones). For ablations and seeds:
    the shared stages are computed once. Returns the new run and the stages it reused.

    Stages are reused only as a prefix of the pipeline: asking to reuse a stage whose inputs
    changed is an error naming it."""
    source, target = Path(source), Path(target)
    if not (source / "config.yaml").is_file():
        raise RunError(f"{source} is not a run directory (no config.yaml)")
    if target.exists():
        raise RunError(f"{target} exists: a fork needs a new folder")
    src_cfg = load_config(source / "config.yaml", relative_to_file=False)
    if config is not None and overrides:
        raise ValueError("fork_run: give overrides or a config, not both")
    cfg = config if config is not None else load_config(source / "config.yaml", overrides or [],
                                                        relative_to_file=False)
    valid = reusable_stages(src_cfg, cfg)
    if reuse is not None:
        bad = [s for s in reuse if s not in valid]
        if bad:
            raise RunError(f"cannot reuse {', '.join(bad)} of {source}: the overrides change "
                           f"their inputs (reusable: {', '.join(valid) or 'none'})")
        valid = [s for s in valid if s in reuse]
    src_run = Run(source, src_cfg)
    taken = [s for s in valid if src_run.is_complete(s)]
    tmp = target.with_name(target.name + ".forking")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for stage in taken:
        _link_tree(source / stage, tmp / stage)
    atomic_write_text(tmp / "config.yaml", dump_config(cfg))
    tmp.rename(target)
    return Run.open(target), taken
