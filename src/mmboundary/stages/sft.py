"""Stages `sft_data` and `sft` (method.md section 4): the vanilla model's own train chains with
the statement of each step's internal level after it (sft_data/dataset/, a Hugging Face
`datasets` dataset, and summary.json), then the warm-up fine-tuning (sft/model/; sft/checkpoints/
while training, resumed after an interruption and removed at the end)."""

from __future__ import annotations

import shutil

import numpy as np
from datasets import Dataset, load_from_disk

from mmboundary.artifacts import load_split, make_statement_mapper, read_chains, read_step_levels, resolve_vlm_path
from mmboundary.config import RunConfig
from mmboundary.distributed import make_accelerator
from mmboundary.errors import RunError
from mmboundary.evaluation.calibration import level_shares
from mmboundary.io import atomic_write_json
from mmboundary.models.factory import enable_gradient_checkpointing, load_vlm
from mmboundary.runs import Run
from mmboundary.stages.common import begin_stage_once
from mmboundary.statements.chain_format import write_chain
from mmboundary.statements.pool import default_pool
from mmboundary.training.base import caption_replay
from mmboundary.training.sft import sft_records, train_sft


def statement_writer(cfg: RunConfig, rng, mapper=None):
    """level -> statement for the SFT data: the mapper's seeded forward mapping (`mapper`, else
    the config's, built only here: the restricted draw below needs no encoder), restricted to
    the first `sft_data.statements_per_level` statements of each level's pool when that is set."""
    k = cfg.sft_data.statements_per_level
    if k is None or cfg.statements.kind == "numeric":
        mapper = mapper or make_statement_mapper(cfg)
        return lambda level: mapper.statement(level, rng)
    pool = default_pool()
    return lambda level: pool[level][int(rng.integers(min(k, len(pool[level]))))]


def stage_sft_data(run: Run) -> dict:
    """The vanilla model's own train chains with the statement of each step's internal level
    (method.md section 4, steps 1-3), as a Hugging Face `datasets` dataset."""
    cfg = run.config
    est = run.require("estimate")
    out = run.begin_stage("sft_data")
    examples = {ex.id: ex for ex in load_split(run, "train", cfg.estimate.train_examples)}
    chains = read_chains(est / "chains_train.jsonl")
    levels = read_step_levels(est / "steps_train.jsonl")
    rng = np.random.default_rng(cfg.sft_data.seed if cfg.sft_data.seed is not None else cfg.seed)
    records, skipped = sft_records(examples, chains, levels, statement_writer(cfg, rng),
                                   write_chain, drop_unanswered=cfg.sft_data.drop_unanswered,
                                   granularity=cfg.statements.granularity)
    if not records:
        raise RunError(f"{est}: no train chain could be turned into an SFT record ({skipped})")
    Dataset.from_list(records).save_to_disk(str(out / "dataset"))
    summary = {"records": len(records), "steps": sum(len(r["levels"]) for r in records), "skipped": skipped,
               "level_shares": level_shares([v for r in records for v in r["levels"]]),
               "statements": cfg.statements.kind, "granularity": cfg.statements.granularity}
    atomic_write_json(out / "summary.json", summary)
    return summary


def stage_sft(run: Run) -> dict:
    """Fine-tune the vanilla model on the sft_data dataset (resumes from its checkpoints)."""
    cfg = run.config
    ds = load_from_disk(str(run.require("sft_data") / "dataset"))
    out = begin_stage_once(run, "sft", keep=("checkpoints",))
    acc = make_accelerator(cfg.device)
    vlm = load_vlm(resolve_vlm_path(run), cfg.model)
    if cfg.model.gradient_checkpointing:
        enable_gradient_checkpointing(vlm.model)
    records = ds.to_list()
    replay = []
    if cfg.sft.replay_share > 0:
        n = int(round(len(records) * cfg.sft.replay_share / (1 - cfg.sft.replay_share)))
        replay = caption_replay(load_split(run, "train", cfg.estimate.train_examples), n,
                                cfg.data.benchmark.colors, cfg.seed, objects=cfg.base.caption_objects)
    summary = train_sft(cfg, vlm, records, out, acc, replay=replay)
    if acc.is_main_process:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return summary
