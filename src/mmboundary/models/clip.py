"""The CLIP-style model behind U_CLIPScore: a small `CLIPModel` trained by the project (built here
with the project's tokenizer), or any Hugging Face CLIP checkpoint.

Sentences are truncated explicitly: content tokens are cut to `max_length - 2`, then bos and the
end token are added (the text model pools at the first end token), so a long sentence never
overflows the text model's positions.

The end token is the tokenizer's eos, except when that has id 2: CLIP's text model reads
`eos_token_id == 2` as a legacy rule ("pool at the largest token id"), so a model built here with
such a tokenizer (SmolLM2's, for instance) ends sentences with its unk or pad token instead and
records that id as the text config's `eos_token_id`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
)

from mmboundary.errors import loading_checkpoint
from mmboundary.models.factory import _image_processor, small_vision_config
from mmboundary.models.spec import ClipSpec
from mmboundary.models.vlm import ImageLike, load_image


@dataclass
class ClipProcessor:
    """Tokenizer + image processor of a CLIP model, with explicit truncation of sentences to
    `max_length` text positions (bos + content + end token)."""

    tokenizer: Any
    image_processor: Any
    max_length: int
    end_token_id: int

    def tokenize(self, sentences: Sequence[str]) -> dict[str, torch.Tensor]:
        """input_ids / attention_mask, right padded; each row is bos + content (truncated) + end."""
        tok = self.tokenizer
        bos, eos = tok.bos_token_id, self.end_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        room = self.max_length - 1 - (bos is not None)
        rows = []
        for ids in tok(list(sentences), add_special_tokens=False)["input_ids"]:
            ids = list(ids)[:room]
            rows.append(([bos] if bos is not None else []) + ids + [eos])
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            attention_mask[i, : len(r)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def pixel_values(self, images: Sequence[ImageLike]) -> torch.Tensor:
        pil = [load_image(im) for im in images]
        return self.image_processor(images=pil, return_tensors="pt")["pixel_values"]

    def save_pretrained(self, directory: str | Path) -> None:
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, max_length: int, end_token_id: int | None = None) -> ClipProcessor:
        """Load tokenizer and image processor; `end_token_id` defaults to the tokenizer's eos."""
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        return cls(
            tokenizer=tokenizer,
            image_processor=AutoImageProcessor.from_pretrained(str(directory)),
            max_length=max_length,
            end_token_id=tokenizer.eos_token_id if end_token_id is None else end_token_id,
        )


