"""Stated numbers in confidence statements: "about 60% sure", "confidence 4/5", "0.9" -> a level.

Part of the backward mapping (`statements/mapping.py`, step 1): a number the statement states is
read as the number it is, never by the sentence encoder (which reads "60%" and "90%" alike).

**[choice]** What is read (case-insensitive; number words "zero" .. "one hundred", "a hundred",
"ninety-five" / "ninety five" are read as digits; "percent", "per cent", "pct" and "%" are one unit):
- a percentage `N%` (0 <= N <= 100): p = N / 100; a range `N-M%`, `N to M percent`,
  `between N and M percent`: the midpoint;
- a fraction on the five-level scale, `k/5`, `k out of 5`, `k of 5`, `k on a scale of 1 to 5`, `k in 5`:
  **level k** itself (k an integer 1..5; 0 counts as 1), not the probability k/5 (which would put
  "confidence 1/5" at level 2 by the intervals below);
- any other fraction `k/n`, `k out of n`, `k in n`, `k on a scale of 1 to n` (0 <= k <= n): p = k / n
  ("7 out of 10" = 0.7, "one in ten chance" = 0.1);
- odds `a to b` / `a:b` with the word "odds" (or "in favour" / "against"): p = a / (a + b), or
  b / (a + b) "against"; "even odds", "fifty-fifty", "50/50", "50-50", "toss-up", "coin flip": 0.5;
- a decimal in [0, 1] (`0.7`, `.7`, `1.0`): p itself;
- an integer 1..5 right after "confidence", "certainty", "level", "rating", "score", "rate it",
  "give it", "give this" (optionally "of", "at", "is", "a", ":", "="): level k ("confidence 4" = 4).

A probability p goes to the level whose interval holds it, `confidence.fusion.probability_level`:
**[0, 0.2) 1, [0.2, 0.4) 2, [0.4, 0.6) 3, [0.6, 0.8) 4, [0.8, 1] 5** (p(L) = (L - 0.5) / 5, the
nearest level; a boundary goes up).

**[choice]** Modifiers of the number:
- "less than", "under", "below", "at most", "no more than", "not even", "not quite", "nearly",
  "almost", "just under" before it: p is read just below the number (p - 1e-6: "less than 20%" = 1,
  "almost 100%" = 5 since 0.999999 is in [0.8, 1]);
- "more than", "over", "above", "at least", "about", "around", "roughly", "some", "maybe": the number
  itself;
- a plain negation before it ("not 100% sure", "not a hundred percent", "never 90%"): the degree
  is negated, as in "not completely sure": level 2 when p >= 0.8, else one level below p's
  (at least 1);
- the chance of being wrong ("a 20% chance I am wrong", "I'm 90% sure this is wrong": the text has
  "wrong", "incorrect", "mistaken", "false" or "error"): p becomes 1 - p.

**[choice]** When a number counts: ordinary tails also hold numbers ("so 50% of the shapes are
red", "which is 3/5 of the total", "the probability of picking red is 0.4"). A number is read as the
statement's confidence only when the text
- has a word of confidence: "sure", "certain", "certainty", "confident", "confidence", "convinced",
  "conviction", "credence", "doubt(s/ful)", "unsure", "uncertain"; or
- is in the first person ("I", "I'm", "I'd", "my", "me") and has a word of chance or judgement:
  "chance(s)", "odds", "likely", "likelihood", "probability", "probably", "bet", "say", "give", "rate",
  "rating", "put", "estimate", "guess", "score"; or
- speaks of the chance of being right: "chance", "odds", "probability", "likelihood" or "risk" and
  one of "right", "correct", "true", "accurate", "wrong", "incorrect", "mistaken"; or
- is an even chance: "fifty-fifty", "50/50", "even odds", "a toss-up", "a coin flip"; or
- is nothing but the number (with "about", "p =", "confidence" etc.): "80%", "0.8", "4/5".
Otherwise the text goes to the encoder like any other (and is usually unparsed).
"""

