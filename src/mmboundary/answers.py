"""Final answers: extraction from a chain and correctness (method.md section 6, Acc).

**[choice]** Open answers are compared after normalisation (lower case, punctuation and
articles removed, number words one..twenty written as digits); a multiple-choice answer is
correct when its normalised text equals the normalised correct option.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_ARTICLES = {"a", "an", "the"}
_FINAL = re.compile(r"\bso,?\s+the\s+answer\s+is\b[:\s]*", re.IGNORECASE)


def normalize_answer(text: str) -> str:
    text = text.lower().replace("colour", "color")
    text = re.sub(r"[^\w\s-]", " ", text)
    words = [_NUMBER_WORDS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def extract_answer(chain_text: str) -> str | None:
    """The X of the last "So the answer is X" in a chain, normalised; None if there is none.

    X runs to the end of its sentence; a confidence statement appended after a comma
    ("So the answer is 3, with total certainty.") is not part of the answer.
    """
    matches = list(_FINAL.finditer(chain_text))
    if not matches:
        return None
    rest = chain_text[matches[-1].end():]
    m = re.match(r"(.*?)(?:[.!?](?:\s|$)|$)", rest, re.DOTALL)
    answer = (m.group(1) if m else rest).split(",")[0].strip()
    answer = normalize_answer(answer)
    return answer or None


def is_correct(predicted: str | None, answers: Sequence[str]) -> bool:
    if predicted is None:
        return False
    p = normalize_answer(predicted)
    return any(p == normalize_answer(a) for a in answers)
