"""One teacher-forced forward pass of the VLM over image + prompt + response (method.md section 2).

For a response y = (y_1..y_L) given x (image + question), position t's next-token distribution
P(. | y_<t, x) is read from the raw logits of the model's own forward pass, with no temperature,
top-k or top-p processing, in float64:

    log p_t = log_softmax(logits_t)[y_t]
    H_t     = -sum_v P(v | y_<t, x) log P(v | y_<t, x)      (full vocabulary)

All items of a batch go through ONE forward pass (`VLM.encode` with the responses: right
padding, so padding only follows an item's tokens and cannot change them under the causal mask).
The scores are aligned with the response tokens: entry t belongs to response token t. The eos
that `VLM.encode` appends is scored separately (`eos_logprob`), never as part of a step.

`token_scores(logits, labels)` is the pure tensor part (testable with chosen logits).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmboundary.confidence.spans import Span, token_offsets
from mmboundary.data.images import load_image
from mmboundary.models.vlm import IGNORE_INDEX

#: Most float64 elements (rows x vocabulary) turned into log-probabilities at once.
CHUNK_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class ResponseScores:
    """Per-token scores of one response (eos excluded), aligned with its tokens.

    - `token_ids`: the response tokens that were scored, (L,).
    - `logprobs`: log P(y_t | y_<t, x) in float64, (L,).
    - `entropies`: full-vocabulary entropy of P(. | y_<t, x) in nats, float64, (L,).
    - `offsets`: character offsets of ALL the response's tokens (the tokenizer's offset mapping);
      longer than `token_ids` when the response was truncated to the model's `max_length`.
    - `eos_logprob`: log-probability of the appended eos, None when truncated away.
    """

    token_ids: np.ndarray
    logprobs: np.ndarray
    entropies: np.ndarray
    offsets: tuple[Span, ...]
    eos_logprob: float | None

    @property
    def truncated(self) -> bool:
        return len(self.token_ids) < len(self.offsets)


def _chunk_scores(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p of `targets` and entropies for rows of logits (N, V), in float64, chunked."""
    rows = max(1, CHUNK_ELEMENTS // max(1, logits.shape[-1]))
    logps, ents = [], []
    for i in range(0, logits.shape[0], rows):
        logp = torch.log_softmax(logits[i:i + rows].double(), dim=-1)
        p = logp.exp()
        # -sum p log p, with 0 log 0 = 0 (a -inf logit has p = 0)
        ents.append(-(p * logp.masked_fill(p == 0, 0.0)).sum(-1))
        logps.append(logp.gather(-1, targets[i:i + rows, None]).squeeze(-1))
    if not logps:
        empty = torch.zeros(0, dtype=torch.float64, device=logits.device)
        return empty, empty
    return torch.cat(logps), torch.cat(ents)


def token_scores(logits: torch.Tensor, labels: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per-row `(target_ids, logprobs, entropies)` of the labelled tokens of a causal LM batch.

    `logits` (B, T, V) and `labels` (B, T) are aligned on positions (as a Hugging Face causal LM
    returns them): position t's logits predict the token at t + 1, so the targets are
    `labels[:, 1:]` and the distributions `logits[:, :-1]`. Positions whose target is -100 are
    skipped. Returned arrays are float64 numpy, in token order.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"token_scores: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    targets = labels[:, 1:].to(logits.device)
    keep = targets != IGNORE_INDEX
    dist = logits[:, :-1][keep]  # (N, V): only the labelled positions, before any float64 copy
    logp, ent = _chunk_scores(dist, targets[keep])
    counts = keep.sum(1).tolist()
    ids = targets[keep].cpu().numpy()
    logp, ent = logp.cpu().numpy(), ent.cpu().numpy()
    out, start = [], 0
    for n in counts:
        out.append((ids[start:start + n], logp[start:start + n], ent[start:start + n]))
        start += n
    return out


def _as_items(vlm, batch: Sequence[Any]) -> tuple[list[str], list[Any], list[str]]:
    """(prompts, images, responses) from items `(prompt, image, response)` or `(Example, response)`."""
    prompts, images, responses = [], [], []
    for item in batch:
        if len(item) == 3:
            prompt, image, response = item
        elif len(item) == 2:
            example, response = item
            prompt = vlm.prompt_text(example.question, example.choices)
            image = load_image(example.image)
        else:
            raise ValueError("teacher_forced: an item is (prompt, image, response) or (Example, response)")
        prompts.append(prompt)
        images.append(image)
        responses.append(response)
    return prompts, images, responses


def _accepts_logits_to_keep(model) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


@torch.no_grad()
def teacher_forced(vlm, batch: Sequence[Any]) -> list[ResponseScores]:
    """Score each response of `batch` with ONE forward pass of `vlm` (see the module docstring).

    Items are `(prompt, image, response)` (prompt from `vlm.prompt_text`) or
    `(Example, response)`. The model runs in eval mode (dropout off) for the pass and gets its
    previous mode back. Only the logits of the response region are computed when the model's
    forward takes `logits_to_keep` (Hugging Face causal LMs do), which leaves the scores unchanged.
    """
    if not len(batch):
        return []
    prompts, images, responses = _as_items(vlm, batch)
    enc = vlm.encode(prompts, images, responses, padding_side="right")
    labels = enc["labels"]
    inputs = {k: v for k, v in enc.items() if k != "labels"}

    model = vlm.model
    keep = 0
    if _accepts_logits_to_keep(model):
        # the first labelled token of any row; its predicting position is one earlier
        first = int((labels != IGNORE_INDEX).int().argmax(1).min())
        keep = labels.shape[1] - max(first - 1, 0)
    was_training = model.training
    model.eval()
    try:
        out = model(**inputs, use_cache=False, **({"logits_to_keep": keep} if keep else {}))
    finally:
        model.train(was_training)
    logits = out.logits
    rows = token_scores(logits, labels[:, labels.shape[1] - logits.shape[1]:])

    eos = vlm.eos_token_id
    results = []
    for response, (ids, logp, ent) in zip(responses, rows):
        resp_ids, offsets = token_offsets(vlm.tokenizer, response)
        n = min(len(ids), len(resp_ids))
        if list(ids[:n]) != resp_ids[:n]:
            raise RuntimeError("teacher_forced: the encoded response tokens differ from the tokenizer's "
                               "offset tokenization")
        eos_logprob = float(logp[n]) if len(ids) > n and ids[n] == eos else None
        results.append(ResponseScores(token_ids=ids[:n].copy(), logprobs=logp[:n].copy(),
                                      entropies=ent[:n].copy(), offsets=tuple(offsets),
                                      eos_logprob=eos_logprob))
    return results