from __future__ import annotations

import re

from mmboundary.confidence.fusion import probability_level
from mmboundary.levels import LEVELS
from mmboundary.steps import require_text

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_NUMBER_WORD = re.compile(
    r"\b(?:(?P<hundred>(?:a|one)\s+hundred)|(?P<tens>%s)(?:[\s-]+(?P<unit>%s))?|(?P<small>%s))\b"
    % ("|".join(_TENS), "|".join(w for w in _UNITS if 0 < _UNITS[w] < 10), "|".join(_UNITS)))
_PERCENT_WORD = re.compile(r"\s*(?:per\s*cent|percent|pct)\b")

_NUM = r"(\d+(?:\.\d+)?|\.\d+)"
_FIFTY_FIFTY = re.compile(r"\b(?:fifty[\s-]fifty|50\s*[/-]\s*50|even\s+odds|even\s+chances?|toss[\s-]?up"
                          r"|coin[\s-]?(?:flip|toss))\b")
_RANGE_PERCENT = re.compile(r"(?:between\s+)?%s\s*%%?\s*(?:-|–|to|and)\s*%s\s*%%" % (_NUM, _NUM))
_PERCENT = re.compile(r"%s\s*%%" % _NUM)
_SCALE = re.compile(r"%s\s+on\s+a\s+(?:scale\s+)?(?:of\s+|from\s+)?(?:0|1)\s*(?:-|–|to)\s*(\d+)" % _NUM)
_FRACTION = re.compile(r"%s\s*(?:/|out\s+of|of|in)\s*(\d+)\b(?!\s*%%)(?!\.\d)" % _NUM)
_ODDS = re.compile(r"%s\s*(?:to|:)\s*%s(?:\s+(?P<side>in\s+favou?r|against|on))?" % (_NUM, _NUM))
_DECIMAL = re.compile(r"(?<![\d/])(0?\.\d+|1\.0+|0|1)(?![\d/%.])")
_RATING = re.compile(r"\b(?:confidence|certainty|level|rating|score|rate\s+(?:it|this|that|my\s+\w+)"
                     r"|give\s+(?:it|this|that))\s*(?:(?:of|at|is|a|an|as|:|=)\s*)*([1-5])(?![\d./%])")

_CONFIDENCE_WORD = re.compile(r"\b(?:sure|unsure|certain|uncertain|certainty|confident|confidence|convinced"
                              r"|conviction|credence|doubts?|doubtful)\b")
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i'd|i'll|im|id|my|me)\b")
_CHANCE_WORD = re.compile(r"\b(?:chances?|odds|likely|likelihood|probability|probably|bet|say|give|rate"
                          r"|rating|put|estimate|guess|score)\b")
_RIGHTNESS = re.compile(r"\b(?:chances?|odds|probability|likelihood|risk)\b.*\b(?:right|correct|true|accurate"
                        r"|wrong|incorrect|mistaken)\b|\b(?:right|correct|true|accurate|wrong|incorrect|mistaken)\b"
                        r".*\b(?:chances?|odds|probability|likelihood|risk)\b")
_WRONG = re.compile(r"\b(?:wrong|incorrect|mistaken|false|error|errors)\b")
_BARE = re.compile(r"^(?:with\s+)?(?:(?:about|around|roughly|approximately|maybe|p|confidence|certainty"
                   r"|probability|a|an)\s*(?:=|:|of|at|is)?\s*)*(?:[\d.%/\s]|to|out|of)+(?:confidence|certainty)?$")

_BELOW = re.compile(r"(?:less\s+than|under|below|at\s+most|no\s+more\s+than|not\s+even|not\s+quite|nearly|almost"
                    r"|just\s+under|short\s+of|fewer\s+than)\s+(?:a\s+|about\s+)?$")
