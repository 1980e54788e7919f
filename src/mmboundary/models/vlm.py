"""`VLM`: a Hugging Face image-text-to-text model with its processor, and the few operations the
pipeline needs (prompt, teacher-forced batch, batched generation, save).

One code path serves every kind (tiny, smol, pretrained LLaVA-NeXT / Qwen2-VL): the prompt comes
from `processor.apply_chat_template`, image tokens are inserted by the processor, and the
response is appended as its own tokens followed by the tokenizer's eos.

Token layout of one training sequence (right padding):

    [prompt tokens from the processor (bos, template, expanded image tokens, generation prompt)]
    [response tokens (tokenizer(response, add_special_tokens=False))] [eos] [pad ...]
    labels: -100 on the prompt and the padding, the token id on response tokens and eos.

Generation uses the same prompt tokens, left padded; generated text is what follows them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from transformers import BatchFeature

from mmboundary.data.images import load_image as load_image_file
from mmboundary.errors import DataError

IGNORE_INDEX = -100
MARKER_FILE = "mmboundary_model.json"

ImageLike = Image.Image | str | Path


def load_image(image: ImageLike) -> Image.Image:
    """A PIL RGB image from a PIL image or a file path (paths go through the loaders' checked
    `mmboundary.data.images.load_image`: size limit, transparency onto white, errors naming
    the file)."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    return load_image_file(image)


def question_text(question: str, choices: Sequence[str] | None) -> str:
    """The user text of a question: the question, then `Options: a, b, c` when it has choices."""
    if choices:
        return f"{question}\nOptions: {', '.join(choices)}"
    return question


class PromptTooLongError(DataError, ValueError):
    """A prompt (with its image tokens, which are never cut) leaves no room for a response within
    `max_length`. A `DataError` (and, for older callers, a `ValueError`)."""


