"""Final answers: extraction from a chain and correctness (method.md section 6, Acc).

**[choice]** Open answers are compared after normalisation (lower case, punctuation and
articles removed, number words one..twenty written as digits); a multiple-choice answer is
correct when its normalised text equals the normalised correct option.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mmboundary.steps import require_text

_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_ARTICLES = {"a", "an", "the"}
_FINAL = re.compile(r"\b(?:so|thus|therefore|hence)?,?\s*the\s+(?:final\s+)?answer\s+is\b:?\s*",
                    re.IGNORECASE)


def normalize_answer(text: str) -> str:
    """The comparison form of an answer (module docstring); a TypeError naming `text` when it is
    no `str`."""
    text = require_text(text, "text", "normalize_answer").lower().replace("colour", "color")
    text = re.sub(r"[^\w\s-]", " ", text)
    words = [_NUMBER_WORDS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def extract_answer(chain_text: str) -> str | None:
    """The X of the last "So the answer is X" of a chain text, normalised; None when the text
    states no answer.

    X runs to the end of its sentence (".", "!", "?" or a line break) and stops at a comma or
    semicolon, so a confidence statement after it ("So the answer is 3, with total certainty.")
    is left out. "The answer is X" and "Thus/Therefore/Hence the answer is X" are accepted too.
    """
    found = list(_FINAL.finditer(require_text(chain_text, "chain_text", "extract_answer")))
    if not found:
        return None
    rest = chain_text[found[-1].end():]
    m = re.match(r"[^.!?\n,;]*", rest)
    answer = normalize_answer(m.group(0) if m else rest)
    return answer or None


def is_correct(predicted: str | None, answers: Sequence[str]) -> bool:
    """Whether `predicted` (None: no answer, never correct) equals one of `answers` after
    normalisation. `answers` is a sequence of `str`: a lone str is a TypeError naming it."""
    if isinstance(answers, str):
        raise TypeError("is_correct: answers must be a sequence of str, not a str")
    if predicted is None:
        return False
    require_text(predicted, "predicted", "is_correct")
    p = normalize_answer(predicted)
    return any(p == normalize_answer(a) for a in answers)
