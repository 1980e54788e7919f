"""The four raw signals of every step of generated chains (method.md section 2).

Per batch of chains:
1. ONE teacher-forced forward pass of the VLM over image + question + chain
   (`forward.teacher_forced`): per-token log-probabilities and entropies of each chain;
2. steps -> token spans through the tokenizer's offsets (`spans.step_token_spans`);
3. U_LNLP and U_MTE per step from those arrays (`lnlp`, `mte`);
4. U_TokenSAR: all token removals of all steps of the batch in ONE sentence-encoder call
   (`token_sar.token_sar_batch`);
5. U_CLIPScore: one CLIP pass over the batch's distinct images and all its steps (`clip_score`).
No sampling is ever triggered.

A step whose tokens were not all scored (the response was truncated to the model's `max_length`)
gets None for the three text signals, and a warning: a signal over part of a step is not the
step's signal. So does a step that owns no token (`spans.step_token_spans`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

from mmboundary.confidence.clip_score import clip_scores
from mmboundary.confidence.forward import teacher_forced
from mmboundary.confidence.lnlp import lnlp
from mmboundary.confidence.mte import mte
from mmboundary.confidence.spans import step_token_spans, token_offsets
from mmboundary.confidence.token_sar import token_sar_batch
from mmboundary.data.images import load_image
from mmboundary.progress import make_progress
from mmboundary.records import Example, GeneratedChain, StepSignals

SIGNALS = ("lnlp", "mte", "token_sar", "clip_score")
TEXT_SIGNALS = ("lnlp", "mte", "token_sar")


def _example_lookup(examples: Sequence[Example] | Mapping[str, Example]) -> Mapping[str, Example]:
    if isinstance(examples, Mapping):
        return examples
    return {ex.id: ex for ex in examples}


def estimate_signals(
    vlm,
    clip,
    similarity,
    examples: Sequence[Example] | Mapping[str, Example],
    chains: Sequence[GeneratedChain],
    batch_size: int = 16,
    signals: Sequence[str] = SIGNALS,
    progress: bool = True,
) -> list[StepSignals]:
    """`StepSignals` of every step of `chains`, in chain then step order.

    - `vlm`: the model whose own forward pass gives the text signals (needed for lnlp, mte,
      token_sar); `clip`: a `Clip` (needed for clip_score); `similarity`: a
      `SentenceSimilarity` or anything with `pairwise(pairs) -> array` (needed for token_sar).
    - `examples`: the examples the chains answer (a list or an id -> Example mapping); a chain
      finds its example by `example_id`, so several chains may answer one example.
    - `signals`: which to compute; the others are None in the records.
    `token_start`/`token_end` are the step's response-token span (`spans.step_token_spans`);
    (0, 0) when no VLM is given (clip_score only).
    """
    wanted = tuple(signals)
    unknown = [s for s in wanted if s not in SIGNALS]
    if unknown:
        raise ValueError(f"estimate_signals: unknown signals {unknown} (known: {', '.join(SIGNALS)})")
    need_text = any(s in TEXT_SIGNALS for s in wanted)
    if need_text and vlm is None:
        raise ValueError("estimate_signals: lnlp, mte and token_sar need the VLM")
    if "token_sar" in wanted and similarity is None:
        raise ValueError("estimate_signals: token_sar needs a sentence similarity")
    if "clip_score" in wanted and clip is None:
        raise ValueError("estimate_signals: clip_score needs a CLIP model")
    if batch_size < 1:
        raise ValueError("estimate_signals: batch_size must be >= 1")
    lookup = _example_lookup(examples)
    missing = sorted({c.example_id for c in chains if c.example_id not in lookup})
    if missing:
        raise ValueError(f"estimate_signals: no example for chain example_id {missing[:5]}")

    todo = [c for c in chains if c.steps]  # a chain without steps has nothing to score
    out: dict[int, list[StepSignals]] = {}
    truncated_steps = 0
    bar = make_progress() if progress else None
    task = bar.add_task("signals", total=len(todo), info="") if bar is not None else None
    if bar is not None:
        bar.start()
    try:
        for b in range(0, len(todo), batch_size):
            batch = todo[b:b + batch_size]
            exs = [lookup[c.example_id] for c in batch]
            image_of: dict[str, int] = {}
            images = []
            for ex in exs:
                if ex.id not in image_of:
                    image_of[ex.id] = len(images)
                    images.append(load_image(ex.image))

            # token spans and per-token scores of each chain's steps
            step_tokens: list[list[tuple[int, int]]] = []
            scores = None
            if need_text:
                items = [(vlm.prompt_text(ex.question, ex.choices), images[image_of[ex.id]], c.text)
                         for ex, c in zip(exs, batch)]
                scores = teacher_forced(vlm, items)
                for c, sc in zip(batch, scores):
                    step_tokens.append(step_token_spans(c.text, [(s.start, s.end) for s in c.steps], sc.offsets))
            else:
                tok = vlm.tokenizer if vlm is not None else None
                for c in batch:
                    if tok is None:
                        step_tokens.append([(0, 0)] * len(c.steps))
                        continue
                    _, offsets = token_offsets(tok, c.text)
                    step_tokens.append(step_token_spans(c.text, [(s.start, s.end) for s in c.steps], offsets))

            values: list[list[dict[str, float | None]]] = [[{} for _ in c.steps] for c in batch]
            sar_steps, sar_where = [], []
            if scores is not None:
                for i, (c, sc) in enumerate(zip(batch, scores)):
                    for j, (a, e) in enumerate(step_tokens[i]):
                        if e > len(sc.token_ids):
                            truncated_steps += 1  # not all of the step's tokens were scored
                            continue
                        if e <= a:
                            continue  # a step with no token of its own (see spans.step_token_spans)
                        if "lnlp" in wanted:
                            values[i][j]["lnlp"] = lnlp(sc.logprobs[a:e])
                        if "mte" in wanted:
                            values[i][j]["mte"] = mte(sc.entropies[a:e])
                        if "token_sar" in wanted:
                            sar_steps.append((sc.token_ids[a:e], sc.logprobs[a:e]))
                            sar_where.append((i, j))
            if sar_steps:
                for (i, j), v in zip(sar_where, token_sar_batch(vlm.tokenizer, similarity, sar_steps)):
                    values[i][j]["token_sar"] = v
            if "clip_score" in wanted:
                sentences, index, where = [], [], []
                for i, (c, ex) in enumerate(zip(batch, exs)):
                    for j, s in enumerate(c.steps):
                        sentences.append(s.text)
                        index.append(image_of[ex.id])
                        where.append((i, j))
                for (i, j), v in zip(where, clip_scores(clip, images, sentences, image_index=index)):
                    values[i][j]["clip_score"] = float(v)

            for i, c in enumerate(batch):
                out[id(c)] = [
                    StepSignals(example_id=c.example_id, step_index=j, text=s.text,
                                token_start=step_tokens[i][j][0], token_end=step_tokens[i][j][1],
                                correct=s.correct, **values[i][j])
                    for j, s in enumerate(c.steps)
                ]
            if bar is not None:
                bar.advance(task, len(batch))
    finally:
        if bar is not None:
            bar.stop()
    if truncated_steps:
        warnings.warn(f"estimate_signals: {truncated_steps} step(s) reach beyond the model's max_length "
                      "(truncated response): their text signals are None", stacklevel=2)
    return [sig for c in chains for sig in out.get(id(c), [])]
