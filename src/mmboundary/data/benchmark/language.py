"""The benchmark's language: typed claims, their canonical sentences, and a tolerant parser.

Every reference step of the built-in benchmark is one sentence of a small, regular English
language, written by `render_claim` from a typed claim record. `parse_claim` reads a *generated*
sentence back into a claim (or None when it is not a sentence of the language), so that the
checker (`checker.py`) can decide exactly whether it is true.

Claim types and their canonical sentences (what the reference chains contain):

- `CountClaim` (perception): "There are 2 red objects." / "There is 1 red object." /
  "There are no red objects." / "There are 3 circles." / "There are 4 objects in total."
  A count may filter on size, colour and shape at once ("There are 2 large red circles.").
- `AttributeClaim` (perception) about a unique object "the X" (X = optional size and colour,
  then a shape, or "object"): colour "The square is blue.", size "The red circle is large.",
  column "The blue square is on the left." / "... in the middle." / "... on the right.",
  row "The red circle is at the top." / "... in the center." / "... at the bottom."
- `SpatialClaim` (reasoning): "The red circle is left of the blue square." / "... right of ..."
  / "... above ..." / "... below ...".
- `ArithmeticClaim` (reasoning): "2 plus 3 is 5." / "3 minus 1 is 2." / "2 plus 1 plus 2 is 5."
- `ComparisonClaim` (reasoning): "2 is more than 1." / "1 is less than 3." / "2 is equal to 2."
  / "3 is more than 2 and 1." (more than each of the right-hand numbers).
- `ObjectClaim` (perception, benchmark v2's chains start with one per object, row-major): the
  object in one cell, "At the top left there is a large red circle." / "In the center there is a
  small blue square." (rows top/middle/bottom, columns left/middle/right).
- `FinalClaim`: "So the answer is X."

Accepted variations (`parse_claim`), all case-insensitive, with extra whitespace and a missing
or repeated final period (or "!") tolerated:

- numbers as digits or words zero..twenty; "no" (and "zero", "0") for a count of zero;
- singular/plural nouns and "is"/"are" agreement are not checked ("There is 2 circle." parses);
- "colour"/"color", "centre"/"center", "grey"/"gray" spellings; "big" = large, "little" = small;
- nouns for "object": object, thing, shape, item (singular or plural);
- counts: "There is/are N X", "There's N X", "I see N X", "I can see N X", "I count N X",
  "We (can) see N X", "The image has/contains/shows N X", "N X is/are in the image/visible/
  present", "The number of X is N", "The total number of X is N", "In total(,) there are N X";
  an optional "in total", "altogether" or "in all", and an optional "in the image";
- attributes: "The X is blue", "The X is blue in color", "The X is colored blue", "The color of
  the X is blue", "The X's color is blue"; "The X is large", "The size of the X is large";
  columns "on/at/in the left", "... left side", "in the left column", "in the middle",
  "in the middle column", "in the center column"; rows "at/on/in the top", "in the top row",
  "in the center", "in the center row", "in the middle row". Without "column"/"row",
  "middle" means the middle column and "center" the center row (the canonical forms);
- spatial: "left of", "to the left of", "on the left of", likewise for right; "above",
  "over", "higher than"; "below", "under", "beneath", "lower than";
- arithmetic: "plus"/"+", "minus"/"-", result after "is", "equals", "=", "makes", "gives";
  "The sum of 2, 1 and 2 is 5", "The difference between 3 and 1 is 2";
- comparison: "more/greater/larger/bigger/higher than", "less/fewer/smaller/lower than",
  "equal to", "the same as", "N equals M"; a single right-hand number may be negated
  ("2 is not more than 3"); several right-hand numbers ("3 is more than 2 and 1", "... 2, 1 and
  0") mean more than each, and cannot be negated;
- final: "So the answer is X", "So, the answer is X", "The answer is X", "Thus/Therefore/Hence
  (,) the answer is X", "So the final answer is X".

A sentence stating two claims ("There are 2 red objects and 1 blue object.") is not a sentence
of the language; nor is anything else the patterns above do not cover.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from mmboundary.answers import normalize_answer  # noqa: F401  (re-exported)

# --- Vocabulary ---------------------------------------------------------------------------------

#: Colour names the language knows, with the RGB value used to draw them. A spec's palette must
#: be a subset. Names are single words, so "light gray" is a background, not an object colour.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (20, 150, 40),
    "blue": (30, 70, 225),
    "yellow": (240, 200, 0),
    "orange": (245, 130, 20),
    "purple": (140, 40, 170),
    "black": (0, 0, 0),
    "brown": (130, 80, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
COLUMNS: tuple[str, ...] = ("left", "middle", "right")
ROWS: tuple[str, ...] = ("top", "center", "bottom")

NUMBER_WORDS: dict[str, int] = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}

_SIZE_WORDS = {"small": "small", "little": "small", "large": "large", "big": "large"}
_SHAPE_NOUNS = {s: s for s in SHAPES} | {s + "s": s for s in SHAPES}
_OBJECT_NOUNS = {w: None for base in ("object", "thing", "shape", "item") for w in (base, base + "s")}


# --- Claim records ------------------------------------------------------------------------------

class _Claim(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ObjectRef(_Claim):
    """A description of objects: an optional size, an optional colour, an optional shape
    (None = any shape: "object"). As "the X" it refers to the unique object matching it."""

    size: Literal["small", "large"] | None = None
    color: str | None = None
    shape: Literal["circle", "square", "triangle"] | None = None


class CountClaim(_Claim):
    """"There are `n` X." (X = `of`; no filters = all objects, "in total")."""

    type: Literal["count"] = "count"
    of: ObjectRef = ObjectRef()
    n: int = Field(ge=0)


class AttributeClaim(_Claim):
    """"The X is <value>." about the unique object X: its colour, size, column or row."""

    type: Literal["attribute"] = "attribute"
    subject: ObjectRef
    attribute: Literal["color", "size", "column", "row"]
    value: str


class SpatialClaim(_Claim):
    """"The A is left of / right of / above / below the B." (strictly: another column/row)."""

    type: Literal["spatial"] = "spatial"
    subject: ObjectRef
    relation: Literal["left_of", "right_of", "above", "below"]
    other: ObjectRef


class ArithmeticClaim(_Claim):
    """"a op b (op c ...) is r", evaluated left to right; `ops[i]` sits between terms i, i+1."""

    type: Literal["arithmetic"] = "arithmetic"
    terms: tuple[int, ...] = Field(min_length=2)
    ops: tuple[Literal["plus", "minus"], ...] = Field(min_length=1)
    result: int


class ComparisonClaim(_Claim):
    """"left is more than / less than / equal to right[0] (and right[1] ...)"; optionally negated
    (one right-hand number only)."""

    type: Literal["comparison"] = "comparison"
    left: int
    relation: Literal["more", "less", "equal"]
    right: tuple[int, ...] = Field(min_length=1)
    negated: bool = False


class ObjectClaim(_Claim):
    """"At the top left there is a large red circle.": the object in one cell of the grid."""

    type: Literal["object"] = "object"
    row: Literal["top", "center", "bottom"]
    column: Literal["left", "middle", "right"]
    size: Literal["small", "large"]
    color: str
    shape: Literal["circle", "square", "triangle"]


class FinalClaim(_Claim):
    """"So the answer is X." (`answer` normalised, see `normalize_answer`)."""

    type: Literal["final"] = "final"
    answer: str


Claim = Annotated[
    Union[CountClaim, AttributeClaim, SpatialClaim, ArithmeticClaim, ComparisonClaim, ObjectClaim, FinalClaim],
    Field(discriminator="type"),
]

#: Claim types that are perception claims (about the image); the others are reasoning claims.
PERCEPTION_CLAIMS = (CountClaim, AttributeClaim, ObjectClaim)


# --- Answer normalisation -----------------------------------------------------------------------

# --- Rendering (canonical sentences) ------------------------------------------------------------

_COLUMN_PHRASE = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
_ROW_PHRASE = {"top": "at the top", "center": "in the center", "bottom": "at the bottom"}
_SPATIAL_PHRASE = {"left_of": "left of", "right_of": "right of", "above": "above", "below": "below"}
_OBJECT_ROW = {"top": "top", "center": "middle", "bottom": "bottom"}
_COMPARISON_PHRASE = {"more": "more than", "less": "less than", "equal": "equal to"}


def describe(ref: ObjectRef, plural: bool = False) -> str:
    """"large red circle" / "red objects" / "square" ..."""
    noun = ref.shape or "object"
    if plural:
        noun += "s"
    return " ".join(w for w in (ref.size, ref.color, noun) if w)


def _join(numbers: tuple[int, ...]) -> str:
    items = [str(n) for n in numbers]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def render_claim(claim: _Claim) -> str:
    """The canonical sentence of a claim (with its final period); `parse_claim` reads it back."""
    if isinstance(claim, CountClaim):
        total = claim.of == ObjectRef()
        suffix = " in total" if total else ""
        if claim.n == 0:
            return f"There are no {describe(claim.of, plural=True)}{suffix}."
        if claim.n == 1:
            return f"There is 1 {describe(claim.of)}{suffix}."
        return f"There are {claim.n} {describe(claim.of, plural=True)}{suffix}."
    if isinstance(claim, AttributeClaim):
        subject = f"The {describe(claim.subject)}"
        if claim.attribute == "column":
            return f"{subject} is {_COLUMN_PHRASE[claim.value]}."
        if claim.attribute == "row":
            return f"{subject} is {_ROW_PHRASE[claim.value]}."
        return f"{subject} is {claim.value}."
    if isinstance(claim, SpatialClaim):
        return (f"The {describe(claim.subject)} is {_SPATIAL_PHRASE[claim.relation]} "
                f"the {describe(claim.other)}.")
    if isinstance(claim, ArithmeticClaim):
        parts = [str(claim.terms[0])]
        for op, term in zip(claim.ops, claim.terms[1:]):
            parts += [op, str(term)]
        return f"{' '.join(parts)} is {claim.result}."
    if isinstance(claim, ComparisonClaim):
        neg = "not " if claim.negated else ""
        return f"{claim.left} is {neg}{_COMPARISON_PHRASE[claim.relation]} {_join(claim.right)}."
    if isinstance(claim, ObjectClaim):
        what = f"there is a {claim.size} {claim.color} {claim.shape}."
        if (claim.row, claim.column) == ("center", "middle"):
            return f"In the center {what}"
        return f"At the {_OBJECT_ROW[claim.row]} {claim.column} {what}"
    if isinstance(claim, FinalClaim):
        return f"So the answer is {claim.answer}."
    raise TypeError(f"not a claim: {claim!r}")


# --- Parsing ------------------------------------------------------------------------------------

_NUM = r"(?:\d+|" + "|".join(NUMBER_WORDS) + r")"
_COUNT_NUM = r"(?:\d+|no|" + "|".join(NUMBER_WORDS) + r")"
_ADJ = "|".join(list(_SIZE_WORDS) + list(COLOR_RGB))
_NOUN = "|".join(list(_SHAPE_NOUNS) + list(_OBJECT_NOUNS))
# A description: adjectives (sizes/colours, any order) then a noun.
_DESC = rf"(?:(?:{_ADJ}) )*(?:{_NOUN})"
_REF = rf"the {_DESC}"


def _num(word: str) -> int:
    if word.isdigit():
        return int(word)
    if word == "no":
        return 0
    return NUMBER_WORDS[word]


def _ref(text: str) -> ObjectRef | None:
    """An ObjectRef from "[the] adj* noun"; None if it names two sizes or two colours."""
    words = text.split()
    if words and words[0] == "the":
        words = words[1:]
    noun, adjs = words[-1], words[:-1]
    size = color = None
    for w in adjs:
        if w in _SIZE_WORDS:
            if size is not None:
                return None
            size = _SIZE_WORDS[w]
        else:
            if color is not None:
                return None
            color = w
    shape = _SHAPE_NOUNS.get(noun)
    return ObjectRef(size=size, color=color, shape=shape)


def _normalize(text: str) -> str:
    s = text.strip().lower()
    s = s.replace("colour", "color").replace("centre", "center").replace("grey", "gray")
    s = s.replace("\u2019", "'").replace("there's", "there is")
    s = re.sub(r"(\d)\s*-\s*(\d)", r"\1 - \2", s)
    s = re.sub(r"\s*([+=])\s*", r" \1 ", s)
    s = re.sub(r"\s*,\s*", ", ", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\s*[.!]+$", "", s).strip()
    return s


def _c(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern + r"$")


_IN_TOTAL = r"(?: in total| altogether| in all)?(?: in the image| in the picture)?(?: in total| altogether| in all)?"
_COUNT_PATTERNS = [
    _c(rf"(?:there (?:is|are)|i (?:can )?see|i count|we (?:can )?see|the (?:image|picture) "
       rf"(?:has|contains|shows)) (?P<n>{_COUNT_NUM}) (?P<d>{_DESC}){_IN_TOTAL}"),
    _c(rf"in total,? there (?:is|are) (?P<n>{_COUNT_NUM}) (?P<d>{_DESC})"),
    _c(rf"(?P<n>{_NUM}) (?P<d>{_DESC}) (?:is|are) (?:in the image|in the picture|visible|present)"),
    _c(rf"the (?:total )?number of (?P<d>{_DESC}){_IN_TOTAL} is (?P<n>{_NUM})(?: in total)?"),
]

_COLOR_ALT = "|".join(COLOR_RGB)
_ATTRIBUTE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("color", _c(rf"(?P<r>{_REF}) is (?:colored )?(?P<v>{_COLOR_ALT})(?: in color)?")),
    ("color", _c(rf"the color of (?P<r>{_REF}) is (?P<v>{_COLOR_ALT})")),
    ("color", _c(rf"(?P<r>{_REF})'s color is (?P<v>{_COLOR_ALT})")),
    ("size", _c(rf"(?P<r>{_REF}) is (?P<v>small|little|large|big)(?: in size)?")),
    ("size", _c(rf"the size of (?P<r>{_REF}) is (?P<v>small|little|large|big)")),
    ("column", _c(rf"(?P<r>{_REF}) is (?:on|at|in) the (?P<v>left|right)(?: side| column)?")),
    ("column", _c(rf"(?P<r>{_REF}) is in the (?P<v>middle)(?: column)?")),
    ("column", _c(rf"(?P<r>{_REF}) is in the (?P<v>center) column")),
    ("row", _c(rf"(?P<r>{_REF}) is (?:on|at|in) the (?P<v>top|bottom)(?: row)?")),
    ("row", _c(rf"(?P<r>{_REF}) is in the (?P<v>center)(?: row)?")),
    ("row", _c(rf"(?P<r>{_REF}) is in the (?P<v>middle) row")),
]
_ATTRIBUTE_VALUE = {"little": "small", "big": "large"}
_ROW_VALUE = {"middle": "center"}
_COLUMN_VALUE = {"center": "middle"}

_SPATIAL_WORDS = {
    "left of": "left_of", "to the left of": "left_of", "on the left of": "left_of",
    "right of": "right_of", "to the right of": "right_of", "on the right of": "right_of",
    "above": "above", "over": "above", "higher than": "above",
    "below": "below", "under": "below", "beneath": "below", "lower than": "below",
}
_SPATIAL_PATTERN = _c(
    rf"(?P<a>{_REF}) is (?P<rel>{'|'.join(sorted(_SPATIAL_WORDS, key=len, reverse=True))}) "
    rf"(?P<b>{_REF})")

_ARITH_PATTERN = _c(
    rf"(?P<expr>{_NUM}(?: (?:plus|\+|minus|-) {_NUM})+) (?:is|equals|=|makes|gives) (?P<r>{_NUM})")
_SUM_PATTERN = _c(rf"the sum of (?P<terms>{_NUM}(?:, {_NUM})*,? and {_NUM}) is (?P<r>{_NUM})")
_DIFF_PATTERN = _c(rf"the difference between (?P<a>{_NUM}) and (?P<b>{_NUM}) is (?P<r>{_NUM})")

_COMPARISON_WORDS = {
    "more": "more", "greater": "more", "larger": "more", "bigger": "more", "higher": "more",
    "less": "less", "fewer": "less", "smaller": "less", "lower": "less",
}
_NUM_LIST = rf"{_NUM}(?:(?:, (?:and )?| and ){_NUM})*"
_COMPARISON_PATTERNS = [
    _c(rf"(?P<l>{_NUM}) is (?P<not>not )?(?P<rel>{'|'.join(_COMPARISON_WORDS)}) than "
       rf"(?P<r>{_NUM_LIST})"),
    _c(rf"(?P<l>{_NUM}) is (?P<not>not )?(?P<rel>equal to|the same as) (?P<r>{_NUM})"),
    _c(rf"(?P<l>{_NUM}) (?P<rel>equals|=) (?P<r>{_NUM})(?P<not>)"),
]

_OBJECT_PATTERN = _c(
    r"(?:at the (?P<row>top|middle|bottom) (?P<col>left|middle|right)|in the (?:center|middle)),? there is an? "
    rf"(?P<size>small|large|little|big) (?P<color>{'|'.join(COLOR_RGB)}) (?P<shape>circle|square|triangle)")
_FINAL_PATTERN = _c(r"(?:(?:so|thus|therefore|hence),? )?the (?:final )?answer is:? (?P<a>.+)")


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(_num(w) for w in re.split(r", and |, | and ", text))


def parse_claim(text: str) -> CountClaim | AttributeClaim | SpatialClaim | ArithmeticClaim \
        | ComparisonClaim | ObjectClaim | FinalClaim | None:
    """The claim a sentence states, or None when it is not a sentence of the language."""
    s = _normalize(text)
    if not s:
        return None

    m = _FINAL_PATTERN.match(s)
    if m:
        answer = normalize_answer(m.group("a"))
        return FinalClaim(answer=answer) if answer else None

    m = _OBJECT_PATTERN.match(s)
    if m:
        row = {"top": "top", "middle": "center", "bottom": "bottom", None: "center"}[m.group("row")]
        return ObjectClaim(row=row, column=m.group("col") or "middle", size=_SIZE_WORDS[m.group("size")],
                           color=m.group("color"), shape=m.group("shape"))

    for pattern in _COUNT_PATTERNS:
        m = pattern.match(s)
        if m:
            ref = _ref(m.group("d"))
            return None if ref is None else CountClaim(of=ref, n=_num(m.group("n")))

    m = _SPATIAL_PATTERN.match(s)
    if m:
        a, b = _ref(m.group("a")), _ref(m.group("b"))
        if a is None or b is None:
            return None
        return SpatialClaim(subject=a, relation=_SPATIAL_WORDS[m.group("rel")], other=b)

    for attribute, pattern in _ATTRIBUTE_PATTERNS:
        m = pattern.match(s)
        if m:
            ref = _ref(m.group("r"))
            if ref is None:
                return None
            value = _ATTRIBUTE_VALUE.get(m.group("v"), m.group("v"))
            if attribute == "row":
                value = _ROW_VALUE.get(value, value)
            elif attribute == "column":
                value = _COLUMN_VALUE.get(value, value)
            return AttributeClaim(subject=ref, attribute=attribute, value=value)

    m = _ARITH_PATTERN.match(s)
    if m:
        tokens = m.group("expr").split()
        terms = tuple(_num(t) for t in tokens[0::2])
        ops = tuple("plus" if t in ("plus", "+") else "minus" for t in tokens[1::2])
        return ArithmeticClaim(terms=terms, ops=ops, result=_num(m.group("r")))
    m = _SUM_PATTERN.match(s)
    if m:
        terms = _numbers(m.group("terms"))
        return ArithmeticClaim(terms=terms, ops=("plus",) * (len(terms) - 1), result=_num(m.group("r")))
    m = _DIFF_PATTERN.match(s)
    if m:
        return ArithmeticClaim(terms=(_num(m.group("a")), _num(m.group("b"))), ops=("minus",),
                               result=_num(m.group("r")))

    for pattern in _COMPARISON_PATTERNS:
        m = pattern.match(s)
        if m:
            rel = m.group("rel")
            relation = _COMPARISON_WORDS.get(rel, "equal")
            right = _numbers(m.group("r"))
            negated = bool(m.group("not"))
            if negated and len(right) > 1:
                return None
            return ComparisonClaim(left=_num(m.group("l")), relation=relation, right=right,
                                   negated=negated)
    return None
