"""Dense captions of a scene: every colour count, every shape count, and the total.

Used by stage `base` as a perception curriculum, like the caption-alignment stage of LLaVA:
half of the vanilla model's training items describe a train image in full instead of answering
its question, which teaches the vision tower to count every colour and shape rather than only
the one a question asks about. Every count sentence is a claim the checker accepts.

**[choice]** Object lists (benchmark v2, `base.caption_objects`): the caption starts with one
sentence per object, in row-major cell order ("At the top left there is a large red circle.",
an `ObjectClaim`), which grounds each image token's colour, shape and size in words; v2's
reference chains start with the same sentences (docs/benchmark.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from mmboundary.data.benchmark.language import SHAPES, CountClaim, ObjectClaim, ObjectRef, render_claim
from mmboundary.data.benchmark.scenes import count
from mmboundary.records import Scene

#: The question of a caption item.
CAPTION_QUESTION = "Describe the image."


def object_claims(scene: Scene) -> list[ObjectClaim]:
    """One claim per object, in the scene's (row-major) order."""
    return [ObjectClaim(row=o.row, column=o.column, size=o.size, color=o.color, shape=o.shape)
            for o in scene.objects]


def object_sentences(scene: Scene) -> list[str]:
    """One sentence per object, in the scene's (row-major) order: "At the top left there is a
    large red circle."."""
    return [render_claim(c) for c in object_claims(scene)]


def caption_sentences(scene: Scene, colors: Sequence[str], objects: bool = False) -> list[str]:
    """Colour counts (in palette order, zero counts included), shape counts, then the total;
    preceded by the object list (`object_sentences`) when `objects`."""
    refs = [ObjectRef(color=c) for c in colors] + [ObjectRef(shape=s) for s in SHAPES] + [ObjectRef()]
    counts = [render_claim(CountClaim(of=ref, n=count(scene, ref))) for ref in refs]
    return (object_sentences(scene) if objects else []) + counts
