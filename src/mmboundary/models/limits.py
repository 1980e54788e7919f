"""Prompt lengths against `model.max_length`, checked before any model runs.

A pretrained VLM turns one image into many tokens (LLaVA-NeXT-7B: up to 2,928 at 672 px with its
any-resolution tiles; Qwen2-VL: one per 28x28 pixels, up to 16,384 by default). `VLM.encode`
never cuts a prompt, and cutting image tokens would make the model read a different image (the
model then fails on the mismatch, or worse, silently reads fewer features), so an example whose
prompt leaves no room for a response within `max_length` is an error naming it
(`PromptTooLongError`, a `DataError`).

`check_prompt_lengths` does this for a whole split with the processor only (no model weights):
the image-token count depends only on the image size, so it is computed once per distinct size
by running the processor on a blank image of that size, and each prompt's text is tokenized
once. The count is exact: it is what `VLM.encode` gets (tested against it). The `data` stage runs
it on every split when `model.path` names a checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from mmboundary.models.vlm import VLM, PromptTooLongError

log = logging.getLogger(__name__)


def _image_token(processor) -> tuple[str, int]:
    token = getattr(processor, "image_token", None)
    if not isinstance(token, str):
        raise ValueError(f"{type(processor).__name__} names no image token")
    tid = processor.tokenizer.convert_tokens_to_ids(token)
    if tid is None:
        raise ValueError(f"the tokenizer has no {token} token")
    return token, int(tid)


def _image_size(path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def prompt_token_counts(processor, examples: Sequence, *, image_sizes: Sequence[tuple[int, int]] | None = None
                        ) -> list[tuple[int, int] | None]:
    """(prompt tokens, of which image tokens) per example as `VLM.encode` lays them out; None
    where the image cannot be opened. `image_sizes` (width, height) overrides reading them."""
    _, image_id = _image_token(processor)
    prompter = VLM(model=None, processor=processor, kind="pretrained")
    tok = processor.tokenizer
    per_size: dict[tuple[int, int], int] = {}
    probe = prompter.prompt_text("?")

    def image_tokens(size: tuple[int, int]) -> int:
        if size not in per_size:
            enc = processor(images=[Image.new("RGB", size, "white")], text=[probe], return_tensors="pt")
            per_size[size] = int((enc["input_ids"] == image_id).sum())
        return per_size[size]

    out: list[tuple[int, int] | None] = []
    for k, ex in enumerate(examples):
        size = image_sizes[k] if image_sizes is not None else _image_size(ex.image)
        if size is None:
            out.append(None)
            continue
        ids = tok(prompter.prompt_text(ex.question, ex.choices))["input_ids"]
        n_image = image_tokens(tuple(size))
        out.append((len(ids) - ids.count(image_id) + n_image, n_image))
    return out


def check_prompt_lengths(processor, examples: Sequence, max_length: int, *, file: str | Path | None = None) -> int:
    """Raise `PromptTooLongError` naming the first example (and counting the others) whose prompt
    takes `max_length` tokens or more; return the longest prompt's length (0 for no examples, and
    for a processor that names no image token: then a warning is logged and nothing is checked).
    `file`: the split file the examples came from (named in the error, with the line)."""
    try:
        _image_token(processor)
    except ValueError as e:  # e.g. a remote-code processor that names no image token: cannot count
        log.warning("prompt lengths not checked: %s", e)
        return 0
    counts = prompt_token_counts(processor, examples)
    over = [(i, c) for i, c in enumerate(counts) if c is not None and c[0] >= max_length]
    if over:
        i, (n, n_image) = over[0]
        more = f"; {len(over) - 1} more example(s) too long: " + ", ".join(
            repr(examples[j].id) for j, _ in over[1:6]) + (" ..." if len(over) > 6 else "") if len(over) > 1 else ""
        raise PromptTooLongError(
            f"example {examples[i].id!r}: the prompt takes {n} tokens ({n_image} of them image tokens), which "
            f"leaves no room for a response within model.max_length={max_length}; image tokens are never cut: "
            f"raise model.max_length or lower model.image_max_pixels{more}",
            file=file, line=i + 1 if file is not None else None, field="image")
    return max((c[0] for c in counts if c is not None), default=0)