@dataclass
class VLM:
    """A vision-language model and its processor.

    - `model`: a Hugging Face `*ForConditionalGeneration` (loadable by
      `AutoModelForImageTextToText`).
    - `processor`: its processor (image processor + tokenizer + chat template).
    - `kind`: "tiny", "smol" or "pretrained".
    - `max_length`: most tokens of a training sequence; longer responses are truncated.
    """

    model: Any
    processor: Any
    kind: str
    max_length: int | None = None

    # --- basics -----------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def eos_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos token")
        return int(eos)

    def never_generated_ids(self) -> list[int]:
        """Token ids a response must never contain: the image placeholder(s) of the processor
        (a sampled one would make the model look for an image that is not there), the bos and
        a pad token distinct from the eos. Suppressed in every `generate_ids` call; greedy
        decoding practically never picks them, sampling at a high temperature does."""
        ids = set()
        for owner in (self.model.config, self.tokenizer):
            for name in ("image_token_id", "image_token_index", "video_token_id", "bos_token_id", "pad_token_id"):
                v = getattr(owner, name, None)
                if isinstance(v, int) and v >= 0:
                    ids.add(v)
        ids.discard(self.eos_token_id)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        return sorted(i for i in ids if i < vocab)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else self.eos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # --- prompts ----------------------------------------------------------------------------------

    def prompt_text(self, question: str, choices: Sequence[str] | None = None) -> str:
        """The prompt string for one question (choices appended as `Options: a, b, c`), built by
        `processor.apply_chat_template` from a user message with an image part and a text part,
        with the generation prompt. Image tokens are still the single placeholder here; the
        processor expands them when the prompt is encoded."""
        messages = [{
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": question_text(question, choices)}],
        }]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    # --- batches ----------------------------------------------------------------------------------

    def encode(
        self,
        prompts: Sequence[str],
        images: Sequence[ImageLike],
        responses: Sequence[str] | None = None,
        *,
        padding_side: Literal["left", "right"] | None = None,
        max_length: int | None = None,
        ids: Sequence[str] | None = None,
    ) -> BatchFeature:
        """Encode prompts (from `prompt_text`) with one image each, optionally with responses.

        Returns a `BatchFeature` on the model's device holding everything the model's forward
        takes (input_ids, attention_mask, pixel_values, and e.g. image_grid_thw /
        mm_token_type_ids for Qwen2-VL, image_sizes for LLaVA-NeXT). With `responses`, each
        sequence is prompt + response tokens + eos, and `labels` are -100 on prompt and padding
        tokens (loss on response tokens and eos only). Responses longer than `max_length`
        (default: `self.max_length`) minus the prompt are truncated on the right; the prompt (with
        its image tokens) is never cut: a prompt that leaves no room for a response is a
        `DataError` naming the example (`ids[i]` when given, else its position and question).

        Padding: right by default with responses (teacher forcing), left by default without
        (generation).
        """
        prompts = list(prompts)
        pil_images = [load_image(im) for im in images]
        if len(pil_images) != len(prompts):
            raise ValueError(f"encode: {len(prompts)} prompts but {len(pil_images)} images (one image per prompt)")
        if responses is not None and len(responses) != len(prompts):
            raise ValueError(f"encode: {len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            raise ValueError("encode: empty batch")
        side = padding_side or ("right" if responses is not None else "left")
        limit = max_length if max_length is not None else self.max_length

        proc = self.processor(images=pil_images, text=prompts, return_tensors="pt", padding=True)
        mask = proc["attention_mask"].bool()
        # Per-token fields (input_ids, attention_mask, mm_token_type_ids, ...) are re-laid out;
        # the rest (pixel_values, image_grid_thw, image_sizes) pass through unchanged.
        per_token = [k for k, v in proc.items()
                     if isinstance(v, torch.Tensor) and v.shape == mask.shape and k != "attention_mask"]

        rows: list[dict[str, torch.Tensor]] = []
        for i in range(len(prompts)):
            keep = mask[i]
            row = {k: proc[k][i][keep] for k in per_token}
            n_prompt = int(keep.sum())
            labels = torch.full((n_prompt,), IGNORE_INDEX, dtype=torch.long)
            if responses is not None:
                resp = list(self.tokenizer(responses[i], add_special_tokens=False)["input_ids"])
                resp.append(self.eos_token_id)
                if limit is not None:
                    if n_prompt >= limit:
                        raise self._prompt_too_long(i, prompts[i], row, n_prompt, limit, ids)
                    resp = resp[: limit - n_prompt]
                resp_t = torch.tensor(resp, dtype=torch.long)
                for k in per_token:
                    extra = resp_t if k == "input_ids" else torch.zeros(len(resp), dtype=row[k].dtype)
                    row[k] = torch.cat([row[k], extra])
                labels = torch.cat([labels, resp_t])
            row["attention_mask"] = torch.ones(len(labels), dtype=torch.long)
            row["labels"] = labels
            rows.append(row)

        width = max(len(r["labels"]) for r in rows)
        pad_values = {"input_ids": self.pad_token_id, "labels": IGNORE_INDEX}
        data: dict[str, Any] = {}
        for k in [*per_token, "attention_mask", "labels"]:
            out = torch.full((len(rows), width), pad_values.get(k, 0), dtype=rows[0][k].dtype)
            for i, r in enumerate(rows):
                n = len(r[k])
                if side == "right":
                    out[i, :n] = r[k]
                else:
                    out[i, width - n:] = r[k]
            data[k] = out
        if responses is None:
            del data["labels"]
        model_dtype = next(self.model.parameters()).dtype
        for k, v in proc.items():
            if k in data:
                continue
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                v = v.to(model_dtype)
            data[k] = v
        return BatchFeature(data).to(self.device)

    def image_token_id(self) -> int | None:
        """The id of the image placeholder token the processor expands (None if unknown)."""
        for name in ("image_token_id", "image_token_index"):
            v = getattr(self.model.config, name, None)
            if isinstance(v, int):
                return v
        return None

    def _prompt_too_long(self, i: int, prompt: str, row: dict, n_prompt: int, limit: int, ids) -> Exception:
        image_id = self.image_token_id()
        n_image = int((row["input_ids"] == image_id).sum()) if image_id is not None else 0
        who = (f"example {ids[i]!r}" if ids is not None
               else f"prompt {i} of the batch ({prompt.strip()[-60:]!r})")
        return PromptTooLongError(
            f"{who}: the prompt takes {n_prompt} tokens ({n_image} of them image tokens), which leaves no "
            f"room for a response within max_length={limit}; the image tokens are never cut: raise "
            f"model.max_length or lower model.image_max_pixels", field="image")

    # --- generation -------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_ids(
        self,
        questions: Sequence[str],
        choices_list: Sequence[Sequence[str] | None] | None,
        images: Sequence[ImageLike],
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
        logits_processor: Any = None,
    ) -> list[list[int]]:
        """Generated token ids per question (left-padded batch), up to and including the first
        eos when one was generated. Sampling uses the plain tempered distribution (top_k and
        top_p disabled, whatever the checkpoint's generation config says). `logits_processor`:
        a `transformers.LogitsProcessorList` applied after the built-in ones."""
        questions = list(questions)
        if choices_list is None:
            choices_list = [None] * len(questions)
        if len(choices_list) != len(questions):
            raise ValueError(f"generate: {len(questions)} questions but {len(choices_list)} choice lists")
        prompts = [self.prompt_text(q, c) for q, c in zip(questions, choices_list)]
        batch = self.encode(prompts, images, padding_side="left")
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
            suppress_tokens=self.never_generated_ids() or None,
        )
        if do_sample:
            if temperature <= 0:
                raise ValueError("generate: temperature must be > 0 when sampling")
            kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
        if logits_processor is not None:
            kwargs["logits_processor"] = logits_processor
        out = self.model.generate(**batch, **kwargs)
        new = out[:, batch["input_ids"].shape[1]:].tolist()
        result = []
        for ids in new:
            if self.eos_token_id in ids:
                ids = ids[: ids.index(self.eos_token_id) + 1]
            result.append(ids)
        return result

    def generate(
        self,
        questions: Sequence[str],
        choices_list: Sequence[Sequence[str] | None] | None,
        images: Sequence[ImageLike],
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
    ) -> list[str]:
        """Answer each question about its image (batched, left padding). Returns only the new
        text, decoded with special tokens skipped and surrounding whitespace stripped."""
        ids = self.generate_ids(questions, choices_list, images, max_new_tokens=max_new_tokens,
                                do_sample=do_sample, temperature=temperature)
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return [t.strip() for t in texts]

    # --- persistence ------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Save model (safetensors) and processor so that `AutoModelForImageTextToText` +
        `AutoProcessor` (or `load_vlm`) load them; the kind is kept in `mmboundary_model.json`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        (directory / MARKER_FILE).write_text(
            json.dumps({"kind": self.kind, "max_length": self.max_length}, indent=2) + "\n"
        )
        return directory
