"""Stage `base`: the vanilla VLM and the CLIP model of the built-in default.

No pretrained VLM, CLIP or vision encoder exists offline, so on the built-in benchmark this
stage trains them from scratch through the same Hugging Face classes that load real
checkpoints on a GPU machine:

1. a byte-level BPE tokenizer on the train split's text and the confidence-statement pool
   (so later stages can write statements without unknown tokens);
2. a small `CLIPModel` by the contrastive loss on (image, perception-step sentence) pairs, for
   the CLIPScore signal;
3. the VLM (`model.kind`: `tiny` from scratch, or `smol` around pretrained SmolLM2) on the
   reference chains, *without* confidence statements, with the loss on response tokens only.
   On the built-in benchmark, dense captions of the train images are mixed in
   (`base.caption_share`), as LLaVA's caption-alignment stage teaches perception first.
   As in LLaVA, whose vision tower is a pretrained CLIP ViT, its vision tower starts from the
   CLIP vision tower of step 2 when the shapes match (`base.vision_init`). It stands in for a
   pretrained MLLM and is meant to stay imperfect (short training).

Departures from a textbook setup: the "pretraining" is a few epochs on the benchmark itself,
so the vanilla model's errors are those of an under-trained model, not of a web-scale one.

Under several processes (`accelerate launch`): every process trains the same tokenizer (BPE
training on the same corpus is deterministic; checked by `same_tokenizer_everywhere`) and builds
the same seeded model; the VLM's
batches are sharded over the processes with the loss weighted by response tokens (the global
batch is `base.vlm.batch_size`), CLIP's batches are replicated (its contrastive loss needs the
whole batch's negatives); only the main process saves the models.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from mmboundary.config import RunConfig
from mmboundary.data.benchmark import CAPTION_QUESTION, caption_sentences
from mmboundary.data.images import load_image
from mmboundary.models.clip import build_clip
from mmboundary.models.factory import build_model
from mmboundary.models.tokenizer import train_tokenizer
from mmboundary.records import Example, StepKind
from mmboundary.statements.pool import all_statements
from mmboundary.steps import as_sentence
from mmboundary.training.loop import response_token_count, train_supervised

log = logging.getLogger("mmboundary.base")


def reference_response(example: Example) -> str:
    """The training target of the vanilla model: the reference chain, one sentence per step,
    joined by spaces. Each step goes through the boundary rule (`steps.as_sentence`: a step that
    does not end in `.`, `!` or `?` gets a `.`), so the splitter finds every step again; a chain
    whose steps all end in one is joined unchanged."""
    return " ".join(as_sentence(step.text) for step in example.chain)


def tokenizer_corpus(examples: list[Example]) -> list[str]:
    texts = []
    for ex in examples:
        texts.append(ex.question)
        if ex.choices:
            texts.append(" ".join(ex.choices))
        texts.append(reference_response(ex))
    texts += all_statements()
    return texts


def build_base_vlm(cfg: RunConfig, examples: list[Example]):
    """The untrained vanilla VLM (with, for `tiny`, its tokenizer trained on `examples`)."""
    tokenizer = None
    if cfg.model.kind == "tiny":
        tokenizer = train_tokenizer(tokenizer_corpus(examples), cfg.model.tokenizer_vocab_size)
    return build_model(cfg.model, tokenizer=tokenizer, seed=cfg.seed)


def init_vision_from_clip(vlm, clip_model) -> bool:
    """Copy the CLIP vision tower's weights into the VLM's vision tower if every shape matches.
    Returns whether it did."""
    tower = vlm.model.model.vision_tower
    src = clip_model.vision_model.state_dict()
    dst = tower.state_dict()
    mapped = {k: src[k.removeprefix("vision_model.")] for k in dst if k.removeprefix("vision_model.") in src}
    if set(mapped) != set(dst) or any(mapped[k].shape != dst[k].shape for k in dst):
        return False
    tower.load_state_dict(mapped)
    return True


def training_items(cfg: RunConfig, examples: list[Example]) -> list[tuple[Example, str, str]]:
    """(example, question, response) items: every reference chain, plus, on the built-in
    benchmark, a dense caption of each image so that captions make up `base.caption_share` of
    the items (the perception curriculum of `mmboundary.data.benchmark.captions`)."""
    items = [(ex, ex.question, reference_response(ex)) for ex in examples]
    share = cfg.base.caption_share
    if share > 0:
        by_id = {ex.id: ex for ex in examples}
        n = int(round(len(items) * share / (1 - share)))
        items += [(by_id[c["example_id"]], c["question"], c["response"])
                  for c in caption_replay(examples, n, cfg.data.benchmark.colors, cfg.seed,
                                          objects=cfg.base.caption_objects)]
    return items


def caption_replay(examples: Sequence[Example], n: int, colors, seed: int,
                   objects: bool = False) -> list[dict[str, Any]]:
    """`n` dense-caption items (the perception curriculum, no statements) of examples with a
    scene, in the columns of an SFT record: cycling through them when n is at most their number,
    else drawn with a generator seeded by `seed`. Used by `training_items` and, as replay against
    forgetting, by the SFT stage (`sft.replay_share`)."""
    with_scene = [ex for ex in examples if ex.scene is not None]
    if n <= 0 or not with_scene:
        return []
    rng = random.Random(seed)
    picked = [with_scene[i % len(with_scene)] if n <= len(with_scene) else rng.choice(with_scene)
              for i in range(n)]
    return [{"example_id": ex.id, "image": str(ex.image), "question": CAPTION_QUESTION, "choices": None,
             "response": " ".join(caption_sentences(ex.scene, colors, objects)), "levels": [], "statements": []}
            for ex in picked]


def same_tokenizer_everywhere(tokenizer, accelerator: Accelerator) -> None:
    """Under several processes, check that every process trained the same tokenizer (a digest
    of its serialised form, gathered): a process encoding with another vocabulary would train
    silently on other token ids. No-op with one process."""
    if accelerator.num_processes == 1:
        return
    import hashlib

    from accelerate.utils import gather_object

    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    digests = gather_object([hashlib.sha256(text.encode("utf-8")).hexdigest()])
    if len(set(digests)) != 1:
        raise RuntimeError(f"base: the processes built different tokenizers (digests {digests}); "
                           "train the base model in one process, or set model.path")


def train_base_vlm(cfg: RunConfig, vlm, examples: list[Example], out_dir: Path, accelerator: Accelerator) -> dict:
    same_tokenizer_everywhere(vlm.tokenizer, accelerator)
    images = {ex.id: load_image(ex.image) for ex in examples}
    items = training_items(cfg, examples)

    def collate(batch: list[tuple[Example, str, str]]) -> dict:
        return dict(vlm.encode([vlm.prompt_text(q, ex.choices if q == ex.question else None) for ex, q, _ in batch],
                               [images[ex.id] for ex, _, _ in batch], [r for _, _, r in batch]))

    summary = train_supervised(vlm.model, items, collate, cfg.base.vlm, seed=cfg.seed,
                               accelerator=accelerator, description="base VLM",
                               weight_fn=response_token_count)
    vlm.model = accelerator.unwrap_model(vlm.model)
    if accelerator.is_main_process:
        vlm.save(out_dir)
    accelerator.wait_for_everyone()
    summary["parameters"] = vlm.num_parameters()
    summary["items"] = len(items)
    return summary


def clip_pairs(examples: list[Example]) -> list[tuple[Example, str]]:
    """(image, sentence) pairs: every perception step of every example, as a sentence (the
    boundary rule, `steps.as_sentence`, as the steps the CLIPScore signal later reads)."""
    return [(ex, as_sentence(st.text)) for ex in examples for st in ex.chain if st.kind == StepKind.perception]


def train_base_clip(cfg: RunConfig, examples: list[Example], tokenizer, out_dir: Path,
                    accelerator: Accelerator) -> dict:
    torch.manual_seed(cfg.seed)
    clip = build_clip(tokenizer, cfg.clip, seed=cfg.seed)
    pairs = clip_pairs(examples)
    random.Random(cfg.seed).shuffle(pairs)
    images = {ex.id: load_image(ex.image) for ex in examples}

    def collate(batch: list[tuple[Example, str]]) -> dict:
        enc = clip.encode([images[ex.id] for ex, _ in batch], [s for _, s in batch])
        enc["return_loss"] = True
        return enc

    # replicated, not sharded: the contrastive loss of a slice would lose the other slices' negatives
    summary = train_supervised(clip.model, pairs, collate, cfg.base.clip, seed=cfg.seed,
                               accelerator=accelerator, description="base CLIP", batch_split="replicate")
    clip.model = accelerator.unwrap_model(clip.model)
    if accelerator.is_main_process:
        clip.save(out_dir)
    accelerator.wait_for_everyone()
    summary["pairs"] = len(pairs)
    return clip, summary
