"""Split a chain of reasoning into steps (method.md section 1), and the boundary rule that keeps a
reference step a sentence of its own when a chain becomes text.

A step is one sentence. **[choice]** A deterministic splitter on sentence-final punctuation
(`.`, `!`, `?`, optionally followed by closing quotes/brackets, straight or curly) that does not
split:
- decimals and numbers with a point inside ("3.5", "v1.2"), since the character after the
  point is not whitespace;
- common abbreviations ("e.g.", "i.e.", "vs.", "Mr.", "Dr.", "approx.", "fig."; "Ft." and "Mt."
  capitalised, as in "Ft. Spokane", while "10 ft." ends a sentence); "No." only
  before a number ("No. 5": "the answer is no." ends its sentence); an abbreviation that also
  ends sentences ("etc.", "Inc.", "Ltd.", "Co.", "al.", "Jr.", "Sr.") does split before a
  capital letter ("cups, etc. The table ...");
- an initialism before a lower-case word ("the U.S. as an enemy", "initials F.V. and F.S.");
- a quoted sentence before a lower-case word ("the sign reads 'SLOW!' in red");
- list numbering at the start of a line or of the text ("1. There are ...", "(a) ...").
Steps are returned as character spans into the original text so that later stages can map a
step to its exact tokens through the tokenizer's offsets, without re-decoding prefixes.

The boundary rule, `as_sentence`: **[choice]** wherever a reference chain becomes text (the
vanilla model's training targets, `training.base.reference_response`; the CLIP pairs; the chain
format's writer, `statements.chain_format.write_step`, which writes the SFT targets), a step
whose last non-space character is not `.`, `!` or `?` gets a `.` appended, so that the splitter
finds the step's end again. Released reference chains need it: 3,110 of the 4,656 steps of the
authors' A-OKVQA file (301 of 3,339 in CulturalVQA) end in a word, a number, a quote or a
bracket; joined with spaces they read as one run-on sentence. A step that already ends in
`.`, `!` or `?` is left byte for byte as it is (the built-in benchmark's chains are unchanged).
"""

from __future__ import annotations

import re

#: Abbreviations after which a period does not end a sentence (lower-cased, without the period).
ABBREVIATIONS = frozenset(
    "e.g i.e etc vs mr mrs ms dr prof st approx no fig eq cf al jr sr inc ltd co".split()
)
#: Abbreviations that also end sentences: their period ends one before a capital letter.
_SENTENCE_FINAL_ABBREVIATIONS = frozenset("etc al jr sr inc ltd co".split())
#: Capitalised abbreviations of names, matched with their case ("Ft. Spokane", "Mt. Fuji"; "10 ft." ends).
_NAME_ABBREVIATIONS = frozenset(["Ft", "Mt"])

#: Sentence-final marks; the `.` that `as_sentence` adds.
FINAL_MARKS = ".!?"
TERMINATOR = "."

_CLOSERS = "\"')\\]\u201d\u2019\u00bb"
_END = re.compile(rf"[.!?]+[{_CLOSERS}]*(?=\s|$)")
_LIST_NUMBER = re.compile(r"\s*\(?(?:\d{1,3}|[a-zA-Z])[.)]")
_INITIALISM = re.compile(r"(?:[a-zA-Z]\.)+[a-zA-Z]")


def require_text(value: object, name: str, where: str) -> str:
    """`value` if it is a `str`, else a TypeError naming the argument (`where`: the function)."""
    if not isinstance(value, str):
        raise TypeError(f"{where}: {name} must be a str, not {type(value).__name__}")
    return value


def _word_before(text: str, dot: int) -> str:
    start = dot
    while start > 0 and (text[start - 1].isalpha() or text[start - 1] == "."):
        start -= 1
    return text[start:dot]


_NEXT = re.compile(r"\s*(\S?)")


def _next_char(text: str, end: int) -> str:
    """The first non-space character from `end` on ("" at the end of the text)."""
    return _NEXT.match(text, end).group(1)


def _not_a_boundary(text: str, dot: int, end: int) -> bool:
    """True if the single period at index `dot` (its match ending at `end`) does not end a
    sentence: an abbreviation, or an initialism before a lower-case word."""
    word = _word_before(text, dot)
    key = word.lower()
    if key == "st" and dot > 2 and text[dot - 3].isdigit():
        return False  # an ordinal: "on July 1st."
    following = _next_char(text, end)
    if word in _NAME_ABBREVIATIONS:
        return True
    if key in ABBREVIATIONS:
        if key == "no":
            return following.isdigit()
        if key in _SENTENCE_FINAL_ABBREVIATIONS:
            return not following.isupper()
        return True
    return bool(_INITIALISM.fullmatch(word)) and following.islower()


def split_steps(text: str) -> list[tuple[int, int]]:
    """Character spans `(start, end)` of the sentences of `text`, whitespace trimmed.

    A trailing fragment without final punctuation is a step too (a truncated generation
    still has its last, unfinished sentence). Empty text gives no steps.
    """
    require_text(text, "text", "split_steps")
    spans: list[tuple[int, int]] = []
    start = 0
    n = len(text)
    for m in _END.finditer(text):
        end = m.end()
        punct = text[m.start()]
        if text[end - 1] in _CLOSERS and _next_char(text, end).islower():
            continue  # a quoted question or exclamation inside a sentence: "reads 'SLOW!' in red"
        if punct == "." and m.end() - m.start() == 1:
            if _not_a_boundary(text, m.start(), end):
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
    require_text(text, "text", "split_sentences")
    return [text[s:e] for s, e in split_steps(text)]


def ends_sentence(step: str) -> bool:
    """Whether `step`'s last non-space character is a sentence-final mark (`.`, `!`, `?`)."""
    stripped = require_text(step, "step", "ends_sentence").rstrip()
    return bool(stripped) and stripped[-1] in FINAL_MARKS


def as_sentence(step: str) -> str:
    """The boundary rule (module docstring): `step` unchanged when it ends in `.`, `!` or `?`;
    else, trailing spaces removed, with `.` appended ("the price is 90" -> "the price is 90.",
    "reads 'STOP'" -> "reads 'STOP'.", "a drink (soda)" -> "a drink (soda)."). A blank step is
    returned as it is."""
    require_text(step, "step", "as_sentence")
    if not step.strip() or ends_sentence(step):
        return step
    return step.rstrip() + TERMINATOR
