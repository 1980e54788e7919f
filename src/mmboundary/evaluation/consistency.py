"""Whether two sentences state the same checkable content (pure, no model): the consistency half
of the step judge (method.md section 6; `evaluation.judges.ConsistentJudge`).

A sentence encoder scores "There are 2 red circles." / "There are 3 red circles." as 0.885 with
MiniLM (`evaluation.matching`, known limitation): it sees the same kind of claim. `claims` reads
the words that decide whether such a claim is right, and `conflicts` names the classes on which
two sentences disagree:

- `numbers`: digits and decimals, normalised ("03" -> "3", "2.50" -> "2.5", "1,000" -> "1000"),
  and the number words zero..twenty ("three" -> "3", the benchmark's `NUMBER_WORDS`);
- `colors`: `COLORS`, the eleven basic colour terms of Berlin & Kay plus the benchmark's colours;
- `spatial`: `SPATIAL`, positions and directions;
- `sizes`: `SIZES`, small / medium / large;
- `comparisons`: `COMPARISONS`, more / less / equal and most / least;
- `proper_nouns`: capitalised words not at the start of a sentence, other than "I";
- `negated`: whether the sentence has an odd number of negation cues.

A class disagrees when BOTH sentences mention words of that class and the sets differ; a class
only one sentence mentions says nothing ("There is a red circle." / "There is 1 circle." agree).
Negation disagrees whenever the parities differ. `consistent(a, b)` = no class disagrees.

Rules (**[choice]**, each with an example):

- Case is ignored except for proper nouns; "colour"/"color", "centre"/"center", "grey"/"gray"
  are one word; a final period or its absence changes nothing ("So the answer is 3" = "So the
  answer is 3.", the authors' reference steps lack the period).
- Zero quantifiers are the number 0, not a negation: "no" followed by a word, "none", "nothing",
  "nobody", and "not any" / "n't any". So "There are no red circles." = "There are 0 red
  circles." = "There aren't any red circles." = "There are none." (numbers {"0"}, not negated),
  and "There are no red circles." vs "There are 2 red circles." conflict on `numbers`.
- Negation cues: "not", "n't", "never", "neither", "without", "cannot", and "no" NOT followed
  by a word ("No, ...", "So the answer is no."): "The circle is not red." vs "The circle is
  red." conflict on `negated`; "isn't" = "is not"; "It is not true that the circle is not red."
  has two cues: not negated. "nor" is not a cue: it continues a negation already counted
  ("neither red nor blue", "not red nor blue": one cue each).
- Numbers: a sign is not read ("-3" -> "3"); an ordinal in digits is its number ("30th" ->
  "30"); "one" is always 1 (also the pronoun: "the red one"); "a"/"an" are not numbers; number
  words above twenty, fractions and "a dozen" are not read. Multisets, not sequences (a
  sentence's numbers as a sorted tuple, so a repeated number counts): "2 minus 1 is 1." (1, 1, 2)
  and "2 minus 1 is 2." (1, 2, 2) conflict, but "3 minus 1 is 2." and "3 minus 2 is 1." both
  have (1, 2, 3) and agree (order is not read, so that reordered paraphrases stay consistent).
- Colours: `COLORS` only ("navy", "light blue" -> "blue"); a colour word in another sense counts
  ("an orange" is orange).
- Spatial: left, right, top, bottom, middle, center, above ("over" too), below ("under",
  "beneath", "underneath" too), front ("in front of"), behind, inside, outside. "middle" and
  "center" stay apart, as in the benchmark's language (middle column vs center row): "The
  circle is in the middle." vs "The circle is in the center." conflict. "left" as a verb counts.
- Sizes: small ("little", "tiny" too), medium, large ("big", "huge" too): "The circle is big."
  = "The circle is large."; comparatives ("bigger") are comparisons, not sizes.
- Comparisons: more (more, greater, larger, bigger, higher), less (less, fewer, smaller, lower),
  equal (equal, equals, same), most (most, greatest, largest, biggest, highest), least (least,
  fewest, smallest, lowest): "2 is greater than 1." = "2 is more than 1."; "2 is more than 1."
  vs "2 is less than 1." conflict.
- Proper nouns: capitalised words (as written) that are not the first word of the text or of a
  sentence (after ".", "!", "?"), other than "I": "So the answer is Konya" has {"Konya"}; "So
  the answer is A." vs "So the answer is B." conflict.
- Sets must be equal, not one inside the other: "The circle is at the top left." vs "The circle
  is on the left." conflict on `spatial` (the first says more than the second).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from decimal import Decimal

from mmboundary.data.benchmark.checker import evaluate_claim
from mmboundary.data.benchmark.language import (
    COLOR_RGB,
    NUMBER_WORDS,
    ArithmeticClaim,
    ComparisonClaim,
    parse_claim,
)

__all__ = [
    "COLORS",
    "COMPARISONS",
    "NEGATION_CUES",
    "SIZES",
    "SPATIAL",
    "Claims",
    "claims",
    "conflicts",
    "consistent",
]

#: Colour words: Berlin & Kay's eleven basic colour terms and the benchmark's colours.
COLORS: frozenset[str] = frozenset(
    "black white red green yellow blue brown orange pink purple gray".split()) | frozenset(COLOR_RGB)
#: Spatial word -> its normalised form.
SPATIAL: dict[str, str] = {w: w for w in "left right top bottom middle center above below front behind "
                           "inside outside".split()} | {
    "centre": "center", "over": "above", "under": "below", "beneath": "below", "underneath": "below"}
#: Size word -> its normalised form.
SIZES: dict[str, str] = {"small": "small", "little": "small", "tiny": "small", "medium": "medium",
                         "large": "large", "big": "large", "huge": "large"}
#: Comparison word -> its normalised form.
COMPARISONS: dict[str, str] = {
    **dict.fromkeys(("more", "greater", "larger", "bigger", "higher"), "more"),
    **dict.fromkeys(("less", "fewer", "smaller", "lower"), "less"),
    **dict.fromkeys(("equal", "equals", "same"), "equal"),
    **dict.fromkeys(("most", "greatest", "largest", "biggest", "highest"), "most"),
    **dict.fromkeys(("least", "fewest", "smallest", "lowest"), "least"),
}
#: Negation cues ("no" only when no word follows it; see the module docstring).
NEGATION_CUES: frozenset[str] = frozenset({"not", "n't", "never", "neither", "without", "cannot", "no"})
_ZERO_WORDS = frozenset({"none", "nothing", "nobody"})

# Tokens: "n't", numbers (with thousands separators, decimals, an ordinal suffix), words, and any
# other single character (punctuation, kept to find sentence starts and what follows "no").
_TOKEN = re.compile(r"n't|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|[^\W\d_]+|\S")
_ORDINAL = re.compile(r"(\d)(?:st|nd|rd|th)\b")


@dataclass(frozen=True)
class Claims:
    """The checkable content of one sentence (see the module docstring)."""

    numbers: tuple[str, ...] = ()  # sorted: a multiset
    colors: frozenset[str] = frozenset()
    spatial: frozenset[str] = frozenset()
    sizes: frozenset[str] = frozenset()
    comparisons: frozenset[str] = frozenset()
    proper_nouns: frozenset[str] = frozenset()
    negated: bool = False


def _number(token: str) -> str:
    return format(Decimal(token.replace(",", "")).normalize(), "f")


def _tokens(text: str) -> list[str]:
    s = text.replace("\u2019", "'")
    s = re.sub(r"n't\b", " n't", s, flags=re.IGNORECASE)
    s = _ORDINAL.sub(r"\1", s)
    return _TOKEN.findall(s)


def claims(text: str) -> Claims:
    """The `Claims` of a sentence (or of a few: sentence starts are found after ".", "!", "?")."""
    if not isinstance(text, str):
        raise TypeError(f"claims: expected a string, got {type(text).__name__}")
    tokens = _tokens(text)
    lower = [t.lower().replace("colour", "color").replace("grey", "gray") for t in tokens]
    found: dict[str, set[str]] = {f.name: set() for f in fields(Claims) if f.name not in ("negated", "numbers")}
    numbers: list[str] = []
    cues = 0
    start = True  # the next word starts a sentence
    skip = False  # the token was consumed by "not any"
    for k, (tok, w) in enumerate(zip(tokens, lower)):
        nxt = lower[k + 1] if k + 1 < len(lower) else ""
        if skip:
            skip = False
        elif w[0].isdecimal():
            numbers.append(_number(w))
        elif w in NUMBER_WORDS:
            numbers.append(str(NUMBER_WORDS[w]))
        elif w in _ZERO_WORDS or (w == "no" and nxt.isalpha()):
            numbers.append("0")
        elif w in ("not", "n't") and nxt == "any":
            numbers.append("0")
            skip = True
        elif w in NEGATION_CUES:
            cues += 1
        elif w in COLORS:
            found["colors"].add(w)
        elif w in SPATIAL:
            found["spatial"].add(SPATIAL[w])
        elif w in SIZES:
            found["sizes"].add(SIZES[w])
        elif w in COMPARISONS:
            found["comparisons"].add(COMPARISONS[w])
        if tok[0].isalpha() and tok[0].isupper() and not start and tok != "I":
            found["proper_nouns"].add(tok)
        if tok in ".!?":
            start = True
        elif tok[0].isalnum():
            start = False
    return Claims(numbers=tuple(sorted(numbers)), **{name: frozenset(v) for name, v in found.items()},
                  negated=cues % 2 == 1)


def conflicts(a: Claims, b: Claims) -> tuple[str, ...]:
    """The names of the classes (`Claims` fields, in field order) on which `a` and `b` disagree:
    a set class when both are non-empty and differ, `negated` when the two differ."""
    out = []
    for f in fields(Claims):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "negated":
            if x != y:
                out.append(f.name)
        elif x and y and x != y:
            out.append(f.name)
    return tuple(out)


def consistent(a: Claims, b: Claims) -> bool:
    """No class disagrees (`conflicts(a, b)` is empty)."""
    return not conflicts(a, b)


def arithmetic_truth(text: str) -> bool | None:
    """The truth of a sentence that is a closed arithmetic or numeric comparison claim ("3 minus 1
    is 2.", "2 is more than 1 and 0.", "2 is not less than 3."), decided by arithmetic; None for
    any other sentence. The grammar is the built-in benchmark's (`data.benchmark.language`:
    "plus"/"minus"/"+"/"-", "is"/"equals"/"=", "more/greater/larger than", "less/fewer than",
    "equal to", "the same as", number words or digits). **[choice]** Such a claim is true or
    false whatever the reference chain says (a right sum of wrong counts is a right sum), as the
    benchmark's checker judges it."""
    if not isinstance(text, str):
        raise TypeError(f"arithmetic_truth: expected a string, got {type(text).__name__}")
    claim = parse_claim(text)
    if not isinstance(claim, (ArithmeticClaim, ComparisonClaim)):
        return None
    return evaluate_claim(claim, None)

