"""The response format `[z1, c1, ..., zT, cT]` (method.md section 1): writer and parser.

Writing: each step becomes `"{step without final punctuation}, {statement}{punctuation}"`, where
the punctuation is the step's own final mark (".", "?" or "!"; "." when it has none: the
boundary rule of `mmboundary.steps.as_sentence`), and the steps are joined by single spaces. A
step without a statement (None) is written as it is (with a final "." added if it has no final
mark, so that it stays a sentence of its own). Steps and statements must be `str`
(TypeError naming the argument otherwise).

Parsing: the response is split into sentences with `mmboundary.steps.split_steps` (which does not
split decimals such as "3.5", abbreviations or list numbering); each sentence is split at its LAST
comma before the final punctuation, and the tail (stripped, without final punctuation) is mapped
back to a level by a `LevelMapper`, for all tails of all responses in ONE `levels_of` call.

Each step becomes a `ParsedStep`. Failures are counted, never filled in:
- `"no_comma"`: the sentence has no comma, so it carries no statement;
- `"unmapped"`: the tail maps to no level (too far from the pool, or not the numeric template).
**[choice]** When a sentence has no statement (either failure) its step text is the whole
sentence, since its tail is then part of what the step says; the candidate tail of an unmapped
sentence is still reported in `statement` / `statement_span` for diagnosis.
An empty response is a chain of zero steps (`ParsedChain.empty`), with no failures.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mmboundary.statements.mapping import LevelMapper, Rng, as_generator
from mmboundary.steps import FINAL_MARKS, TERMINATOR, require_text, split_steps

FailureKind = Literal["no_comma", "unmapped"]

#: The end of a sentence after its body: final marks, then closing quotes/brackets.
_SENTENCE_END = re.compile(r"\s*[.!?]+[\"')\]]*\s*$")
_FINAL_MARK = re.compile(rf"[{re.escape(FINAL_MARKS)}]+$")


@dataclass(frozen=True)
class ParsedStep:
    """One sentence of a response.

    - `text`: the step without its statement, ending with the sentence's original final
      punctuation (the whole sentence when no statement was found);
    - `statement`: the tail after the last comma, without final punctuation (None: no comma);
    - `level`: the tail's level 1..5, or None;
    - `span`: the sentence's characters in the response; `body_span`: the step's own words
      (sentence start to the last comma when a statement was found, else the sentence);
      `statement_span`: the tail's characters (None: no comma);
    - `failure`: None when a level was read, else "no_comma" or "unmapped".
    """

    text: str
    statement: str | None
    level: int | None
    span: tuple[int, int]
    body_span: tuple[int, int]
    statement_span: tuple[int, int] | None
    failure: FailureKind | None

    @property
    def parsed(self) -> bool:
        """Whether the step has an expressed confidence level."""
        return self.level is not None


@dataclass(frozen=True)
class ParsedChain:
    """A parsed response: its steps in order, with per-chain failure counts."""

    response: str
    steps: tuple[ParsedStep, ...]

    @property
    def levels(self) -> list[int | None]:
        return [s.level for s in self.steps]

    @property
    def step_texts(self) -> list[str]:
        return [s.text for s in self.steps]

    @property
    def empty(self) -> bool:
        return not self.steps

    @property
    def n_parsed(self) -> int:
        return sum(s.parsed for s in self.steps)

    @property
    def n_failures(self) -> int:
        return len(self.steps) - self.n_parsed

    @property
    def n_no_comma(self) -> int:
        return sum(s.failure == "no_comma" for s in self.steps)

    @property
    def n_unmapped(self) -> int:
        return sum(s.failure == "unmapped" for s in self.steps)


@dataclass(frozen=True)
class ParseSummary:
    """Failure counts over many chains."""

    chains: int
    empty_chains: int
    steps: int
    parsed: int
    no_comma: int
    unmapped: int

    @property
    def failures(self) -> int:
        return self.no_comma + self.unmapped

    @property
    def parsed_share(self) -> float | None:
        """Parsed steps / all steps (None when there are no steps)."""
        return self.parsed / self.steps if self.steps else None


def summarize(chains: Sequence[ParsedChain]) -> ParseSummary:
    """Aggregate failure counts of parsed chains."""
    return ParseSummary(
        chains=len(chains), empty_chains=sum(c.empty for c in chains),
        steps=sum(len(c.steps) for c in chains), parsed=sum(c.n_parsed for c in chains),
        no_comma=sum(c.n_no_comma for c in chains), unmapped=sum(c.n_unmapped for c in chains))


# --- writing ------------------------------------------------------------------------------------

def write_step(step: str, statement: str | None) -> str:
    """`"{step without final punctuation}, {statement}{final punctuation}"` (see module docstring)."""
    step = " ".join(require_text(step, "step", "write_step").split())
    if not step:
        raise ValueError("write_step: empty step")
    m = _FINAL_MARK.search(step)
    final = m.group() if m else TERMINATOR
    body = step[: m.start()].rstrip() if m else step
    if statement is None:
        return body + final
    statement = " ".join(require_text(statement, "statement", "write_step").split())
    if not statement:
        raise ValueError("write_step: empty statement (use None for a step without one)")
    if "," in statement or _FINAL_MARK.search(statement):
        raise ValueError(f"write_step: a statement must have no comma nor final punctuation: {statement!r}")
    return f"{body}, {statement}{final}"


def write_chain(steps: Sequence[str], statements: Sequence[str | None]) -> str:
    """The response of steps, each followed by its statement (None: none), joined by single spaces."""
    _text_sequence(steps, "steps", "write_chain")
    if isinstance(statements, str):
        raise TypeError("write_chain: statements must be a sequence of str or None, not a str")
    if len(steps) != len(statements):
        raise ValueError(f"write_chain: {len(steps)} steps but {len(statements)} statements")
    return " ".join(write_step(z, c) for z, c in zip(steps, statements))


def write_chain_with_levels(steps: Sequence[str], levels: Sequence[int | None], mapper: LevelMapper,
                            rng: Rng = None) -> str:
    """Forward mapping and writing in one: a statement drawn for each level (None: no statement)
    with one generator, in step order."""
    gen: np.random.Generator = as_generator(rng)
    statements = [None if lv is None else mapper.statement(lv, gen) for lv in levels]
    return write_chain(steps, statements)


# --- parsing ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Split:
    span: tuple[int, int]
    body_end: int  # end of the sentence without final punctuation / closers
    comma: int | None  # index of the last comma before body_end
    tail_span: tuple[int, int] | None


def _split_sentence(response: str, start: int, end: int) -> _Split:
    m = _SENTENCE_END.search(response, start, end)
    body_end = m.start() if m else end
    comma = response.rfind(",", start, body_end)
    if comma < 0:
        return _Split((start, end), body_end, None, None)
    t0, t1 = comma + 1, body_end
    while t0 < t1 and response[t0].isspace():
        t0 += 1
    return _Split((start, end), body_end, comma, (t0, t1))


def _text_sequence(values: Sequence[str], name: str, where: str) -> None:
    """TypeError naming the argument unless `values` is a sequence of `str` (a lone str is not)."""
    if isinstance(values, str):
        raise TypeError(f"{where}: {name} must be a sequence of str, not a str")
    for i, value in enumerate(values):
        require_text(value, f"{name}[{i}]", where)


def parse_chains(responses: Sequence[str], mapper: LevelMapper) -> list[ParsedChain]:
    """Parse many responses; every tail of every response is mapped in ONE `levels_of` call."""
    _text_sequence(responses, "responses", "parse_chains")
    splits = [[_split_sentence(r, s, e) for s, e in split_steps(r)] for r in responses]
    tails = [r[sp.tail_span[0]:sp.tail_span[1]] for r, chain in zip(responses, splits)
             for sp in chain if sp.tail_span is not None]
    levels = iter(mapper.levels_of(tails) if tails else [])
    out = []
    for response, chain in zip(responses, splits):
        steps = []
        for sp in chain:
            s, e = sp.span
            sentence = response[s:e]
            if sp.tail_span is None:
                steps.append(ParsedStep(sentence, None, None, sp.span, sp.span, None, "no_comma"))
                continue
            tail = response[sp.tail_span[0]:sp.tail_span[1]]
            level = next(levels)
            if level is None:
                steps.append(ParsedStep(sentence, tail, None, sp.span, sp.span, sp.tail_span, "unmapped"))
                continue
            body = response[s:sp.comma].rstrip()
            steps.append(ParsedStep(body + response[sp.body_end:e], tail, int(level), sp.span,
                                    (s, s + len(body)), sp.tail_span, None))
        out.append(ParsedChain(response, tuple(steps)))
    return out


def parse_chain(response: str, mapper: LevelMapper) -> ParsedChain:
    """Parse one response (see `parse_chains`)."""
    require_text(response, "response", "parse_chain")
    return parse_chains([response], mapper)[0]
