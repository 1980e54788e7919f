"""Generating the built-in benchmark: examples, images and JSONL files.

Layout of a generated benchmark folder:

    out_dir/train.jsonl, test.jsonl, ood.jsonl      (mmboundary.data.jsonl format)
    out_dir/images/{split}/{id}.png                 (ids "train-000123", "test-000007", ...)

Image paths in the JSONL files are relative to `out_dir`. Every record has `split` and `scene`
set, `choices` None (all questions are open), `answers` a one-element tuple, and a reference
chain whose steps all have `truth=True`.

**[choice]** Splits. train and test are in distribution (`min_objects`..`max_objects` objects,
white background, held-out colour-shape pairs never drawn); ood has `ood_min_objects`..
`ood_max_objects` objects, the light grey background, and at least `ood_min_held_out` objects of
a held-out pair in every scene. Train and test are independent draws of the same distribution
(an identical scene-question pair in both is possible but rare; nothing removes it).

Determinism: split k (train 0, test 1, ood 2) draws everything from
`random.Random(seed * 1000 + k)`; the same spec gives byte-identical files.
"""

from __future__ import annotations

import random
from pathlib import Path

from tqdm import tqdm

from mmboundary.data.benchmark.captions import object_claims
from mmboundary.data.benchmark.language import render_claim
from mmboundary.data.benchmark.questions import BUILDERS, YES_NO_TYPES
from mmboundary.data.benchmark.scenes import draw_scene, sample_scene
from mmboundary.data.benchmark.spec import SPLITS, BenchmarkSpec
from mmboundary.data.jsonl import write_examples
from mmboundary.records import Difficulty, Example, ReferenceStep, Scene, StepKind

#: Scenes drawn for one example before giving up (no default question type needs more than a few).
MAX_ATTEMPTS = 10_000


def split_seed(spec: BenchmarkSpec, split: str) -> int:
    return spec.seed * 1000 + SPLITS.index(split)


def draw_difficulty(rng: random.Random, spec: BenchmarkSpec, split: str) -> Difficulty | None:
    """The visibility level of the next scene of `split` (None for an ungraded spec: v1). A level
    is drawn only when the split has several, a noise seed only for a noisy level, so that a
    spec with one clear level draws exactly what benchmark v1 drew."""
    if not spec.graded:
        return None
    levels = spec.split_levels(split)
    level = rng.choice(levels) if len(levels) > 1 else levels[0]
    vis = spec.visibility[level]
    seed = rng.getrandbits(31) if vis.noise > 0 else 0
    return Difficulty(level=level, contrast=vis.contrast, noise=vis.noise, noise_seed=seed, blur=vis.blur)


def generate_examples(spec: BenchmarkSpec, split: str, image_dir: str | Path,
                      progress=None) -> list[Example]:
    """The examples of one split; their images are written to `image_dir/{id}.png`.

    `progress`, when given, is called with 1 after each example (a progress bar's update).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits are {SPLITS}")
    image_dir = Path(image_dir).resolve()
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(split_seed(spec, split))
    ood = split == "ood"
    lo, hi = (spec.ood_min_objects, spec.ood_max_objects) if ood else (spec.min_objects, spec.max_objects)
    pairs = spec.allowed_pairs(ood)
    background = spec.ood_background if ood else spec.background
    min_held_out = spec.ood_min_held_out if ood else 0

    n = spec.n_examples(split)
    k = len(spec.question_types)
    types = [spec.question_types[i % k] for i in range(n)]
    rng.shuffle(types)
    asked = {t: 0 for t in spec.question_types}

    examples = []
    for i, qtype in enumerate(types):
        target = None
        if qtype in YES_NO_TYPES:
            target = "yes" if asked[qtype] % 2 == 0 else "no"
        asked[qtype] += 1
        for _ in range(MAX_ATTEMPTS):
            scene = sample_scene(rng, rng.randint(lo, hi), pairs, background,
                                 spec.held_out_pairs, min_held_out)
            built = BUILDERS[qtype](rng, scene, spec.colors, target)
            if built is not None:
                break
        else:
            raise RuntimeError(f"{split}: no scene suits question type {qtype!r} after "
                               f"{MAX_ATTEMPTS} draws; check the spec")
        question, answer, steps = built
        if spec.list_objects:
            steps = [(c, StepKind.perception) for c in object_claims(scene)] + steps
        difficulty = draw_difficulty(rng, spec, split)
        if difficulty is not None:
            scene = Scene(objects=scene.objects, background=scene.background, difficulty=difficulty)
        ex_id = f"{split}-{i:06d}"
        path = image_dir / f"{ex_id}.png"
        draw_scene(scene, spec.image_size, spec.large_fraction, spec.small_fraction).save(
            path, format="PNG")
        examples.append(Example(
            id=ex_id, image=path, question=question, answers=(answer,), split=split, scene=scene,
            chain=tuple(ReferenceStep(text=render_claim(c), kind=kind, truth=True)
                        for c, kind in steps)))
        if progress is not None:
            progress(1)
    return examples


def generate_benchmark(spec: BenchmarkSpec, out_dir: str | Path,
                       progress: bool = True) -> dict[str, Path]:
    """Write `out_dir/{train,test,ood}.jsonl` and `out_dir/images/{split}/*.png`; returns split
    name -> JSONL path."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(spec.n_examples(s) for s in SPLITS)
    paths: dict[str, Path] = {}
    with tqdm(total=total, desc="benchmark", unit="ex", disable=not progress) as bar:
        for split in SPLITS:
            examples = generate_examples(spec, split, out_dir / "images" / split, bar.update)
            path = out_dir / f"{split}.jsonl"
            write_examples(examples, path)
            paths[split] = path
    return paths
