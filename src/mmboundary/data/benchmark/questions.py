"""The benchmark's question types and their reference chains.

Each builder takes a scene (and the split's RNG) and returns the question, the answer and the
reference chain as claims, or None when the scene does not suit the question type (the
generator then draws another scene). Chains are perception steps first, then reasoning steps;
the last step is always "So the answer is X.". Question templates (one per type, slots filled):

1. count_color: "How many red objects are there?" -> count, final (2 steps).
2. color_of_shape: "What color is the square?" (exactly one square) -> "There is 1 square.",
   "The square is blue.", final (3).
3. compare_colors: "Are there more red objects than blue objects?" -> two counts, comparison
   ("2 is more than 1." / "1 is less than 2." / "1 is equal to 1."), final yes/no (4).
4. sum_colors: "How many objects are red or blue?" -> two counts, "2 plus 1 is 3.", final (4).
5. diff_shapes: "How many more circles than squares are there?" (circles >= squares; the two
   shapes are ordered so) -> two counts, "3 minus 1 is 2.", final (4).
6. spatial: "Is the red circle left of the blue square?" (also "right of", "above", "below";
   both objects unique by colour and shape, in different columns, resp. rows) -> the two
   columns (resp. rows), the true spatial relation, final yes/no (4). The spatial claim is a
   reasoning step.
7. most_color: "Which color has the most objects: red, blue or green?" (a unique maximum) ->
   three counts, "3 is more than 2 and 1.", final colour (5).
8. total: "How many objects are there in total?" -> counts of circles, squares, triangles,
   "2 plus 1 plus 2 is 5.", "There are 5 objects in total." (a reasoning step here: it is
   derived from the sum), final (6).

**[choice]** Balance: per split, the question types come in equal shares (the list
`type_i = types[i mod k]` shuffled by the split's RNG); yes/no questions alternate their target
answer (yes, no, yes, ...) per type, so yes and no are balanced to within one. Colours and shapes
named in questions are uniform draws.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from mmboundary.data.benchmark.language import (
    SHAPES,
    ArithmeticClaim,
    AttributeClaim,
    ComparisonClaim,
    CountClaim,
    FinalClaim,
    ObjectRef,
    SpatialClaim,
    describe,
)
from mmboundary.data.benchmark.scenes import count, unique
from mmboundary.records import Scene, StepKind

P, R = StepKind.perception, StepKind.reasoning

#: (question, answer, [(claim, kind), ...]) or None when the scene does not suit.
Built = tuple[str, str, list[tuple[object, StepKind]]] | None

#: Question types whose answer is yes/no (their target answer alternates).
YES_NO_TYPES = frozenset({"compare_colors", "spatial"})


def _count_claim(scene: Scene, ref: ObjectRef) -> CountClaim:
    return CountClaim(of=ref, n=count(scene, ref))


def count_color(rng: random.Random, scene: Scene, colors: tuple[str, ...], target: str | None) -> Built:
    color = rng.choice(colors)
    claim = _count_claim(scene, ObjectRef(color=color))
    return (f"How many {color} objects are there?", str(claim.n),
            [(claim, P), (FinalClaim(answer=str(claim.n)), R)])


def color_of_shape(rng: random.Random, scene: Scene, colors: tuple[str, ...], target: str | None) -> Built:
    shapes = [s for s in SHAPES if count(scene, ObjectRef(shape=s)) == 1]
    if not shapes:
        return None
    shape = rng.choice(shapes)
    obj = unique(scene, ObjectRef(shape=shape))
    return (f"What color is the {shape}?", obj.color,
            [(CountClaim(of=ObjectRef(shape=shape), n=1), P),
             (AttributeClaim(subject=ObjectRef(shape=shape), attribute="color", value=obj.color), P),
             (FinalClaim(answer=obj.color), R)])


def compare_colors(rng: random.Random, scene: Scene, colors: tuple[str, ...], target: str | None) -> Built:
    a, b = rng.sample(colors, 2)
    na, nb = count(scene, ObjectRef(color=a)), count(scene, ObjectRef(color=b))
    if na == nb:
        if target == "yes":
            return None
    elif (na > nb) != (target == "yes"):
        a, b, na, nb = b, a, nb, na
    answer = "yes" if na > nb else "no"
    relation = "more" if na > nb else "less" if na < nb else "equal"
    return (f"Are there more {a} objects than {b} objects?", answer,
            [(CountClaim(of=ObjectRef(color=a), n=na), P),
             (CountClaim(of=ObjectRef(color=b), n=nb), P),
             (ComparisonClaim(left=na, relation=relation, right=(nb,)), R),
             (FinalClaim(answer=answer), R)])


def sum_colors(rng: random.Random, scene: Scene, colors: tuple[str, ...], target: str | None) -> Built:
    a, b = rng.sample(colors, 2)
    na, nb = count(scene, ObjectRef(color=a)), count(scene, ObjectRef(color=b))
    return (f"How many objects are {a} or {b}?", str(na + nb),
            [(CountClaim(of=ObjectRef(color=a), n=na), P),
             (CountClaim(of=ObjectRef(color=b), n=nb), P),
             (ArithmeticClaim(terms=(na, nb), ops=("plus",), result=na + nb), R),
             (FinalClaim(answer=str(na + nb)), R)])


def diff_shapes(rng: random.Random, scene: Scene, colors: tuple[str, ...], target: str | None) -> Built:
    a, b = rng.sample(SHAPES, 2)
    na, nb = count(scene, ObjectRef(shape=a)), count(scene, ObjectRef(shape=b))
    if na < nb:
        a, b, na, nb = b, a, nb, na
    return (f"How many more {a}s than {b}s are there?", str(na - nb),
            [(CountClaim(of=ObjectRef(shape=a), n=na), P),
             (CountClaim(of=ObjectRef(shape=b), n=nb), P),
             (ArithmeticClaim(terms=(na, nb), ops=("minus",), result=na - nb), R),
             (FinalClaim(answer=str(na - nb)), R)])


_AXES = {
    "column": (("left_of", "right_of"), {"left": 0, "middle": 1, "right": 2}),
    "row": (("above", "below"), {"top": 0, "center": 1, "bottom": 2}),
}
_RELATION_WORDS = {"left_of": "left of", "right_of": "right of", "above": "above", "below": "below"}


def spatial(rng: random.Random, scene: Scene, colors: tuple[str, ...], target: str | None) -> Built:
    refs = []
    for obj in scene.objects:
        ref = ObjectRef(color=obj.color, shape=obj.shape)
        if count(scene, ref) == 1:
            refs.append((ref, obj))
    axes = ["column", "row"]
    rng.shuffle(axes)
    for axis in axes:
        pairs = [(x, y) for x in refs for y in refs
                 if x[0] != y[0] and getattr(x[1], axis) != getattr(y[1], axis)]
        if not pairs:
            continue
        (ra, oa), (rb, ob) = rng.choice(pairs)
        (first, second), index = _AXES[axis]
        ia, ib = index[getattr(oa, axis)], index[getattr(ob, axis)]
        true_relation = first if ia < ib else second
        other_relation = second if true_relation == first else first
        if target is None:
            asked = rng.choice((first, second))
        else:
            asked = true_relation if target == "yes" else other_relation
        answer = "yes" if asked == true_relation else "no"
        question = f"Is the {describe(ra)} {_RELATION_WORDS[asked]} the {describe(rb)}?"
        return (question, answer,
                [(AttributeClaim(subject=ra, attribute=axis, value=getattr(oa, axis)), P),
                 (AttributeClaim(subject=rb, attribute=axis, value=getattr(ob, axis)), P),
                 (SpatialClaim(subject=ra, relation=true_relation, other=rb), R),
                 (FinalClaim(answer=answer), R)])
    return None


def most_color(rng: random.Random, scene: Scene, colors: tuple[str, ...], target: str | None) -> Built:
    asked = rng.sample(colors, 3)
    counts = [count(scene, ObjectRef(color=c)) for c in asked]
    top = max(counts)
    if counts.count(top) != 1:
        return None
    winner = asked[counts.index(top)]
    others = tuple(n for c, n in zip(asked, counts) if c != winner)
    steps = [(CountClaim(of=ObjectRef(color=c), n=n), P) for c, n in zip(asked, counts)]
    steps += [(ComparisonClaim(left=top, relation="more", right=others), R),
              (FinalClaim(answer=winner), R)]
    return (f"Which color has the most objects: {asked[0]}, {asked[1]} or {asked[2]}?", winner,
            steps)


def total(rng: random.Random, scene: Scene, colors: tuple[str, ...], target: str | None) -> Built:
    counts = tuple(count(scene, ObjectRef(shape=s)) for s in SHAPES)
    n = sum(counts)
    steps = [(CountClaim(of=ObjectRef(shape=s), n=k), P) for s, k in zip(SHAPES, counts)]
    steps += [(ArithmeticClaim(terms=counts, ops=("plus",) * (len(counts) - 1), result=n), R),
              (CountClaim(of=ObjectRef(), n=n), R),
              (FinalClaim(answer=str(n)), R)]
    return ("How many objects are there in total?", str(n), steps)


BUILDERS: dict[str, Callable[[random.Random, Scene, tuple[str, ...], str | None], Built]] = {
    "count_color": count_color,
    "color_of_shape": color_of_shape,
    "compare_colors": compare_colors,
    "sum_colors": sum_colors,
    "diff_shapes": diff_shapes,
    "spatial": spatial,
    "most_color": most_color,
    "total": total,
}


_TYPE_PREFIXES = (
    ("How many objects are there in total?", "total"),
    ("How many more ", "diff_shapes"),
    ("How many objects are ", "sum_colors"),
    ("How many ", "count_color"),
    ("What color is the ", "color_of_shape"),
    ("Are there more ", "compare_colors"),
    ("Is the ", "spatial"),
    ("Which color has the most objects", "most_color"),
)


def question_type(question: str) -> str | None:
    """The type of a benchmark question from its text (None for a question of no type)."""
    for prefix, qtype in _TYPE_PREFIXES:
        if question.startswith(prefix):
            return qtype
    return None
