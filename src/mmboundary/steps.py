"""Split a chain of reasoning into steps (method.md section 1).

A step is one sentence. **[choice]** A deterministic splitter on sentence-final punctuation
(`.`, `!`, `?`, optionally followed by closing quotes/brackets) that does not split:
- decimals and numbers with a point inside ("3.5", "v1.2"), since the character after the
  point is not whitespace;
- common abbreviations ("e.g.", "i.e.", "etc.", "vs.", "Mr.", "Dr.", "approx.", "No.");
- list numbering at the start of a line or of the text ("1. There are ...", "(a) ...").
Steps are returned as character spans into the original text so that later stages can map a
step to its exact tokens through the tokenizer's offsets, without re-decoding prefixes.
"""

from __future__ import annotations

import re

#: Abbreviations after which a period does not end a sentence (lower-cased, without the period).
ABBREVIATIONS = frozenset(
    "e.g i.e etc vs mr mrs ms dr prof st approx no fig eq cf al jr sr inc ltd co".split()
)

_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")
_LIST_NUMBER = re.compile(r"\s*\(?(?:\d{1,3}|[a-zA-Z])[.)]")


def _is_abbreviation(text: str, dot: int) -> bool:
    """True if the period at index `dot` closes a known abbreviation."""
    start = dot
    while start > 0 and (text[start - 1].isalpha() or text[start - 1] == "."):
        start -= 1
    word = text[start:dot].lower()
    return word in ABBREVIATIONS


def split_steps(text: str) -> list[tuple[int, int]]:
    """Character spans `(start, end)` of the sentences of `text`, whitespace trimmed.

    A trailing fragment without final punctuation is a step too (a truncated generation
    still has its last, unfinished sentence). Empty text gives no steps.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    n = len(text)
    for m in _END.finditer(text):
        end = m.end()
        punct = text[m.start()]
        if punct == "." and m.end() - m.start() == 1:
            if _is_abbreviation(text, m.start()):
                continue
            if _LIST_NUMBER.fullmatch(text[start : m.end()]):
                continue  # "2." opening a numbered item is not a sentence
        spans.append((start, end))
        start = end
    if start < n:
        spans.append((start, n))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` as strings (see `split_steps`)."""
    return [text[s:e] for s, e in split_steps(text)]
