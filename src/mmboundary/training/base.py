"""Stage `base`: the vanilla VLM and the CLIP model of the built-in default.

No pretrained VLM, CLIP or vision encoder exists offline, so on the built-in benchmark this
stage trains them from scratch through the same Hugging Face classes that load real
checkpoints on a GPU machine:

1. a byte-level BPE tokenizer on the train split's text and the confidence-statement pool
   (so later stages can write statements without unknown tokens);
2. the VLM (`model.kind`: `tiny` from scratch, or `smol` around pretrained SmolLM2) on the
   reference chains, *without* confidence statements, with the loss on response tokens only;
   it stands in for a pretrained MLLM and is meant to stay imperfect (short training);
3. a small `CLIPModel` by the contrastive loss on (image, perception-step sentence) pairs, for
   the CLIPScore signal.

Departures from a textbook setup: the "pretraining" is a few epochs on the benchmark itself,
so the vanilla model's errors are those of an under-trained model, not of a web-scale one.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch
from accelerate import Accelerator

from mmboundary.config import RunConfig
from mmboundary.data.images import load_image
from mmboundary.records import Example, StepKind
from mmboundary.statements.pool import all_statements
from mmboundary.training.loop import train_supervised

log = logging.getLogger("mmboundary.base")


def reference_response(example: Example) -> str:
    """The training target of the vanilla model: the reference chain, one sentence per step."""
    return " ".join(step.text for step in example.chain)


def tokenizer_corpus(examples: list[Example]) -> list[str]:
    texts = []
    for ex in examples:
        texts.append(ex.question)
        if ex.choices:
            texts.append(" ".join(ex.choices))
        texts.append(reference_response(ex))
    texts += all_statements()
    return texts


def train_base_vlm(cfg: RunConfig, examples: list[Example], out_dir: Path, accelerator: Accelerator) -> dict:
    from mmboundary.models import build_model, train_tokenizer

    tokenizer = None
    if cfg.model.kind == "tiny":
        tokenizer = train_tokenizer(tokenizer_corpus(examples), cfg.model.tokenizer_vocab_size)
    torch.manual_seed(cfg.seed)
    vlm = build_model(cfg.model, tokenizer=tokenizer, seed=cfg.seed)
    images = {ex.id: load_image(ex.image) for ex in examples}
    prompts = {ex.id: vlm.prompt_text(ex.question, ex.choices) for ex in examples}

    def collate(batch: list[Example]) -> dict:
        return dict(vlm.encode([prompts[ex.id] for ex in batch], [images[ex.id] for ex in batch],
                               [reference_response(ex) for ex in batch]))

    summary = train_supervised(vlm.model, examples, collate, cfg.base.vlm, seed=cfg.seed,
                               accelerator=accelerator, description="base VLM")
    vlm.model = accelerator.unwrap_model(vlm.model)
    vlm.save(out_dir)
    summary["parameters"] = sum(p.numel() for p in vlm.model.parameters())
    return summary


def clip_pairs(examples: list[Example]) -> list[tuple[Example, str]]:
    """(image, sentence) pairs: every perception step of every example."""
    return [(ex, st.text) for ex in examples for st in ex.chain if st.kind == StepKind.perception]


def train_base_clip(cfg: RunConfig, examples: list[Example], tokenizer, out_dir: Path,
                    accelerator: Accelerator) -> dict:
    from mmboundary.models import build_clip

    torch.manual_seed(cfg.seed)
    clip = build_clip(tokenizer, cfg.clip, seed=cfg.seed)
    pairs = clip_pairs(examples)
    random.Random(cfg.seed).shuffle(pairs)
    images = {ex.id: load_image(ex.image) for ex in examples}

    def collate(batch: list[tuple[Example, str]]) -> dict:
        enc = clip.encode([images[ex.id] for ex, _ in batch], [s for _, s in batch])
        enc["return_loss"] = True
        return enc

    summary = train_supervised(clip.model, pairs, collate, cfg.base.clip, seed=cfg.seed,
                               accelerator=accelerator, description="base CLIP")
    clip.model = accelerator.unwrap_model(clip.model)
    clip.save(out_dir)
    summary["pairs"] = len(pairs)
    return summary
