"""Helpers the baselines share: generation with its cost, seeded sampling, matching a chain's
steps against sampled chains, an exact sentence similarity, and whether a model follows
instructions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from mmboundary.answers import normalize_answer
from mmboundary.data.images import load_image
from mmboundary.errors import ConfigError
from mmboundary.records import Example

__all__ = [
    "INSTRUCTION_FOLLOWING_BY_KIND",
    "ExactSimilarity",
    "Generation",
    "Match",
    "best_matches",
    "generate",
    "instruction_following",
    "load_images",
    "seeded",
]


# --- generation ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Generation:
    """One generated sequence: its text (decoded without special tokens, stripped, as
    `VLM.generate` returns it) and the number of tokens generated (eos included when generated)."""

    text: str
    tokens: int


def load_images(examples: Sequence[Example]) -> dict[str, Any]:
    """Each example's image, loaded once (checked loader of `mmboundary.data.images`)."""
    out: dict[str, Any] = {}
    for ex in examples:
        if ex.id not in out:
            out[ex.id] = load_image(ex.image)
    return out


def generate(vlm, prompts: Sequence[tuple[str, Sequence[str] | None, Any]], *, max_new_tokens: int,
             batch_size: int, do_sample: bool = False, temperature: float = 1.0) -> list[Generation]:
    """Generate one sequence per `(question, choices, image)` in batches of `batch_size`.

    Uses the model's `generate_ids` (the `VLM` interface; a test double needs only that and a
    `tokenizer` with `batch_decode`), so the generated token count is exact."""
    if batch_size < 1:
        raise ValueError(f"generate: batch_size must be >= 1, got {batch_size}")
    out: list[Generation] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        ids = vlm.generate_ids([q for q, _, _ in chunk], [c for _, c, _ in chunk], [im for _, _, im in chunk],
                               max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature)
        if len(ids) != len(chunk):
            raise ValueError(f"generate: the model returned {len(ids)} sequences for {len(chunk)} prompts")
        texts = vlm.tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        out += [Generation(text=t.strip(), tokens=len(x)) for t, x in zip(texts, ids)]
    return out


def judged_and_sampled(vlm, examples: Sequence[Example], generation, n_samples: int, temperature: float,
                       seed: int) -> tuple[list, list]:
    """Each example's judged chain (the run's generation config: greedy by default) and
    `n_samples` sampled chains per example (seeded, at `temperature`), example by example in
    order: sampled[i * n_samples:(i + 1) * n_samples] are example i's."""
    images = load_images(examples)
    prompts = [(ex.question, ex.choices, images[ex.id]) for ex in examples]
    judged = generate(vlm, prompts, max_new_tokens=generation.max_new_tokens, batch_size=generation.batch_size,
                      do_sample=generation.do_sample, temperature=generation.temperature)
    with seeded(seed):
        sampled = generate(vlm, [p for p in prompts for _ in range(n_samples)],
                           max_new_tokens=generation.max_new_tokens, batch_size=generation.batch_size,
                           do_sample=True, temperature=temperature)
    return judged, sampled


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block under `torch.manual_seed(seed)` (every device) without changing the caller's
    random state afterwards."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


# --- step matching against samples --------------------------------------------------------------

class Match(NamedTuple):
    """The step of one sample most similar to a given step: its index and similarity; both None
    when the sample has no step."""

    index: int | None
    similarity: float | None


