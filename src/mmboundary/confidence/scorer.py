"""The internal confidence of a response's steps on the model that wrote it, with a run's fitted
confidence model, and the exact-token helpers every scorer of a SAMPLED response shares.

    ScoringContext       what turns responses into levels: the statement mapper, the run's
                         normaliser, levels and fusion config, the signals in use and the models
                         they need (CLIP, sentence similarity); built from parts already loaded
                         (`artifacts.scoring_context(run)` reads them from a run folder)
    internal_levels      the internal level of every step of each chain, on a given model: the
                         four signals (`estimator.estimate_signals`) of the step text without its
                         statement, fused and cut into levels (`fusion.score_steps`)
    token_char_ends      sampled token ids -> decoded text and each token's character end
    response_inputs      model inputs of prompt + EXACTLY the given response token ids

Used by the RL trainer (`training`), self-correction (`correction`), the API (`api`) and the
benchmarks: a level means the same thing everywhere. This module reads no run folder and
imports nothing of the trainers or the pipeline.

Token alignment **[choice]**: sampled ids are not always the tokenizer's canonical tokenization
of the decoded text, so `VLM.encode` (which tokenises response TEXT and appends an eos) is used
for the prompt only and the sampled ids are appended to it (`response_inputs`); characters are
mapped to sampled tokens through the decoded text of each prefix (`token_char_ends`). Internal
confidence is computed, as everywhere in the project, on the canonical tokenization of the
step text (`estimate_signals`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmboundary.confidence.estimator import estimate_signals
from mmboundary.confidence.fusion import score_steps

__all__ = ["ScoringContext", "internal_levels", "response_inputs", "token_char_ends"]


@dataclass
class ScoringContext:
    """What turns responses into levels: the statement mapper (backward mapping), the run's
    fitted normaliser and levels, the fusion config and the signals in use, the CLIP model and
    sentence similarity the signals need (None when a signal that needs them is not used)."""

    mapper: Any
    normalizer: Any
    levels: Any
    fusion: Any = None
    signals: tuple[str, ...] = ("lnlp", "mte", "token_sar", "clip_score")
    clip: Any = None
    similarity: Any = None
    estimate_batch_size: int = 16
    granularity: str = "step"  # `statements.granularity`: 'answer' scores one statement per response
    judge: Any = None  # the run's step judge (`judging.make_step_judge`); None: truth as the chain builders set it


def internal_levels(vlm, context: ScoringContext, examples: Mapping[str, Any], chains) -> list[list[int] | None]:
    """Internal level of every step of each chain on `vlm` (None for a chain where a step lacks
    a signal in use, e.g. beyond max_length)."""
    if context.clip is not None:
        context.clip.model.to(vlm.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        signals = estimate_signals(vlm, context.clip, context.similarity, examples, chains,
                                   batch_size=context.estimate_batch_size, signals=context.signals, progress=False)
    out: list[list[int] | None] = []
    k = 0
    for chain in chains:
        n = len(chain.steps)
        mine = signals[k:k + n]
        k += n
        if not n:
            out.append([])
            continue
        try:
            out.append([c.level for c in score_steps(mine, context.normalizer, context.levels, context.fusion)])
        except ValueError:
            out.append(None)
    return out


def token_char_ends(tokenizer, ids: Sequence[int]) -> tuple[str, list[int]]:
    """The decoded text of sampled ids and, per token, the end (exclusive) of the characters it
    produced in that text.

    Text = `decode(ids, skip_special_tokens=True)` (no clean-up). Token i's end is the length of
    the longest common prefix of the text and the decoded prefix ids[:i+1] (made non-decreasing),
    so a token that emits half a UTF-8 character, or a special token, produces no character and
    the token that completes it does; the last end is always len(text)."""
    ids = [int(i) for i in ids]
    kw = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)
    text = tokenizer.decode(ids, **kw)
    prefixes = tokenizer.batch_decode([ids[: i + 1] for i in range(len(ids))], **kw) if ids else []
    ends, best = [], 0
    for p in prefixes:
        n = 0
        limit = min(len(p), len(text))
        while n < limit and p[n] == text[n]:
            n += 1
        best = max(best, n)
        ends.append(best)
    if ends:
        ends[-1] = len(text)
    return text, ends


def response_inputs(vlm, prompts: Sequence[str], images: Sequence[Any],
                    token_lists: Sequence[Sequence[int]]) -> tuple[dict[str, Any], list[int]]:
    """Model inputs of prompt + exactly the given response token ids (right padding; no eos
    appended), and the number of prompt tokens of each row.

    The prompt part comes from `VLM.encode` (image tokens expanded by the processor); per-token
    fields other than input_ids (e.g. Qwen2-VL's mm_token_type_ids) get 0 on response tokens,
    as `VLM.encode` does."""
    enc = vlm.encode(list(prompts), list(images), padding_side="right")
    mask = enc["attention_mask"].bool()
    n_prompt = [int(n) for n in mask.sum(1).tolist()]
    per_token = [k for k, v in enc.items() if torch.is_tensor(v) and v.shape == mask.shape and k != "attention_mask"]
    width = max(p + len(t) for p, t in zip(n_prompt, token_lists))
    device = mask.device
    data: dict[str, Any] = {}
    for key in per_token:
        src = enc[key]
        fill = vlm.pad_token_id if key == "input_ids" else 0
        out = torch.full((len(prompts), width), fill, dtype=src.dtype, device=device)
        for i, (p, toks) in enumerate(zip(n_prompt, token_lists)):
            out[i, :p] = src[i, :p]
            if key == "input_ids" and len(toks):
                out[i, p:p + len(toks)] = torch.tensor(list(toks), dtype=src.dtype, device=device)
        data[key] = out
    attn = torch.zeros((len(prompts), width), dtype=enc["attention_mask"].dtype, device=device)
    for i, (p, toks) in enumerate(zip(n_prompt, token_lists)):
        attn[i, :p + len(toks)] = 1
    data["attention_mask"] = attn
    for key, v in enc.items():
        if key not in data:
            data[key] = v
    return data, n_prompt
