"""Pictures of the synthetic catalogue: a textured background and a few shapes.

Each class has a recipe, a shape family, a base hue (degrees) and a tone (ranges of saturation
and value); recipes and tones are data, in ``rakuten_ray/data/synthetic_looks.json``.
Neighbouring classes share either the shape family or the hue, and some images follow another
class's recipe, so images carry a weaker, partly ambiguous class signal than text.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from rakuten_ray.catalog import CLASS_CODES
from rakuten_ray.data import read_json

IMAGE_SIZE = 500
#: Share of images drawn entirely from another class's recipe: the main image difficulty knob.
AMBIGUOUS_IMAGE_RATE = 0.25


class _Recipe(NamedTuple):
    """How a class looks: a shape family, a base hue (degrees) and a tone."""

    shape: str
    hue: float
    tone: str


_LOOKS = read_json("synthetic_looks.json")
#: Saturation and value ranges of each tone.
_TONES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    tone: (tuple(ranges["saturation"]), tuple(ranges["value"]))
    for tone, ranges in _LOOKS["tones"].items()
}
_RECIPES: dict[int, _Recipe] = {
    int(code): _Recipe(**recipe) for code, recipe in _LOOKS["classes"].items()
}

#: A part of a shape: vertices in unit space (about [-1, 1]) and whether it is drawn as outline.
_Part = tuple[np.ndarray, bool]


def _polygon(angles: np.ndarray, radii: np.ndarray | float) -> np.ndarray:
    return np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)


def _box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


_CIRCLE = np.linspace(0, 2 * np.pi, 32, endpoint=False)


def _rects(rng: np.random.Generator) -> list[_Part]:
    width = rng.uniform(0.5, 0.8)
    return [(_box(-width, -1, width, 1), False)]


def _stripes(rng: np.random.Generator) -> list[_Part]:
    count = int(rng.integers(3, 7))
    edges = np.linspace(-1, 1, 2 * count + 1)
    return [(_box(edges[2 * k], -1, edges[2 * k + 1], 1), False) for k in range(count)]


def _grid(rng: np.random.Generator) -> list[_Part]:
    count = int(rng.integers(2, 5))
    edges = np.linspace(-1, 1, count + 1)
    gap = 0.15 * (edges[1] - edges[0])
    return [
        (_box(edges[i] + gap, edges[j] + gap, edges[i + 1] - gap, edges[j + 1] - gap), False)
        for i in range(count)
        for j in range(count)
    ]


def _circles(rng: np.random.Generator) -> list[_Part]:
    return [(_polygon(_CIRCLE, 1.0), False)]


def _rings(rng: np.random.Generator) -> list[_Part]:
    return [(_polygon(_CIRCLE, 1.0), True)]


def _blobs(rng: np.random.Generator) -> list[_Part]:
    phase = rng.uniform(0, 2 * np.pi, 2)
    radii = 1 + 0.2 * np.sin(3 * _CIRCLE + phase[0]) + 0.15 * np.sin(5 * _CIRCLE + phase[1])
    return [(_polygon(_CIRCLE, radii / 1.35), False)]


def _triangles(rng: np.random.Generator) -> list[_Part]:
    return [(_polygon(np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6]), 1.0), False)]


def _diamonds(rng: np.random.Generator) -> list[_Part]:
    return [(np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]]), False)]


def _crosses(rng: np.random.Generator) -> list[_Part]:
    arm = rng.uniform(0.25, 0.4)
    return [(_box(-arm, -1, arm, 1), False), (_box(-1, -arm, 1, arm), False)]


def _stars(rng: np.random.Generator) -> list[_Part]:
    angles = np.linspace(-np.pi / 2, 3 * np.pi / 2, 10, endpoint=False)
    return [(_polygon(angles, np.tile([1.0, rng.uniform(0.35, 0.55)], 5)), False)]


_SHAPES: dict[str, Callable[[np.random.Generator], list[_Part]]] = {
    "rects": _rects, "stripes": _stripes, "grid": _grid, "circles": _circles,
    "rings": _rings, "blobs": _blobs, "triangles": _triangles, "diamonds": _diamonds,
    "crosses": _crosses, "stars": _stars,
}  # fmt: skip


def _colour(rng: np.random.Generator, hue: float, tone: str) -> tuple[int, int, int]:
    """A colour near ``hue``; the jitter makes neighbouring hues overlap."""
    (s_lo, s_hi), (v_lo, v_hi) = _TONES[tone]
    h = ((hue + rng.normal(0, 15)) % 360) / 360
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(s_lo, s_hi), rng.uniform(v_lo, v_hi))
    return round(255 * r), round(255 * g), round(255 * b)


def _background(rng: np.random.Generator) -> Image.Image:
    """A textured background: blotchy colour at low resolution plus grain, upscaled.

    Working at a quarter of the final size keeps it cheap; the upscale softens the grain into
    a texture, like a table or fabric behind a product.
    """
    if rng.random() < 0.35:
        base, blotch = rng.uniform(225, 250, 3), 6.0  # the white studio backdrop of shop photos
    else:
        base, blotch = rng.uniform(60, 230, 3), 30.0
    low = np.clip(base + rng.normal(0, blotch, (6, 6, 3)), 0, 255).astype(np.uint8)
    quarter = IMAGE_SIZE // 4
    field = np.asarray(
        Image.fromarray(low).resize((quarter, quarter), Image.BILINEAR), dtype=np.float32
    )
    field += rng.normal(0, rng.uniform(3, 18), (quarter, quarter, 1)).astype(np.float32)
    field = np.clip(field, 0, 255).astype(np.uint8)
    return Image.fromarray(field).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)


def _draw_shape(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, recipe: _Recipe, scale: tuple[float, float]
) -> None:
    """Draw one shape of ``recipe`` at a random place, size and rotation."""
    size = rng.uniform(*scale)
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    centre = rng.uniform(0.1 * IMAGE_SIZE, 0.9 * IMAGE_SIZE, 2)
    colour = _colour(rng, recipe.hue, recipe.tone)
    for vertices, outline in _SHAPES[recipe.shape](rng):
        points = (vertices @ rotation * size + centre).ravel().tolist()
        if outline:
            draw.line(
                points + points[:2], fill=colour, width=max(4, int(size * 0.3)), joint="curve"
            )
        else:
            draw.polygon(points, fill=colour)


def render_image(code: int, rng: np.random.Generator) -> Image.Image:
    """Draw a 500x500 RGB picture whose content hints at class ``code``.

    Args:
        code: product type code whose recipe is (usually) used.
        rng: random stream of this image.

    Returns:
        The picture.
    """
    recipe = _RECIPES[code]
    if rng.random() < AMBIGUOUS_IMAGE_RATE:
        recipe = _RECIPES[CLASS_CODES[int(rng.integers(len(CLASS_CODES)))]]
    image = _background(rng)
    draw = ImageDraw.Draw(image)
    # Distractors first, so that the class's own shapes usually sit on top.
    for _ in range(int(rng.integers(0, 3))):
        other = _RECIPES[CLASS_CODES[int(rng.integers(len(CLASS_CODES)))]]
        _draw_shape(draw, rng, other, (20, 70))
    for _ in range(int(rng.integers(1, 4))):
        _draw_shape(draw, rng, recipe, (50, 160))
    return image
