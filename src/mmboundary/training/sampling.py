"""Rollout sampling that explores only the confidence statements.

`StatementSampling` is a `transformers` logits processor for `generate(do_sample=True)`: the
reasoning is decoded greedily and only the statement clauses are sampled. The parser
(`statements.chain_format`) reads a statement as the clause after a sentence's LAST comma, which
a processor that decodes left to right cannot see: any comma may be followed by more reasoning
("In the image, there are two cats, and I am fairly sure of it.").

**[choice]** The opener rule. After a token that contains a comma, a row enters "statement mode"
only if its GREEDY (argmax) next token opens a confidence statement: the token's decoded text,
stripped and lower-cased, is one of the opener words, the first words of the statements of the
statement pool (`pool_openers`; for the packaged `pool.yaml`: "and", "but", "though", "with",
"without"; a caller may pass another pool's openers to `token_flags`). From that token on
(included: the connective is part of the action, and the token actually drawn there need not be
the greedy one) the row is sampled with the unchanged distribution until a token that ends the
sentence ('.', '!', '?', newline). A comma whose greedy next token is not an opener leaves the
row greedy, and a later comma of the same sentence is checked again. Tokens that are only
whitespace between the comma and the next word (", " then "and" in a tokenizer without
" and") keep the comma's check pending, so the first real word decides. A token that holds both
a comma and a sentence end leaves the row outside a statement when the comma comes first
(", fine.", as before) and, when the comma comes after the end (".',", as in "... 'Luther.',
with a fair amount of doubt."), ends the statement and starts the check of a new comma (the
parser's sentence goes on there). Inside a statement a further comma changes nothing (the row
stays sampled). The rule is per token: it assumes the tokenizer splits punctuation from words
(byte-level BPE pre-tokenizers such as Qwen2's do), so a comma and an opener are two tokens.

Why sample only statements **[choice]**: with the loss on the statement tokens only, the
reasoning tokens are the state, not the action. Sampling them at temperature 1 (as a plain PPO
rollout would) puts the statements in states the model never meets at evaluation, where chains
are greedy: on the built-in default, sampled steps were right 38% of the time against 53% for
greedy ones, so RL learnt to state less confidence than greedy steps deserve. With this sampler
the rollouts' reasoning is the evaluation's reasoning, and the samples of one question differ
only in what they state (and what follows from it). The statement tokens are sampled from the
policy itself, so PPO's ratios on them are exact.

Measured on the authors' reference chains (`benchmarks/statement_openers.py`,
`benchmarks/results/statement_openers.json`; each step written "{step}, {statement}." as the SFT
targets are): of 7,995 steps (A-OKVQA val 4,656, CulturalVQA 3,339), 3,046 (38.1%) contain a
comma of their own ("So, the answer is thirty"; "In the image, there are ..."), so the old rule
(a statement from the sentence's first comma on) sampled part of the reasoning of 38.1% of the
steps and 22.8% of the steps' own words, among them 1,665 of the 1,830 answer steps (in "So,
the answer is X" the answer itself). Under the opener rule reasoning is sampled only where a comma of the
step is followed by an opener word: 122 steps (1.5%; 0.7% of the steps' own words; 9 answer
steps), nearly all of them ", and" closing a list (108 steps; ", with" 8, ", but" 5, ", though"
1, ", without" 0). Running the processor itself, teacher-forced with a byte-level BPE tokenizer,
gives the same step counts (3,046 and 122; the benchmark's `processor` section).

Known limitation: a reasoning clause after a comma that itself begins with an opener word
("The cake has candles on top, and the number 30 is on it"; "stripes in red, yellow, and black")
still has its tail sampled: the processor cannot tell it from a statement when it meets the
connective, which only a look-ahead (more forward passes) could. That is the 1.5% above.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import torch

from mmboundary.statements.pool import default_pool

__all__ = ["StatementSampling", "TokenFlags", "pool_openers", "token_flags"]

_SENTENCE_END = (".", "!", "?", "\n")


def pool_openers(pool: Mapping[int, Iterable[str]] | None = None) -> frozenset[str]:
    """The opener words of a statement pool (level -> statements; default: the packaged pool,
    `statements.pool.default_pool()`): the first word of each statement, lower-cased."""
    if pool is None:
        pool = default_pool()
    words = {s.split()[0].lower() for statements in pool.values() for s in statements if s.split()}
    if not words:
        raise ValueError("pool_openers: the pool has no statements")
    return frozenset(words)


class TokenFlags(NamedTuple):
    """Per token id (bool tensors of the vocabulary's size), from its decoded text: `comma` (it
    contains a comma after its last sentence end, if any: "," and ".'," but not ", fine."), `end`
    (it ends a sentence: contains '.', '!', '?' or a newline), `opener` (stripped and lower-cased,
    it is an opener word), `blank` (whitespace only, no newline).
    `StatementSampling(*flags)` takes them in this order."""

    comma: torch.Tensor
    end: torch.Tensor
    opener: torch.Tensor
    blank: torch.Tensor


class _Decoded(NamedTuple):
    comma: torch.Tensor
    end: torch.Tensor
    blank: torch.Tensor
    words: dict[str, list[int]]  # stripped, lower-cased text -> the token ids that decode to it
    openers: dict[frozenset[str], torch.Tensor]


# per tokenizer (weakly: a tokenizer that is freed takes its entry, so a new one never reads it),
# then per vocabulary size; the opener flags per opener set within that.
_FLAGS: "weakref.WeakKeyDictionary[object, dict[int, _Decoded]]" = weakref.WeakKeyDictionary()


def _last_end(text: str) -> int:
    return max(text.rfind(e) for e in _SENTENCE_END)


def _decode(tokenizer, vocab_size: int) -> _Decoded:
    try:
        cached = _FLAGS.setdefault(tokenizer, {})
    except TypeError:  # an object that cannot be weakly referenced: no cache
        cached = {}
    if vocab_size not in cached:
        texts = tokenizer.batch_decode([[i] for i in range(vocab_size)], skip_special_tokens=False,
                                       clean_up_tokenization_spaces=False)
        words: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            words.setdefault(t.strip().lower(), []).append(i)
        cached[vocab_size] = _Decoded(
            comma=torch.tensor([t.rfind(",") > _last_end(t) for t in texts], dtype=torch.bool),
            end=torch.tensor([_last_end(t) >= 0 for t in texts], dtype=torch.bool),
            blank=torch.tensor([bool(t) and t.isspace() and "\n" not in t for t in texts], dtype=torch.bool),
            words=words, openers={})
    return cached[vocab_size]


def token_flags(tokenizer, vocab_size: int, openers: Iterable[str] | None = None) -> TokenFlags:
    """`TokenFlags` of token ids 0..vocab_size-1, from each token's decoded text.

    `openers`: the words that open a statement (default: `pool_openers()` of the packaged pool;
    compared stripped and lower-cased). The vocabulary is decoded once per tokenizer and size,
    the opener flags computed once per opener set; the same tensors are returned every time."""
    decoded = _decode(tokenizer, vocab_size)
    key = pool_openers() if openers is None else frozenset(w.strip().lower() for w in openers)
    if "" in key or any(len(w.split()) != 1 for w in key):
        raise ValueError(f"token_flags: openers must be single words, got {sorted(key)}")
    if key not in decoded.openers:
        opener = torch.zeros(vocab_size, dtype=torch.bool)
        for word in key:
            opener[decoded.words.get(word, [])] = True
        decoded.openers[key] = opener
    return TokenFlags(decoded.comma, decoded.end, decoded.openers[key], decoded.blank)


def _base():
    from transformers import LogitsProcessor

    return LogitsProcessor


class StatementSampling(_base()):
    """Logits processor: greedy outside statements, the unchanged (sampling) distribution inside
    (the opener rule of the module docstring).

    One instance per `generate` call (it keeps each row's state). `comma`, `end`, `opener`,
    `blank`: `token_flags` (`StatementSampling(*token_flags(tokenizer, vocab_size))`); `blank`
    may be omitted (no token is whitespace only). Greedy rows get a one-hot at the argmax (the
    argmax keeps its score, every other token -inf)."""

    def __init__(self, comma: torch.Tensor, end: torch.Tensor, opener: torch.Tensor,
                 blank: torch.Tensor | None = None):
        if blank is None:
            blank = torch.zeros_like(comma)
        if not (comma.shape == end.shape == opener.shape == blank.shape) or comma.dim() != 1:
            raise ValueError("StatementSampling: comma, end, opener and blank must be 1-d tensors of one size")
        self.flags = torch.stack([comma, end, opener, blank]).bool()
        self.prompt_length: int | None = None
        self.inside: torch.Tensor | None = None  # sampled: from an opener to the sentence's end
        self.pending: torch.Tensor | None = None  # after a comma (and blanks): the next token decides

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        batch, length = input_ids.shape
        if self.flags.device != scores.device:
            self.flags = self.flags.to(scores.device)
        comma, end, opener, blank = self.flags
        top = self.flags.shape[1] - 1
        if self.prompt_length is None:
            self.prompt_length = length
            self.inside = torch.zeros(batch, dtype=torch.bool, device=scores.device)
            self.pending = torch.zeros_like(self.inside)
        elif length > self.prompt_length:
            last = input_ids[:, -1].to(scores.device).clamp(0, top)
            is_end, is_comma = end[last], comma[last]
            self.inside = self.inside & ~is_end
            self.pending = is_comma | (~is_end & self.pending & blank[last])
        best = scores.argmax(dim=-1, keepdim=True)
        start = self.pending & ~self.inside & opener[best.squeeze(1).clamp(0, top)]
        self.inside = self.inside | start
        self.pending = self.pending & ~start
        greedy = torch.full_like(scores, float("-inf"))
        greedy.scatter_(1, best, scores.gather(1, best))
        return torch.where(self.inside.unsqueeze(1), scores, greedy)
