"""The benchmark's checker: whether a generated sentence is true of an example.

`check_step(text, example)` parses the sentence with `parse_claim` (see `language.py` for the
accepted sentences) and evaluates the claim:

- count claims: the number of objects of the scene matching the description equals n;
- attribute claims about "the X": false when no object or more than one object matches X,
  else the object's colour/size/column/row equals the stated value;
- spatial claims: both "the A" and "the B" must be unique (else false); "left of" means A's
  column is strictly left of B's, "above" that A's row is strictly above B's (the same column or
  row is neither left nor right, neither above nor below);
- arithmetic claims: evaluated left to right, by arithmetic alone (the scene is not read);
- comparison claims: by arithmetic alone; "a is more than b and c" is true when a > b and a > c;
- object claims: the scene has an object of that size, colour and shape in that cell;
- final claims: the normalised answer equals one of the example's normalised `answers`.

A sentence that does not parse is not a true claim: False. Perception and spatial claims need
the example's scene; for an example without one (an external dataset) `check_step` raises
`DataError` rather than guess.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmboundary.data.benchmark.language import (
    ArithmeticClaim,
    AttributeClaim,
    ComparisonClaim,
    CountClaim,
    FinalClaim,
    ObjectClaim,
    SpatialClaim,
    normalize_answer,
    parse_claim,
)
from mmboundary.data.benchmark.scenes import count, unique
from mmboundary.errors import DataError
from mmboundary.records import Example, Scene

_COLUMN_INDEX = {"left": 0, "middle": 1, "right": 2}
_ROW_INDEX = {"top": 0, "center": 1, "bottom": 2}


def _arithmetic(claim: ArithmeticClaim) -> int:
    value = claim.terms[0]
    for op, term in zip(claim.ops, claim.terms[1:]):
        value = value + term if op == "plus" else value - term
    return value


def evaluate_claim(claim, scene: Scene | None, answers: Sequence[str] = ()) -> bool:
    """The truth of a parsed claim against a scene (perception, spatial) and accepted answers
    (final). Raises ValueError when a scene is needed and `scene` is None."""
    if isinstance(claim, ArithmeticClaim):
        return _arithmetic(claim) == claim.result
    if isinstance(claim, ComparisonClaim):
        if claim.relation == "more":
            holds = all(claim.left > r for r in claim.right)
        elif claim.relation == "less":
            holds = all(claim.left < r for r in claim.right)
        else:
            holds = all(claim.left == r for r in claim.right)
        return holds != claim.negated
    if isinstance(claim, FinalClaim):
        return claim.answer in {normalize_answer(a) for a in answers}
    if scene is None:
        raise ValueError(f"a {claim.type} claim needs a scene to be checked")
    if isinstance(claim, CountClaim):
        return count(scene, claim.of) == claim.n
    if isinstance(claim, ObjectClaim):
        return any((o.row, o.column, o.size, o.color, o.shape)
                   == (claim.row, claim.column, claim.size, claim.color, claim.shape) for o in scene.objects)
    if isinstance(claim, AttributeClaim):
        obj = unique(scene, claim.subject)
        if obj is None:
            return False
        return getattr(obj, claim.attribute) == claim.value
    if isinstance(claim, SpatialClaim):
        a, b = unique(scene, claim.subject), unique(scene, claim.other)
        if a is None or b is None or a is b:
            return False
        if claim.relation == "left_of":
            return _COLUMN_INDEX[a.column] < _COLUMN_INDEX[b.column]
        if claim.relation == "right_of":
            return _COLUMN_INDEX[a.column] > _COLUMN_INDEX[b.column]
        if claim.relation == "above":
            return _ROW_INDEX[a.row] < _ROW_INDEX[b.row]
        return _ROW_INDEX[a.row] > _ROW_INDEX[b.row]
    raise TypeError(f"not a claim: {claim!r}")


def claim_type(text: str) -> str | None:
    """The type of the claim a step sentence makes ("count", "attribute", "spatial",
    "arithmetic", "comparison", "final"), None for a sentence the benchmark's language does not
    parse: the step kind results are split by."""
    claim = parse_claim(text)
    return None if claim is None else claim.type


def check_step(text: str, example: Example) -> bool:
    """Whether a (generated) step sentence is a true claim about `example` (False when it is not
    a sentence of the benchmark's language)."""
    claim = parse_claim(text)
    if claim is None:
        return False
    try:
        return evaluate_claim(claim, example.scene, example.answers)
    except ValueError as e:
        raise DataError(f"example {example.id} has no scene: {e}", field="scene") from e
