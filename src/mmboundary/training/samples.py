"""Rollouts of the RL stage: sampled responses turned into `Rollout` records (`Sample`s).

    question_indices     the questions of an iteration (seeded endless permutations)
    seed_for             the seed of (seed, iteration, process): every random draw of an
                         iteration derives from it, so a resumed run samples what an
                         uninterrupted one would
    collect_samples      sample responses with the current policy (all tokens, or only the
                         statements: `training.sampling`), then `samples_from_ids`
    samples_from_ids     parse each response into steps with statements (the run's statement
                         mapper), check each step and the answer (`generation.
                         expressed_chain_record`), recompute each step's INTERNAL level on the
                         current policy (`confidence.scorer.internal_levels`), build the rollout
    build_rollout        character spans of the parsed steps -> spans of the GENERATED tokens
                         (`char_spans_to_token_spans`, with `confidence.scorer.token_char_ends`)

Token alignment **[choice]**: the actions are exactly the sampled token ids (the eos included
when one was sampled; nothing is appended); see `confidence.scorer`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessorList

from mmboundary.confidence import scorer
from mmboundary.confidence.scorer import ScoringContext, token_char_ends
from mmboundary.data.images import load_image
from mmboundary.generation import expressed_chain_record
from mmboundary.judging import judge_chains
from mmboundary.statements.chain_format import parse_chains
from mmboundary.training.rl_config import RLConfig
from mmboundary.training.rollout import Rollout, RolloutStep, answer_rollout
from mmboundary.training.sampling import StatementSampling, token_flags

__all__ = ["Sample", "build_rollout", "char_spans_to_token_spans", "collect_samples", "question_indices",
           "samples_from_ids", "seed_for"]


def seed_for(seed: int, iteration: int, rank: int) -> int:
    """The seed of iteration `iteration` on process `rank` (and, with rank 99, of pass `iteration`
    over the questions: `question_indices`)."""
    return (int(seed) * 1_000_003 + iteration * 7_919 + rank * 104_729) % (2**63 - 1)


def question_indices(n_examples: int, iteration: int, batch_size: int, seed: int) -> list[int]:
    """The questions of an iteration: positions [it*B, (it+1)*B) of an endless sequence of
    permutations of the examples, permutation e seeded by (seed, e)."""
    out, perms = [], {}
    for position in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch, k = divmod(position, n_examples)
        if epoch not in perms:
            g = torch.Generator().manual_seed(seed_for(seed, epoch, 99))
            perms[epoch] = torch.randperm(n_examples, generator=g).tolist()
        out.append(perms[epoch][k])
    return out


def char_spans_to_token_spans(ends: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token span [i, j) of each character span [a, b): from the token that produced character a
    to the token that produced character b - 1 (`ends` from `token_char_ends`). An empty
    character span gives an empty token span (k, k)."""
    out = []
    for a, b in spans:
        if b <= a:
            k = bisect_right(ends, a)
            out.append((k, k))
            continue
        out.append((bisect_right(ends, a), bisect_left(ends, b) + 1))
    return out


def build_rollout(example_id: str, prompt_length: int, ids: Sequence[int], ends: Sequence[int], parsed,
                  correct: Sequence[int], internal_levels: Sequence[int], answer_correct: int,
                  knowledge: Sequence[float | None] | None = None) -> tuple[Rollout, int]:
    """A `Rollout` of one sampled response.

    - `ids`: the sampled token ids; `ends`: their character ends (`token_char_ends`) in the text
      that `parsed` (a `statements.chain_format.ParsedChain`) was parsed from;
    - `correct[t]`, `internal_levels[t]`: y_t in {0, 1} and the internal level of parsed step t;
      `knowledge[t]`: its matching degree from the step judge (None: none; R_KA then uses y_t).
    A step's token span covers its whole sentence (statement included), its statement span the
    statement clause (final punctuation excluded); the reward sits on the statement's last token.
    Tokens that produce only whitespace before a sentence belong to it (the rule of
    `confidence.spans`), so consecutive sentences own contiguous tokens.
    A parsed statement that owns no token of its own is treated as no statement (unparsed); a
    sentence that owns no token (it shares its only token with the previous one) is left out.
    Returns the rollout and the number of steps left out."""
    sentence_spans = char_spans_to_token_spans(ends, [p.span for p in parsed.steps])
    statement_spans = char_spans_to_token_spans(
        ends, [p.statement_span if p.statement_span is not None else (0, 0) for p in parsed.steps])
    steps, dropped, previous_end = [], 0, 0
    text = parsed.response
    for t, p in enumerate(parsed.steps):
        start, end = sentence_spans[t]
        start = max(start, previous_end)
        gap_from = ends[previous_end - 1] if previous_end > 0 else 0
        gap_to = ends[start - 1] if start > 0 else 0
        if start > previous_end and text[gap_from:gap_to].strip() == "":
            start = previous_end  # whitespace-only tokens before a sentence are its own (as in confidence.spans)
        if end <= start:
            dropped += 1
            continue
        s_start = s_end = None
        level = p.level
        if p.statement_span is not None:
            a, b = statement_spans[t]
            a = max(a, start)
            b = min(b, end)
            if b > a:
                s_start, s_end = a, b
        if s_start is None:
            level = None
        steps.append(RolloutStep(start=start, end=end, statement_start=s_start, statement_end=s_end,
                                 expressed_level=level, internal_level=int(internal_levels[t]),
                                 correct=int(correct[t]),
                                 knowledge=knowledge[t] if knowledge is not None else None))
        previous_end = end
    rollout = Rollout(example_id=example_id, prompt_length=prompt_length, tokens=tuple(ids), steps=tuple(steps),
                      answer_correct=int(answer_correct))
    return rollout, dropped