@dataclass
class Clip:
    """A CLIP model with its processor. Unpacks as `model, processor = clip`."""

    model: CLIPModel
    processor: ClipProcessor

    def __iter__(self):
        return iter((self.model, self.processor))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, images: Sequence[ImageLike], sentences: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs (pixel_values, input_ids, attention_mask) on the model's device, e.g. for
        contrastive training with `model(**batch, return_loss=True)`."""
        dtype = next(self.model.parameters()).dtype
        batch = {"pixel_values": self.processor.pixel_values(images).to(dtype), **self.processor.tokenize(sentences)}
        return {k: v.to(self.device) for k, v in batch.items()}

    def embed(self, images: Sequence[ImageLike] | None, sentences: Sequence[str] | None):
        """See `clip_embed`."""
        return clip_embed(self.model, self.processor, images, sentences)

    def similarity(self, images: Sequence[ImageLike], sentences: Sequence[str]) -> torch.Tensor:
        """See `clip_similarity`."""
        return clip_similarity(self.model, self.processor, images, sentences)

    def save(self, directory: str | Path) -> Path:
        """See `save_clip`."""
        return save_clip(self.model, self.processor, directory)


def _end_token_id(tokenizer) -> int:
    """The token a sentence ends with, where the text model pools (see the module docstring)."""
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError("build_clip: the tokenizer needs eos and pad tokens")
    if tokenizer.eos_token_id != 2:
        return int(tokenizer.eos_token_id)
    for candidate in (tokenizer.unk_token_id, tokenizer.pad_token_id):
        if candidate is not None and candidate != 2:
            return int(candidate)
    raise ValueError("build_clip: the tokenizer's eos has id 2 (CLIP's legacy pooling marker) and it has "
                     "no other unk or pad token to end sentences with")


def build_clip(tokenizer, spec: ClipSpec | None = None, *, seed: int | None = None) -> Clip:
    """A small CLIPModel whose text vocabulary is `tokenizer`'s (which needs eos and pad; see the
    module docstring for tokenizers whose eos has id 2).
    Initialised under `torch.manual_seed(seed)` (default `spec.seed`) without touching the
    caller's random state. With `spec.path` set, that checkpoint is loaded instead."""
    spec = spec or ClipSpec()
    if spec.path:
        return load_clip(spec.path)
    end = _end_token_id(tokenizer)
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden_size,
        intermediate_size=spec.text_intermediate_size,
        num_hidden_layers=spec.text_num_layers,
        num_attention_heads=spec.text_num_heads,
        max_position_embeddings=spec.max_text_length,
        projection_dim=spec.projection_dim,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=end,
    )
    vision = small_vision_config(spec, projection_dim=spec.projection_dim)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                        projection_dim=spec.projection_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed if seed is None else seed)
        model = CLIPModel(config)
    model.eval()
    images = _image_processor(spec.image_size, spec.image_normalization)
    processor = ClipProcessor(tokenizer=tokenizer, image_processor=images, max_length=spec.max_text_length,
                              end_token_id=end)
    return Clip(model, processor)


def save_clip(model: CLIPModel, processor: ClipProcessor, directory: str | Path) -> Path:
    """Save model (safetensors) and processor files to `directory` (loadable by `load_clip`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def load_clip(path: str | Path, *, dtype: torch.dtype | None = None) -> Clip:
    """Load a CLIP saved by `save_clip`, or any Hugging Face CLIP checkpoint (directory or hub id)."""
    kwargs: dict = {"use_safetensors": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    with loading_checkpoint(path, "CLIP checkpoint"):
        model = CLIPModel.from_pretrained(str(path), **kwargs)
    model.eval()
    text_cfg = model.config.text_config
    # eos_token_id 2 is CLIP's legacy marker (pool at the largest id): then end with the tokenizer's eos
    end = text_cfg.eos_token_id if text_cfg.eos_token_id not in (None, 2) else None
    processor = ClipProcessor.from_pretrained(path, max_length=text_cfg.max_position_embeddings, end_token_id=end)
    return Clip(model, processor)


def _features(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def clip_embed(
    model: CLIPModel, processor: ClipProcessor, images: Sequence[ImageLike] | None, sentences: Sequence[str] | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """L2-normalised embeddings (float32, on CPU) of the images (N, D) and sentences (M, D); either
    may be None. Sentences are truncated explicitly to the text model's positions."""
    device = next(model.parameters()).device
    image_emb = text_emb = None
    if images is not None and len(images):
        pixels = processor.pixel_values(images).to(device=device, dtype=next(model.parameters()).dtype)
        image_emb = F.normalize(_features(model.get_image_features(pixel_values=pixels)).float(), dim=-1).cpu()
    if sentences is not None and len(sentences):
        enc = {k: v.to(device) for k, v in processor.tokenize(sentences).items()}
        text_emb = F.normalize(_features(model.get_text_features(**enc)).float(), dim=-1).cpu()
    return image_emb, text_emb


def clip_similarity(model: CLIPModel, processor: ClipProcessor, images: Sequence[ImageLike],
                    sentences: Sequence[str]) -> torch.Tensor:
    """Cosine similarity matrix (len(images), len(sentences)) in [-1, 1]."""
    image_emb, text_emb = clip_embed(model, processor, images, sentences)
    return image_emb @ text_emb.T
