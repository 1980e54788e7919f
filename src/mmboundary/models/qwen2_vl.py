"""An image-only processor for Qwen2-VL checkpoints, used when `transformers`' own
`Qwen2VLProcessor` cannot be built.

Why: in transformers 5 the Qwen2-VL processor always builds a video processor, and that class
needs torchvision. Where torchvision does not import (this project's CPU environment), the real
processor fails with an ImportError/AttributeError although images need none of it. This
adapter does for images exactly what `Qwen2VLProcessor` does, with the PIL image processor
(`Qwen2VLImageProcessorPil`):

- `pixel_values` and `image_grid_thw` from the image processor;
- each `<|image_pad|>` of the text is expanded to `prod(grid_thw) / merge_size^2` copies (one per
  merged 2x2 patch), in order of the images;
- `mm_token_type_ids`: 1 on image tokens, 0 elsewhere (the model's 3-D rope index reads it).

`load_vlm` picks it only when `AutoProcessor` fails for a checkpoint whose `model_type` is
`qwen2_vl` / `qwen2_5_vl` (see `factory.load_processor`); with torchvision the real processor is
used. `save_pretrained` writes standard files (tokenizer, `preprocessor_config.json`,
`chat_template.jinja`), which either processor loads. Videos are not supported (the project
never uses them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BatchFeature, Qwen2VLImageProcessorPil

QWEN_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")
IMAGE_PAD = "<|image_pad|>"


def read_chat_template(directory: str | Path, tokenizer) -> str | None:
    """A checkpoint's chat template: `chat_template.jinja`, else `chat_template.json` (the older
    hub layout, {"chat_template": ...}), else the tokenizer's own."""
    directory = Path(directory)
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text("utf-8")
    js = directory / "chat_template.json"
    if js.is_file():
        data = json.loads(js.read_text("utf-8"))
        if isinstance(data, dict) and isinstance(data.get("chat_template"), str):
            return data["chat_template"]
    return getattr(tokenizer, "chat_template", None)


class Qwen2VLImageProcessor:
    """`Qwen2VLProcessor`'s image path without its video processor (see the module docstring).

    Call as the real processor: `proc(images=[...], text=[...], return_tensors="pt",
    padding=True)` -> BatchFeature(input_ids, attention_mask, mm_token_type_ids, pixel_values,
    image_grid_thw)."""

    image_token = IMAGE_PAD

    def __init__(self, image_processor, tokenizer, chat_template: str | None = None):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {IMAGE_PAD} token (not a Qwen2-VL tokenizer)")

    @classmethod
    def from_pretrained(cls, directory: str | Path, **_: Any) -> Qwen2VLImageProcessor:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(directory))
        return cls(image_processor, tokenizer, read_chat_template(directory, tokenizer))

    def apply_chat_template(self, messages, add_generation_prompt: bool = False, tokenize: bool = False, **kw):
        if self.chat_template is None:
            raise ValueError("this Qwen2-VL checkpoint has no chat template")
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=tokenize,
                                                  add_generation_prompt=add_generation_prompt, **kw)

    def image_tokens(self, grid_thw: torch.Tensor) -> int:
        """Image tokens of one image of grid (t, h, w): one per merged patch."""
        return int(grid_thw.prod()) // (self.image_processor.merge_size ** 2)

    def __call__(self, images=None, text=None, return_tensors: str | None = "pt", padding: bool | str = True,
                 **kwargs) -> BatchFeature:
        if text is None:
            raise ValueError("Qwen2VLImageProcessor: text is required")
        texts = [text] if isinstance(text, str) else list(text)
        image_inputs: dict = {}
        if images is not None:
            images = list(images) if isinstance(images, (list, tuple)) else [images]
            image_inputs = dict(self.image_processor(images=images, return_tensors="pt"))
            counts = [self.image_tokens(g) for g in image_inputs["image_grid_thw"]]
            placeholders = sum(t.count(IMAGE_PAD) for t in texts)
            if placeholders != len(counts):
                raise ValueError(f"{placeholders} {IMAGE_PAD} placeholders in the text but {len(counts)} images")
            k = 0
            expanded = []
            for t in texts:
                parts = t.split(IMAGE_PAD)
                out = parts[0]
                for part in parts[1:]:
                    out += IMAGE_PAD * counts[k] + part
                    k += 1
                expanded.append(out)
            texts = expanded
        enc = self.tokenizer(texts, padding=padding, return_tensors=return_tensors, **kwargs)
        ids = enc["input_ids"]
        enc["mm_token_type_ids"] = ((ids == self.image_token_id).long() if isinstance(ids, torch.Tensor)
                                    else [[int(i == self.image_token_id) for i in row] for row in ids])
        return BatchFeature({**enc, **image_inputs})

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        if self.chat_template is not None:
            (directory / "chat_template.jinja").write_text(self.chat_template, "utf-8")


def limit_image_pixels(image_processor, max_pixels: int):
    """A copy of a Qwen2-VL image processor whose images are resized to at most `max_pixels`
    pixels (the smallest size is kept unless it exceeds the new limit)."""
    size = dict(image_processor.to_dict()["size"])
    size = {k: v for k, v in size.items() if v is not None}
    shortest = min(size.get("shortest_edge", 56 * 56), max_pixels)
    new = type(image_processor).from_dict({**image_processor.to_dict(),
                                           "size": {"shortest_edge": shortest, "longest_edge": max_pixels}})
    return new