_NEGATED = re.compile(r"(?:\bnot|n't|\bnever|\bhardly|\bbarely|\bscarcely)\s+(?:(?:be|feel|exactly|fully|quite|really"
                      r"|totally|a|an|the|full)\s+)*$")


def words_to_digits(text: str) -> str:
    """`text` lower-cased with number words as digits ("seventy-five per cent" -> "75%")."""
    def repl(m: re.Match) -> str:
        if m.group("hundred"):
            return "100"
        if m.group("tens"):
            return str(_TENS[m.group("tens")] + (_UNITS[m.group("unit")] if m.group("unit") else 0))
        return str(_UNITS[m.group("small")])
    text = text.lower().replace("’", "'")
    text = _NUMBER_WORD.sub(repl, text)
    return _PERCENT_WORD.sub("%", text)


def _counts(text: str) -> bool:
    """Whether a number in `text` (digits already) speaks of the statement's confidence."""
    if _CONFIDENCE_WORD.search(text):
        return True
    if _FIRST_PERSON.search(text) and _CHANCE_WORD.search(text):
        return True
    if _RIGHTNESS.search(text) or _FIFTY_FIFTY.search(text):
        return True
    return bool(_BARE.match(text.strip()))


def _read(text: str) -> tuple[str, float, int]:
    """(kind, value, start) of the first number expression: kind "p" (a probability) or "level"
    (a level 1..5); start is where it begins (for the modifiers before it). Raises LookupError when
    there is none."""
    m = _FIFTY_FIFTY.search(text)
    if m:
        return "p", 0.5, m.start()
    m = _RANGE_PERCENT.search(text)
    if m and float(m.group(1)) <= float(m.group(2)) <= 100:
        return "p", (float(m.group(1)) + float(m.group(2))) / 200, m.start()
    m = _PERCENT.search(text)
    if m and float(m.group(1)) <= 100:
        return "p", float(m.group(1)) / 100, m.start()
    if "odds" in text or re.search(r"in\s+favou?r|against", text):
        m = _ODDS.search(text)
        if m and float(m.group(1)) + float(m.group(2)) > 0:
            a, b = float(m.group(1)), float(m.group(2))
            against = (m.group("side") or "").startswith("against") or (
                not m.group("side") and re.search(r"\bagainst\b", text[m.end():]) is not None)
            return "p", (b if against else a) / (a + b), m.start()
    for pattern in (_SCALE, _FRACTION):
        m = pattern.search(text)
        if m:
            k, n = float(m.group(1)), float(m.group(2))
            if n > 0 and 0 <= k <= n:
                if n == 5 and k == int(k):
                    return "level", max(int(k), 1), m.start()
                return "p", k / n, m.start()
    m = _RATING.search(text)
    if m:
        return "level", int(m.group(1)), m.start(1)
    m = _DECIMAL.search(text)
    if m and "." in m.group(1):
        return "p", float(m.group(1)), m.start()
    raise LookupError


def stated_level(text: str) -> int | None:
    """The level of a statement that states a number ("and I'm about 60% sure" -> 4, "confidence
    4/5" -> 4), or None when it states none that counts (module docstring); a TypeError naming
    `text` when it is no `str`."""
    t = words_to_digits(require_text(text, "text", "stated_level"))
    if not re.search(r"\d", t) and not _FIFTY_FIFTY.search(t):
        return None
    if not _counts(t):
        return None
    try:
        kind, value, start = _read(t)
    except LookupError:
        return None
    before = t[:start]
    if kind == "level":
        level = int(value)
        if _NEGATED.search(before):
            level = max(1, min(level - 1, 2))
        return level if level in LEVELS else None
    p = min(max(value, 0.0), 1.0)
    if _WRONG.search(t):
        p = 1.0 - p
    if _BELOW.search(before):
        return probability_level(max(p - 1e-6, 0.0))
    if _NEGATED.search(before):
        return 2 if p >= 0.8 else max(1, probability_level(p) - 1)
    return probability_level(p)
