"""The ordered stages of the pipeline. A stage is a function (run) -> summary dict; it reads
only what earlier stages wrote to the run directory, and its marker is written last.

    data      -> data/{train,test,ood}.jsonl   (the built-in benchmark, or a validated copy of
                                                 the user's files, in the JSONL format)
    base      -> base/model/, base/clip/       (vanilla VLM and CLIP; skipped for checkpoints)
    evaluate  -> evaluate/chains_<split>.jsonl, evaluate/metrics.json
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from rich.console import Console
from rich.table import Table

from mmboundary.config import RunConfig
from mmboundary.data.jsonl import read_examples, write_examples
from mmboundary.errors import RunError
from mmboundary.progress import progress_enabled
from mmboundary.records import Example
from mmboundary.runs import Run, atomic_write_json

log = logging.getLogger("mmboundary.pipeline")
console = Console(stderr=True)


def make_accelerator(cfg: RunConfig) -> Accelerator:
    cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    return Accelerator(cpu=cpu)


def split_names(run: Run) -> list[str]:
    return [s for s in ("train", "test", "ood") if (run.stage_dir("data") / f"{s}.jsonl").exists()]


def load_split(run: Run, split: str, limit: int | None = None) -> list[Example]:
    path = run.require("data") / f"{split}.jsonl"
    if not path.exists():
        raise RunError(f"{run.root}: the data stage wrote no {split!r} split")
    examples = read_examples(path, check_images=False)  # checked when the data stage ran
    return examples[:limit] if limit else examples


# --- stages -------------------------------------------------------------------------------------

def stage_data(run: Run) -> dict:
    cfg = run.config.data
    out = run.begin_stage("data")
    counts: dict[str, int] = {}
    if cfg.source == "benchmark":
        from mmboundary.data.benchmark import generate_benchmark

        paths = generate_benchmark(cfg.benchmark, out, progress=progress_enabled())
        for split, p in paths.items():
            counts[split] = sum(1 for line in p.open() if line.strip())
    else:
        from mmboundary.data.loading import load_dataset_file

        for split in ("train", "test", "ood"):
            src = getattr(cfg, split)
            if src is None:
                continue
            examples = load_dataset_file(src, fmt=cfg.source, image_dir=cfg.image_dir, split=split,
                                         **({"dataset": cfg.annotated_dataset} if cfg.source == "annotated" else {}))
            counts[split] = write_examples(examples, out / f"{split}.jsonl")
    return {"source": cfg.source, "examples": counts}


def base_model_dir(run: Run) -> Path | None:
    d = run.stage_dir("base") / "model"
    return d if run.is_complete("base") and (d / "config.json").exists() else None


def stage_base(run: Run) -> dict:
    cfg = run.config
    from mmboundary.models import load_clip, load_vlm
    from mmboundary.training.base import build_base_vlm, init_vision_from_clip, train_base_clip, train_base_vlm

    out = run.begin_stage("base")
    summary: dict = {}
    acc = make_accelerator(cfg)
    train = load_split(run, "train", cfg.base.train_examples)
    vlm = build_base_vlm(cfg, train) if cfg.model.path is None else None
    tokenizer = vlm.tokenizer if vlm is not None else load_vlm(cfg.model.path, cfg.model).tokenizer
    if cfg.clip.path is not None:
        summary["clip"] = f"skipped: clip.path={cfg.clip.path}"
        clip = load_clip(cfg.clip.path)
    else:
        clip, summary["clip"] = train_base_clip(cfg, train, tokenizer, out / "clip", acc)
    if vlm is None:
        summary["vlm"] = f"skipped: model.path={cfg.model.path}"
    else:
        if cfg.base.vision_init == "clip":
            summary["vision_init"] = "clip" if init_vision_from_clip(vlm, clip.model) else "random (shapes differ from CLIP's)"
            log.info("VLM vision tower initialised from: %s", summary["vision_init"])
        summary["vlm"] = train_base_vlm(cfg, vlm, train, out / "model", acc)
    return summary


def resolve_vlm_path(run: Run) -> str:
    """The vanilla model of a run: the base stage's, else the configured checkpoint."""
    d = base_model_dir(run)
    if d is not None:
        return str(d)
    if run.config.model.path is not None:
        return run.config.model.path
    raise RunError(f"{run.root}: no vanilla model: run the base stage or set model.path")


def stage_evaluate(run: Run) -> dict:
    cfg = run.config
    from mmboundary.evaluation.metrics import accuracy_summary
    from mmboundary.generation import generate_chains
    from mmboundary.models import load_vlm

    out = run.begin_stage("evaluate")
    vlm = load_vlm(resolve_vlm_path(run), cfg.model)
    vlm.model.to(make_accelerator(cfg).device)
    results: dict[str, dict] = {}
    for split in cfg.evaluate.splits:
        if split not in split_names(run):
            log.warning("no %s split; skipped", split)
            continue
        examples = load_split(run, split, cfg.evaluate.limit)
        chains = generate_chains(vlm, examples, cfg.generation, description=f"evaluate {split}")
        with (out / f"chains_{split}.jsonl").open("w", encoding="utf-8") as f:
            for c in chains:
                f.write(c.model_dump_json() + "\n")
        results[split] = {"vanilla": accuracy_summary(chains)}
    atomic_write_json(out / "metrics.json", results)
    print_results(results)
    return {"splits": list(results)}


def print_results(results: dict[str, dict]) -> None:
    table = Table(title="mmboundary evaluation")
    table.add_column("split")
    table.add_column("model")
    for col in ("examples", "answer acc", "step acc", "steps/chain", "answered"):
        table.add_column(col, justify="right")

    def f(x):
        return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

    for split, models in results.items():
        for name, m in models.items():
            table.add_row(split, name, f(m["examples"]), f(m["answer_accuracy"]), f(m["step_accuracy"]),
                          f(m["steps_per_chain"]), f(m["answered"]))
    Console().print(table)


STAGE_FUNCS: dict[str, Callable[[Run], dict]] = {
    "data": stage_data,
    "base": stage_base,
    "evaluate": stage_evaluate,
}


def run_stage(run: Run, stage: str, *, force: bool = False) -> dict | None:
    """Run one stage unless it has completed (or `force`). Returns its summary, None if skipped."""
    if run.is_complete(stage):
        if not force:
            console.print(f"[dim]stage {stage}: complete, skipped[/dim]")
            log.info("stage %s: complete, skipped", stage)
            return None
        (run.stage_dir(stage) / "COMPLETE").unlink()
    console.print(f"[bold cyan]stage {stage}[/bold cyan]")
    log.info("stage %s: start", stage)
    started = time.time()
    summary = STAGE_FUNCS[stage](run)
    run.mark_complete(stage, summary, started)
    log.info("stage %s: done in %.1fs", stage, time.time() - started)
    console.print(f"[green]stage {stage}: done in {time.time() - started:.1f}s[/green]")
    return summary


def run_pipeline(run: Run) -> dict[str, dict | None]:
    """Run the config's stages in order, skipping completed ones."""
    if not progress_enabled():
        import transformers

        transformers.utils.logging.disable_progress_bar()
    return {stage: run_stage(run, stage) for stage in run.config.stages}


def read_metrics(run: Run) -> dict:
    return json.loads((run.require("evaluate") / "metrics.json").read_text("utf-8"))
