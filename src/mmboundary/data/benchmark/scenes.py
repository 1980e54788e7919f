"""Scenes of the built-in benchmark: sampling them from a seeded RNG, and drawing them.

**[choice]** Drawing. A square image (`image_size` pixels, 48 by default) is a 3x3 grid of cells;
cell boundaries are at round(k * image_size / 3). Each object fills one cell, centred in it:
a large object's bounding box is `large_fraction` (0.85) of the cell side, a small one's
`small_fraction` (0.5). Circles are filled ellipses, squares filled rectangles, triangles filled
isosceles triangles pointing up, with their base at the bottom of the bounding box. No outline,
no anti-aliasing, no jitter, no noise: the images are meant to be easy to see for a model with a
few million parameters. Colours are the clear RGB values of `COLOR_RGB`; backgrounds are
`BACKGROUND_RGB` (white in distribution, light grey out of distribution).

**[choice]** Visibility (benchmark v2). A scene drawn at a visibility level (`scene.difficulty`)
has its object colours pulled toward the background (`contrast`: colour = background + contrast
x (colour - background), rounded), is blurred (PIL's Gaussian blur of radius `blur`), and
Gaussian noise of standard deviation `noise` added to each
channel of each pixel, background included, then clipped to 0..255 and rounded; the noise is drawn
from `numpy.random.default_rng(noise_seed)`, so the image is a function of the record.

**[choice]** Sampling. The number of objects is uniform in [min, max]; their cells are a uniform
sample without replacement of the 9 cells; each object's (colour, shape) pair is uniform over
the allowed pairs (the palette times the three shapes, minus the held-out pairs in distribution;
all pairs out of distribution, with at least `min_held_out` objects drawn from the held-out
pairs), and its size is uniform over small/large. Objects are stored in row-major cell order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mmboundary.data.benchmark.language import COLOR_RGB, COLUMNS, ROWS, SHAPES, SIZES, ObjectRef
from mmboundary.records import Scene, SceneObject

#: Background colours by name.
BACKGROUND_RGB: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "light grey": (205, 205, 205),
    "light gray": (205, 205, 205),
}


def sample_scene(rng: random.Random, n_objects: int, pairs: Sequence[tuple[str, str]],
                 background: str = "white", held_out: Sequence[tuple[str, str]] = (),
                 min_held_out: int = 0) -> Scene:
    """A scene of `n_objects` objects whose (colour, shape) pairs come from `pairs`, except the
    first `min_held_out` drawn, which come from `held_out`."""
    if not 0 <= n_objects <= 9:
        raise ValueError(f"a 3x3 grid holds 0..9 objects, not {n_objects}")
    cells = rng.sample(range(9), n_objects)
    objects = []
    for k, cell in enumerate(cells):
        color, shape = rng.choice(held_out if k < min_held_out else pairs)
        size = rng.choice(SIZES)
        objects.append((cell, SceneObject(shape=shape, color=color, size=size,
                                          column=COLUMNS[cell % 3], row=ROWS[cell // 3])))
    objects.sort(key=lambda item: item[0])
    return Scene(objects=tuple(o for _, o in objects), background=background)


def faded(color: tuple[int, int, int], background: tuple[int, int, int],
          contrast: float) -> tuple[int, int, int]:
    """A colour pulled toward the background: background + contrast x (colour - background)."""
    return tuple(round(b + contrast * (c - b)) for c, b in zip(color, background))


def add_noise(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    """The image with Gaussian noise of standard deviation `sigma` (0-255 scale) added to every
    channel of every pixel, clipped and rounded; `sigma` 0 returns the image unchanged."""
    if sigma <= 0:
        return image
    pixels = np.asarray(image, dtype=np.float64)
    noise = np.random.default_rng(seed).normal(0.0, sigma, size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels + noise), 0, 255).astype(np.uint8), "RGB")


def draw_scene(scene: Scene, image_size: int = 48, large_fraction: float = 0.85,
               small_fraction: float = 0.5) -> Image.Image:
    """The RGB image of a scene, at its visibility level when it has one."""
    background = BACKGROUND_RGB[scene.background]
    contrast = scene.difficulty.contrast if scene.difficulty is not None else 1.0
    image = Image.new("RGB", (image_size, image_size), background)
    draw = ImageDraw.Draw(image)
    edges = [round(k * image_size / 3) for k in range(4)]
    for obj in scene.objects:
        c, r = COLUMNS.index(obj.column), ROWS.index(obj.row)
        x0, x1, y0, y1 = edges[c], edges[c + 1], edges[r], edges[r + 1]
        cell = min(x1 - x0, y1 - y0)
        side = max(2, round(cell * (large_fraction if obj.size == "large" else small_fraction)))
        left = x0 + (x1 - x0 - side) // 2
        top = y0 + (y1 - y0 - side) // 2
        box = (left, top, left + side - 1, top + side - 1)
        fill = COLOR_RGB[obj.color] if contrast == 1.0 else faded(COLOR_RGB[obj.color], background, contrast)
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([((box[0] + box[2]) / 2, box[1]), (box[0], box[3]), (box[2], box[3])],
                         fill=fill)
    if scene.difficulty is not None:
        if scene.difficulty.blur > 0:
            image = image.filter(ImageFilter.GaussianBlur(scene.difficulty.blur))
        image = add_noise(image, scene.difficulty.noise, scene.difficulty.noise_seed)
    return image


# --- Reading a scene (shared by the question builders and the checker) --------------------------

def matches(obj: SceneObject, ref: ObjectRef) -> bool:
    """Whether an object fits a description (each given attribute equal)."""
    return ((ref.shape is None or obj.shape == ref.shape)
            and (ref.color is None or obj.color == ref.color)
            and (ref.size is None or obj.size == ref.size))


def count(scene: Scene, ref: ObjectRef) -> int:
    return sum(matches(o, ref) for o in scene.objects)


def unique(scene: Scene, ref: ObjectRef) -> SceneObject | None:
    """The one object matching `ref`, or None when there is none or more than one."""
    found = [o for o in scene.objects if matches(o, ref)]
    return found[0] if len(found) == 1 else None


__all__ = ["BACKGROUND_RGB", "SHAPES", "add_noise", "count", "draw_scene", "faded", "matches", "sample_scene",
           "unique"]
