"""Stage `base`: base/model/ (the vanilla VLM) and base/clip/ (the small CLIP); each skipped when
the config names a checkpoint for it."""

from __future__ import annotations

import logging

from mmboundary.artifacts import load_split
from mmboundary.distributed import make_accelerator
from mmboundary.models.clip import load_clip
from mmboundary.models.factory import load_vlm
from mmboundary.runs import Run
from mmboundary.stages.common import begin_stage_once
from mmboundary.training.base import build_base_vlm, init_vision_from_clip, train_base_clip, train_base_vlm

log = logging.getLogger("mmboundary.pipeline")


def stage_base(run: Run) -> dict:
    cfg = run.config
    out = begin_stage_once(run, "base")
    summary: dict = {}
    acc = make_accelerator(cfg.device)
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
            summary["vision_init"] = ("clip" if init_vision_from_clip(vlm, clip.model)
                                      else "random (shapes differ from CLIP's)")
            log.info("VLM vision tower initialised from: %s", summary["vision_init"])
        summary["vlm"] = train_base_vlm(cfg, vlm, train, out / "model", acc)
    return summary
