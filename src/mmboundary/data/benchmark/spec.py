"""The specification of a built-in benchmark: every choice of the generator is a field here.

The field defaults are benchmark **v2**, the built-in default since 2026-12-04 (frozen 2026-12-03,
docs/benchmark.md "v2 (frozen)"; pinned by `tests/test_benchmark_v2.py::test_v2_is_frozen`);
`VERSIONS["v1"]` holds the fields in which v1, the default before, differs (`BenchmarkSpec.version`).

The generator is a pure function of the spec: the same spec (seed included) gives byte-identical
JSONL files and images. Each split draws from its own `random.Random(seed * 1000 + index)`
(index: train 0, test 1, ood 2), never from global state.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mmboundary.data.benchmark.language import COLOR_RGB, SHAPES
from mmboundary.data.benchmark.scenes import BACKGROUND_RGB

QuestionType = Literal[
    "count_color", "color_of_shape", "compare_colors", "sum_colors", "diff_shapes", "spatial",
    "most_color", "total",
]

#: Every question type, in the order of the brief (see `questions.py`).
QUESTION_TYPES: tuple[str, ...] = (
    "count_color", "color_of_shape", "compare_colors", "sum_colors", "diff_shapes", "spatial",
    "most_color", "total",
)

#: v2's question types: every type but `spatial` (its position steps were at chance, a reasoning
#: limit of the tiny model rather than a visibility effect; docs/benchmark.md, run Q).
V2_QUESTION_TYPES: tuple[str, ...] = tuple(t for t in QUESTION_TYPES if t != "spatial")

SPLITS: tuple[str, ...] = ("train", "test", "ood")


class VisibilityLevel(BaseModel):
    """How clearly a scene is drawn (see `scenes.draw_scene`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contrast: float = Field(1.0, gt=0, le=1, description="Object colour = background + contrast x (colour - bg).")
    noise: float = Field(0.0, ge=0, le=255, description="Standard deviation of the per-pixel Gaussian noise (0-255).")
    blur: float = Field(0.0, ge=0, le=48, description="Radius of the Gaussian blur applied before the noise (pixels).")




class BenchmarkSpec(BaseModel):
    """How to draw the built-in benchmark (train, test and out-of-distribution splits)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("v2", min_length=1, description="Version name; a changed spec is a new name (docs/benchmark.md).")
    seed: int = Field(0, ge=0, description="Base seed; split k draws from Random(seed*1000+k).")
    n_train: int = Field(6000, ge=0, description="Number of training examples.")
    n_test: int = Field(2000, ge=0, description="Number of in-distribution test examples.")
    n_ood: int = Field(2000, ge=0, description="Number of out-of-distribution test examples.")
    image_size: int = Field(48, ge=12, le=1024, description="Side of the square image in pixels.")
    min_objects: int = Field(2, ge=1, le=9, description="Fewest objects in an in-distribution scene.")
    max_objects: int = Field(5, ge=1, le=9, description="Most objects in an in-distribution scene.")
    ood_min_objects: int = Field(4, ge=1, le=9, description="Fewest objects in an OOD scene.")
    ood_max_objects: int = Field(7, ge=1, le=9, description="Most objects in an OOD scene.")
    colors: tuple[str, ...] = Field(
        ("red", "green", "blue", "yellow"),
        description="Object colour palette (names from language.COLOR_RGB), all splits.")
    held_out_pairs: tuple[tuple[str, str], ...] = Field(
        (("yellow", "triangle"), ("blue", "circle")),
        description="(colour, shape) pairs never drawn in train/test; OOD scenes contain them.")
    ood_min_held_out: int = Field(
        1, ge=0, description="Each OOD scene has at least this many objects of a held-out pair.")
    background: str = Field("white", description="Background of train/test images.")
    ood_background: str = Field("white", description="Background of OOD images.")
    large_fraction: float = Field(
        0.85, gt=0, le=1, description="Side of a large object's box as a fraction of the cell.")
    small_fraction: float = Field(
        0.5, gt=0, le=1, description="Side of a small object's box as a fraction of the cell.")
    visibility: tuple[VisibilityLevel, ...] = Field(
        tuple(VisibilityLevel(blur=b) for b in (0.0, 6.0, 12.0, 24.0, 28.0, 32.0)), min_length=1,
        description="Visibility levels (contrast, blur, noise), clearest first; one clear level: v1, ungraded. "
                    "v2: Gaussian blur of radius 0, 6, 12, 24, 28, 32 px (at 24 px shape and size are gone).")
    levels: tuple[int, ...] = Field(
        (0, 1, 2, 3), min_length=1, description="Indices of `visibility` drawn for train/test scenes, uniformly.")
    train_levels: tuple[int, ...] | None = Field(
        None, description="Indices of `visibility` drawn for train scenes (None: `levels`, as test).")
    ood_levels: tuple[int, ...] = Field(
        (3, 4, 5), min_length=1, description="Indices of `visibility` drawn for OOD scenes, uniformly.")
    list_objects: bool = Field(
        True, description="Reference chains start with one ObjectClaim step per object, row-major (v2).")
    question_types: tuple[QuestionType, ...] = Field(
        V2_QUESTION_TYPES,
        description="Question types drawn, in equal shares per split (see questions.py); v2: all but spatial.")

    @model_validator(mode="after")
    def _check(self) -> BenchmarkSpec:
        unknown = [c for c in self.colors if c not in COLOR_RGB]
        if unknown:
            raise ValueError(f"colors: unknown colour(s) {unknown}; known: {sorted(COLOR_RGB)}")
        if len(set(self.colors)) != len(self.colors):
            raise ValueError("colors: duplicate colour")
        for color, shape in self.held_out_pairs:
            if color not in self.colors or shape not in SHAPES:
                raise ValueError(f"held_out_pairs: ({color}, {shape}) is not a palette colour "
                                 f"and a shape of {SHAPES}")
        if len(self.allowed_pairs(ood=False)) == 0:
            raise ValueError("held_out_pairs: nothing left to draw in distribution")
        if self.ood_min_held_out > 0 and not self.held_out_pairs:
            raise ValueError("ood_min_held_out > 0 needs held_out_pairs")
        if self.ood_min_held_out > self.ood_min_objects:
            raise ValueError("ood_min_held_out exceeds ood_min_objects")
        if self.min_objects > self.max_objects:
            raise ValueError("min_objects exceeds max_objects")
        if self.ood_min_objects > self.ood_max_objects:
            raise ValueError("ood_min_objects exceeds ood_max_objects")
        for name in ("background", "ood_background"):
            if getattr(self, name) not in BACKGROUND_RGB:
                raise ValueError(f"{name}: unknown background; known: {sorted(BACKGROUND_RGB)}")
        for name in ("levels", "ood_levels", "train_levels"):
            bad = [i for i in getattr(self, name) or () if not 0 <= i < len(self.visibility)]
            if bad:
                raise ValueError(f"{name}: {bad} not an index of visibility (0..{len(self.visibility) - 1})")
        if not self.question_types:
            raise ValueError("question_types: empty")
        need = {"most_color": 3, "compare_colors": 2, "sum_colors": 2}
        for qtype, k in need.items():
            if qtype in self.question_types and len(self.colors) < k:
                raise ValueError(f"question_types: {qtype} needs at least {k} colours")
        if "spatial" in self.question_types and self.min_objects < 2:
            raise ValueError("question_types: spatial needs min_objects >= 2")
        return self

    @classmethod
    def version(cls, name: str, **fields) -> "BenchmarkSpec":
        """A named version (`VERSIONS`: "v1", "v2") with `fields` on top: `version("v1", n_train=40)`."""
        if name not in VERSIONS:
            raise ValueError(f"unknown benchmark version {name!r}; known: {sorted(VERSIONS)}")
        return cls(**{**VERSIONS[name], **fields})

    def allowed_pairs(self, ood: bool) -> tuple[tuple[str, str], ...]:
        """(colour, shape) pairs that may be drawn: all of them out of distribution, all but the
        held-out pairs in distribution."""
        pairs = tuple((c, s) for c in self.colors for s in SHAPES)
        if ood:
            return pairs
        held = set(self.held_out_pairs)
        return tuple(p for p in pairs if p not in held)

    def split_levels(self, split: str) -> tuple[int, ...]:
        """The visibility levels a split's scenes are drawn at."""
        if split == "train" and self.train_levels is not None:
            return self.train_levels
        return self.ood_levels if split == "ood" else self.levels

    @property
    def graded(self) -> bool:
        """Whether scenes record their visibility level (more than one level is defined): False
        for benchmark v1, whose images are all clear."""
        return len(self.visibility) > 1

    def n_examples(self, split: str) -> int:
        return {"train": self.n_train, "test": self.n_test, "ood": self.n_ood}[split]


#: The named versions, as the fields in which each differs from the defaults (v2). v1: the built-in
#: default until 2026-12-04, clear images only, 2,000 / 300 / 300 questions, OOD 5-8 objects on
#: light grey, spatial questions, no object steps (configs/benchmark-v1.yaml).
VERSIONS: dict[str, dict] = {
    "v1": {"name": "v1", "n_train": 2000, "n_test": 300, "n_ood": 300, "ood_min_objects": 5, "ood_max_objects": 8,
           "ood_background": "light grey", "visibility": (VisibilityLevel(),), "levels": (0,), "ood_levels": (0,),
           "list_objects": False, "question_types": QUESTION_TYPES},
    "v2": {},
}