@dataclass(eq=False)
class Sample:
    """One sampled response with what its forward passes need.

    `active` is False when its internal confidence could not be computed (a step beyond the
    model's max_length): it stays in the batch (every process keeps the same number of
    samples) but no loss reads it. `group` numbers the question within the process's batch."""

    rollout: Rollout
    prompt: str
    image: Any
    text: str
    group: int
    active: bool = True
    expressed: tuple[int | None, ...] = ()
    internal: tuple[int, ...] = ()
    answer_correct: int = 0
    dropped_steps: int = 0
    parsed: Any = None
    correct: tuple[int, ...] = ()
    knowledge: tuple[float | None, ...] = ()


def samples_from_ids(vlm, items: Sequence[tuple[int, Any]], ids: Sequence[Sequence[int]], ctx: ScoringContext,
                     cfg: RLConfig) -> list[Sample]:
    """`Sample`s of sampled responses: `items[i] = (group, example)` answered by token ids
    `ids[i]`. Parses statements (`ctx.mapper`), checks steps and answer
    (`expressed_chain_record`, then the run's step judge `ctx.judge`), recomputes internal levels
    on `vlm`, builds the rollouts."""
    examples = {ex.id: ex for _, ex in items}
    images = {i: load_image(ex.image) for i, ex in examples.items()}
    decoded = [token_char_ends(vlm.tokenizer, x) for x in ids]
    texts = [t for t, _ in decoded]
    parsed = parse_chains(texts, ctx.mapper)
    chains = judge_chains([expressed_chain_record(ex, t, p) for (_, ex), t, p in zip(items, texts, parsed)],
                          examples, ctx.judge)
    internal = scorer.internal_levels(vlm, ctx, examples, chains)
    prompts = {i: vlm.prompt_text(ex.question, ex.choices) for i, ex in examples.items()}
    samples = []
    for (g, ex), x, (text, ends), p, chain, lv in zip(items, ids, decoded, parsed, chains, internal):
        a = int(chain.answer_correct)
        active = lv is not None
        levels = lv if lv is not None else [1] * len(p.steps)
        correct = [int(s.correct) if s.correct is not None else (a if cfg.unknown_step_target == "answer" else 0)
                   for s in chain.steps]
        knowledge = [s.match_degree for s in chain.steps]  # set only where a judge matched the step
        rollout, dropped = build_rollout(ex.id, 0, x, ends, p, correct, levels, a, knowledge)
        if ctx.granularity == "answer":  # one answer-level statement per response (SaySelf-style)
            rollout = answer_rollout(rollout)
        samples.append(Sample(rollout=rollout, prompt=prompts[ex.id], image=images[ex.id], text=text, group=g,
                              active=active, expressed=tuple(s.level for s in p.steps),
                              internal=tuple(levels) if active else (), answer_correct=a, dropped_steps=dropped,
                              parsed=p, correct=tuple(correct), knowledge=tuple(knowledge)))
    return samples


@torch.no_grad()
def collect_samples(vlm, examples: Sequence[Any], ctx: ScoringContext, cfg: RLConfig) -> list[Sample]:
    """Sample `cfg.samples_per_question` responses per example with the current policy (one
    greedy chain with algorithm 'expected') and turn them into `Sample`s (`samples_from_ids`;
    no log-probs yet). Sampling uses the torch random state as it is (the caller seeds it)."""
    greedy = cfg.algorithm == "expected"
    k = 1 if greedy else cfg.samples_per_question
    items = [(g, ex) for g, ex in enumerate(examples) for _ in range(k)]
    images = {ex.id: load_image(ex.image) for ex in examples}
    ids: list[list[int]] = []
    flags = None
    if cfg.sampling == "statements" and not greedy:
        flags = token_flags(vlm.tokenizer, int(vlm.model.get_output_embeddings().weight.shape[0]))
    for i in range(0, len(items), cfg.forward_batch_size):
        chunk = [ex for _, ex in items[i:i + cfg.forward_batch_size]]
        processors = LogitsProcessorList([StatementSampling(*flags)]) if flags is not None else None
        ids += vlm.generate_ids([ex.question for ex in chunk], [ex.choices for ex in chunk],
                                [images[ex.id] for ex in chunk], max_new_tokens=cfg.max_new_tokens,
                                do_sample=not greedy, temperature=cfg.temperature, logits_processor=processors)
    return samples_from_ids(vlm, items, ids, ctx, cfg)
