"""Procedural drawing of one image of the built-in shapes dataset.

Every image is a single class shape (random size, position, rotation, aspect, fill colour or
texture, optional outline) on a random background (noisy solid colour, gradient, blotchy texture
or stripes), with small distractor clutter (line segments, dots, arcs) drawn behind and in front
of it. All randomness comes from the ``numpy.random.Generator`` passed in, so an image depends
only on its seed. Drawing happens at twice the output resolution and is box-downsampled, which
antialiases the edges.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPES", "SHAPE_NAMES", "draw_shape_image", "draw_background", "draw_clutter", "place_shape"]

SUPERSAMPLE = 2
Polygon = list[tuple[float, float]]


def _regular(n: int, radius: float = 1.0, phase: float = 0.0) -> Polygon:
    return [(radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def _star() -> Polygon:
    return [(r * math.cos(-math.pi / 2 + math.pi * k / 5), r * math.sin(-math.pi / 2 + math.pi * k / 5))
            for k, r in zip(range(10), [1.0, 0.42] * 5)]


def _cross() -> Polygon:
    a, w = 1.0, 0.3
    return [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w)]


def _arrow() -> Polygon:
    return [(-1.0, -0.22), (0.15, -0.22), (0.15, -0.65), (1.0, 0.0), (0.15, 0.65), (0.15, 0.22), (-1.0, 0.22)]


def _heart() -> Polygon:
    ts = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x = 16 * np.sin(ts) ** 3 / 17
    y = -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts)) / 17 - 0.1
    return list(zip(x.tolist(), y.tolist()))


def _crescent() -> Polygon:
    """Unit disk minus a disk of radius 0.85 centred at (0.45, 0), shifted to be roughly centred."""
    d, r2 = 0.45, 0.85
    x = (1 + d * d - r2 * r2) / (2 * d)
    y = math.sqrt(1 - x * x)
    t0, p0 = math.atan2(y, x), math.atan2(y, x - d)
    outer = [(math.cos(t), math.sin(t)) for t in np.linspace(t0, 2 * math.pi - t0, 40)]
    inner = [(d + r2 * math.cos(p), r2 * math.sin(p)) for p in np.linspace(2 * math.pi - p0, p0, 30)[1:-1]]
    return [(px + 0.35, py) for px, py in outer + inner]


# name -> list of (unit polygon, is_hole); the names are sorted, i.e. in ImageFolder class order.
SHAPES: dict[str, list[tuple[Polygon, bool]]] = {
    "arrow": [(_arrow(), False)],
    "circle": [(_regular(64), False)],
    "crescent": [(_crescent(), False)],
    "cross": [(_cross(), False)],
    "heart": [(_heart(), False)],
    "hexagon": [(_regular(6), False)],
    "ring": [(_regular(64), False), (_regular(64, 0.55), True)],
    "square": [(_regular(4, phase=math.pi / 4), False)],
    "star": [(_star(), False)],
    "triangle": [(_regular(3, phase=-math.pi / 2), False)],
}
SHAPE_NAMES: tuple[str, ...] = tuple(sorted(SHAPES))


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def draw_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random (size, size, 3) float32 background in [0, 255]: solid, gradient, blotches or stripes."""
    kind = int(rng.choice(4, p=[0.4, 0.35, 0.15, 0.1]))  # solid, gradient, blotches, stripes
    c1, c2 = _colour(rng), _colour(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:
        bg = np.broadcast_to(c1, (size, size, 3)).copy()
    elif kind == 1:
        angle = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(angle) + yy * math.sin(angle))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        bg = c1 + (c2 - c1) * t[..., None]
    elif kind == 2:
        cells = int(rng.integers(3, 12))
        grid = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
        blotches = np.asarray(Image.fromarray(grid).resize((size, size), Image.BILINEAR), dtype=np.float32)
        mix = rng.uniform(0.1, 0.3)
        bg = mix * blotches + (1 - mix) * c1
    else:
        angle, freq = rng.uniform(0, math.pi), rng.uniform(2, 9)
        t = 0.5 + 0.15 * np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)))
        bg = c1 + (c2 - c1) * t[..., None]
    bg += rng.normal(0, rng.uniform(2, 8), size=(size, size, 1 if rng.random() < 0.5 else 3))
    return np.clip(bg, 0, 255)