def best_matches(targets: Sequence[Sequence[str]], samples: Sequence[Sequence[Sequence[str]]],
                 similarity) -> tuple[list[list[list[Match]]], list[int]]:
    """For every example i, step t of `targets[i]` and sample k of `samples[i]`: the step of
    sample k most similar to it (`Match`; ties go to the earlier step).

    All distinct (target step, sample step) pairs of all examples are scored in ONE
    `similarity.pairwise(pairs)` call (a `SentenceSimilarity`, `ExactSimilarity`, or anything
    with that method). Returns `out[i][t][k]` and, per example, its number of distinct pairs.
    """
    if len(targets) != len(samples):
        raise ValueError(f"best_matches: {len(targets)} target chains but {len(samples)} sample lists")
    index: dict[tuple[str, str], int] = {}
    counts: list[int] = []
    for steps, sample_list in zip(targets, samples):
        mine = {(a, b) for a in steps for sample in sample_list for b in sample}
        counts.append(len(mine))
        for pair in sorted(mine):
            index.setdefault(pair, len(index))
    scores = np.zeros(0, dtype=np.float64)
    if index:
        scores = np.asarray(similarity.pairwise(list(index)), dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(index):
            raise ValueError(f"similarity.pairwise returned {scores.shape[0]} scores for {len(index)} pairs")
        if not np.isfinite(scores).all():
            raise ValueError("similarity.pairwise returned NaN or infinity")
    out: list[list[list[Match]]] = []
    for steps, sample_list in zip(targets, samples):
        per_step = []
        for a in steps:
            row = []
            for sample in sample_list:
                if not sample:
                    row.append(Match(None, None))
                    continue
                sims = [float(scores[index[(a, b)]]) for b in sample]
                j = int(np.argmax(sims))  # first maximum: the earlier step wins a tie
                row.append(Match(j, sims[j]))
            per_step.append(row)
        out.append(per_step)
    return out, counts


class ExactSimilarity:
    """g(a, b) = 1.0 when the two sentences are equal after answer normalisation
    (`answers.normalize_answer`: case, punctuation and articles ignored, number words one..twenty
    read as digits), else 0.0.

    **[choice]** offered for the built-in benchmark, whose chains are written in a small templated
    language: there two steps make the same claim exactly when their normalised texts are equal,
    which no embedding threshold achieves (MiniLM rates "There are 2 red circles." and "There are
    3 red circles." 0.885, see `evaluation/matching.py`). Any threshold in (0, 1] then means "the
    same sentence". On free-form text use `SentenceSimilarity`. `calls` counts `pairwise` calls.
    """

    def __init__(self) -> None:
        self.calls = 0

    def pairwise(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        self.calls += 1
        return np.array([1.0 if normalize_answer(a) == normalize_answer(b) else 0.0 for a, b in pairs],
                        dtype=np.float64)

    def __call__(self, a: str, b: str) -> float:
        return float(self.pairwise([(a, b)])[0])


# --- instruction following ----------------------------------------------------------------------

#: **[choice]** Whether a model of each `VLM.kind` can follow a prompt's instructions, used when
#: neither the baseline's config (`instruction_following`) nor the model object (an
#: `instruction_following` attribute) says:
#: - "tiny": False. It is trained from scratch (stage `base`) on the benchmark's reference chains
#:   and captions only; it has never seen an instruction, so a prompt asking for a confidence
#:   after each step is text it cannot act on;
#: - "smol": False. Its SmolLM2-135M-Instruct backbone was instruction-tuned, but stage `base`
#:   fine-tunes the whole model on the benchmark's chains without instructions; set
#:   `instruction_following: true` to try it anyway (the parse counts then show how it did);
#: - "pretrained": True. A checkpoint loaded with `AutoModelForImageTextToText` and its chat
#:   template (LLaVA-NeXT, Qwen2-VL-Instruct, as in the paper); set it to False for a base
#:   (non-chat) checkpoint.
INSTRUCTION_FOLLOWING_BY_KIND: dict[str, bool] = {"tiny": False, "smol": False, "pretrained": True}

_KIND_REASONS = {
    "tiny": "the tiny model was trained from scratch on the benchmark's chain format only and has "
            "never seen an instruction",
    "smol": "the smol model's backbone was fine-tuned on the benchmark's chains without instructions "
            "(stage base); set instruction_following: true to try it",
    "pretrained": "a pretrained chat checkpoint follows its chat template's instructions",
}


def instruction_following(vlm, override: bool | None) -> tuple[bool, str]:
    """Whether `vlm` follows instructions, and why: `override` (a config's
    `instruction_following`) when set, else the model's own `instruction_following` attribute,
    else `INSTRUCTION_FOLLOWING_BY_KIND[vlm.kind]`. A model of another kind needs the config
    to say (`ConfigError`)."""
    if override is not None:
        return bool(override), f"the config sets instruction_following={bool(override)}"
    attr = getattr(vlm, "instruction_following", None)
    if attr is not None:
        return bool(attr), f"the model declares instruction_following={bool(attr)}"
    kind = getattr(vlm, "kind", None)
    if kind in INSTRUCTION_FOLLOWING_BY_KIND:
        return INSTRUCTION_FOLLOWING_BY_KIND[kind], f"model kind {kind!r}: {_KIND_REASONS[kind]}"
    raise ConfigError(f"instruction_following: cannot tell whether a model of kind {kind!r} follows "
                      "instructions; set `instruction_following` in the baseline's config")
