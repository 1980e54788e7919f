"""Dense captions of a scene: every colour count, every shape count, and the total.

Used by stage `base` as a perception curriculum, like the caption-alignment stage of LLaVA:
half of the vanilla model's training items describe a train image in full instead of answering
its question, which teaches the vision tower to count every colour and shape rather than only
the one a question asks about. Every caption sentence is a claim the checker accepts.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmboundary.data.benchmark.language import SHAPES, CountClaim, ObjectRef, render_claim
from mmboundary.data.benchmark.scenes import count
from mmboundary.records import Scene

#: The question of a caption item.
CAPTION_QUESTION = "Describe the image."


def caption_sentences(scene: Scene, colors: Sequence[str]) -> list[str]:
    """Colour counts (in palette order, zero counts included), shape counts, then the total."""
    refs = [ObjectRef(color=c) for c in colors] + [ObjectRef(shape=s) for s in SHAPES] + [ObjectRef()]
    return [render_claim(CountClaim(of=ref, n=count(scene, ref))) for ref in refs]