def draw_clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, count: int) -> None:
    """Small lines, dots and arcs that are not class shapes (coordinates at drawing resolution)."""
    s = SUPERSAMPLE
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x, y = rng.uniform(0, size, size=2)
        kind = int(rng.integers(3))
        if kind == 0:
            length, angle = rng.uniform(4, 20) * s, rng.uniform(0, 2 * math.pi)
            end = (x + length * math.cos(angle), y + length * math.sin(angle))
            draw.line([(x, y), end], fill=colour, width=int(rng.integers(1, 3)) * s)
        elif kind == 1:
            r = rng.uniform(0.7, 2.5) * s
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        else:
            r = rng.uniform(3, 8) * s
            start = rng.uniform(0, 360)
            draw.arc([x - r, y - r, x + r, y + r], start, start + rng.uniform(40, 120), fill=colour, width=s)


def place_shape(poly: Polygon, radius: float, aspect: float, angle: float, cx: float, cy: float) -> Polygon:
    ca, sa = math.cos(angle), math.sin(angle)
    out = []
    for px, py in poly:
        px, py = px * radius * aspect, py * radius
        out.append((cx + px * ca - py * sa, cy + px * sa + py * ca))
    return out


def draw_shape_image(name: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Draw one ``size`` x ``size`` RGB image of shape class ``name`` (a PIL image, mode "RGB")."""
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; expected one of {SHAPE_NAMES}")
    big = size * SUPERSAMPLE
    bg = draw_background(rng, big)
    image = Image.fromarray(bg.astype(np.uint8))
    draw_clutter(ImageDraw.Draw(image), rng, big, int(rng.integers(0, 4)))

    # Object: log-uniform radius from 1/5 to ~1/2.3 of the image, centre keeps most of it inside.
    radius = math.exp(rng.uniform(math.log(size / 5), math.log(size / 2.3))) * SUPERSAMPLE
    margin = 0.75 * radius
    cx, cy = rng.uniform(margin, big - margin, size=2)
    aspect, angle = rng.uniform(0.8, 1.2), rng.uniform(0, 2 * math.pi)
    polys = [(place_shape(p, radius, aspect, angle, cx, cy), hole) for p, hole in SHAPES[name]]

    fill_mask = Image.new("L", (big, big), 0)
    mask_draw = ImageDraw.Draw(fill_mask)
    for poly, hole in polys:
        mask_draw.polygon(poly, fill=0 if hole else 255)

    # Fill colour that stands out from the background, solid or noise-textured.
    bg_mean = bg.reshape(-1, 3).mean(0)
    fill = _colour(rng)
    for _ in range(20):
        if np.linalg.norm(fill - bg_mean) > 150:
            break
        fill = _colour(rng)
    fill_img = np.broadcast_to(fill, (big, big, 3)).copy()
    if rng.random() < 0.4:
        fill_img += rng.normal(0, rng.uniform(5, 30), size=(big, big, 1))
    image.paste(Image.fromarray(np.clip(fill_img, 0, 255).astype(np.uint8)), mask=fill_mask)

    if rng.random() < 0.6:
        outline_mask = Image.new("L", (big, big), 0)
        outline_draw = ImageDraw.Draw(outline_mask)
        # at most ~1/6 of the radius, so an outlined circle does not turn into a ring
        width = max(1, min(int(rng.integers(1, 4)), round(radius / SUPERSAMPLE / 6))) * SUPERSAMPLE
        for poly, _hole in polys:
            outline_draw.polygon(poly, outline=255, width=width)
        image.paste(tuple(int(c) for c in rng.integers(0, 256, size=3)), mask=outline_mask)

    draw_clutter(ImageDraw.Draw(image), rng, big, int(rng.integers(0, 2)))
    out = np.asarray(image.reduce(SUPERSAMPLE), dtype=np.float32)
    out += rng.normal(0, rng.uniform(0, 6), size=out.shape)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
