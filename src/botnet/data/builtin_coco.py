"""The built-in instance-segmentation dataset: shape scenes in COCO format, generated once into a cache.

``builtin_coco_root()`` writes ``<root>/{train,val}/NNNNNN.png`` and
``<root>/annotations/instances_{train,val}.json`` (the layout ``build_coco_dataset`` reads, as
COCO's own) and returns ``<root>``; later calls reuse it. It stands in for COCO in the BoTNet
Mask R-CNN demo (arXiv:2101.11605 evaluates on COCO instance segmentation): no download, small,
and deterministic, since image ``i`` of split ``s`` is drawn from the seed ``(seed, s, i)``.
Caching, locking and atomic generation are those of the classification dataset
(``builtin.build_cached_tree``).

A scene (``draw_scene``) is a noisy textured background (the backgrounds and clutter of
``shapes.py``) with 0 to 8 objects of five classes that differ by shape only: circle, square,
triangle, cross and ring, each with a random colour, aspect and rotation. Sizes span COCO's small
(area < 32^2 px), medium and large (> 96^2 px) ranges at the default 128 x 128: about 3% of the
scenes are empty, a third hold one large object (it covers most of the image) behind up to three
others, the rest 1 to 8 small and medium objects; about half the annotations are small and 6%
large. Each object's mask is its polygon rasterized as the COCO mask API does, and its pixels
are filled through that mask. Objects are drawn largest first, so later (smaller) ones occlude
earlier ones; annotations describe the visible part, and an object with under ``MIN_VISIBLE`` of
its in-image pixels visible gets none.
Segmentations are polygons for objects seen whole (entirely inside the image, not occluded, no
hole) and compressed RLE otherwise, so both formats are exercised. ``area`` is the pixel count
and ``bbox`` the box of the mask that the stored segmentation decodes to. Category ids are
1, 3, 5, 7, 9 (not contiguous, like COCO's).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from faster_coco_eval.core import mask as mask_utils
from PIL import Image, ImageDraw

from .builtin import SEED, build_cached_tree
from .shapes import SHAPES, draw_background, draw_clutter, place_shape

__all__ = ["BUILTIN_COCO_CLASSES", "CATEGORY_IDS", "COCO_GENERATOR_VERSION", "builtin_coco_root", "draw_scene"]

COCO_GENERATOR_VERSION = 1
CATEGORY_IDS: tuple[int, ...] = (1, 3, 5, 7, 9)
BUILTIN_COCO_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")  # category-id order
IMAGE_SIZE = 128
NUM_TRAIN = 1000
NUM_VAL = 200
SPLITS = ("train", "val")

MAX_OBJECTS = 8
EMPTY_FRACTION = 0.03  # images drawn without objects
MIN_VISIBLE = 0.2  # fraction of an object's in-image pixels that must stay visible to be annotated
MIN_AREA = 4  # pixels
# Object size s = sqrt(area before occlusion), log-uniform within a range; the ranges are
# fractions of the image side: at 128 px, small s < 32, large s > 96 as in COCO.
SIZE_RANGES = ((0.05, 0.25), (0.25, 0.75), (0.9, 1.1))  # small, medium, large (cut by the border)
SIZE_ODDS = (0.55, 0.45)  # small, medium
# A large object covers most of the image, so a scene has at most one: LARGE_FRACTION of the
# scenes have one, near the centre (within LARGE_OFFSET of the side) behind up to MAX_IN_FRONT others.
LARGE_FRACTION = 0.35
LARGE_OFFSET = 0.08
MAX_IN_FRONT = 3


def _unit_area(parts: list[tuple[list[tuple[float, float]], bool]]) -> float:
    """Area of a unit shape: outer polygons minus holes (shoelace formula)."""
    total = 0.0
    for poly, hole in parts:
        xy = np.asarray(poly)
        area = 0.5 * abs(float(np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1))))
        total += -area if hole else area
    return total


_UNIT_AREAS = {name: _unit_area(SHAPES[name]) for name in BUILTIN_COCO_CLASSES}


def _rasterize(flat: list[float], size: int) -> np.ndarray:
    """The (size, size) bool mask of one polygon [x0, y0, x1, y1, ...], rasterized as COCO does."""
    return mask_utils.decode(mask_utils.frPyObjects([flat], size, size)[0]).astype(bool)


def _sample_object(rng: np.random.Generator, size: int, bucket: int) -> dict[str, Any]:
    """Class, polygons (flat coordinate lists rounded to 0.01 px, with hole flags) and full mask of one object.

    ``bucket`` indexes ``SIZE_RANGES``: 0 small, 1 medium, 2 large.
    """
    cls = int(rng.integers(len(BUILTIN_COCO_CLASSES)))
    name = BUILTIN_COCO_CLASSES[cls]
    lo, hi = SIZE_RANGES[bucket]
    scale = math.exp(rng.uniform(math.log(lo * size), math.log(hi * size)))
    aspect = math.exp(rng.uniform(math.log(0.75), math.log(1 / 0.75)))
    angle = rng.uniform(0, 2 * math.pi)
    radius = scale / math.sqrt(_UNIT_AREAS[name] * aspect)
    margin = 0.6 * radius * max(aspect, 1.0)  # keeps most of the object inside the image
    if bucket < 2 and margin < size - margin:
        cx, cy = rng.uniform(margin, size - margin, size=2)
    else:  # large objects near the centre, or they could not stay large once cut by the border
        cx, cy = size / 2 + rng.uniform(-LARGE_OFFSET, LARGE_OFFSET, size=2) * size
    polys = []
    for poly, hole in SHAPES[name]:
        flat = [round(v, 2) for xy in place_shape(poly, radius, aspect, angle, cx, cy) for v in xy]
        polys.append((flat, hole))
    full = _rasterize(polys[0][0], size)
    for flat, hole in polys[1:]:
        full = full & ~_rasterize(flat, size) if hole else full | _rasterize(flat, size)
    inside = all(0 <= v <= size for flat, _ in polys for v in flat)
    return {"category_id": CATEGORY_IDS[cls], "scale": scale, "polys": polys, "full": full,
            "polygon_ok": inside and not any(hole for _, hole in polys)}


def _colour(rng: np.random.Generator, avoid: list[np.ndarray]) -> np.ndarray:
    """A random RGB colour (3,) float32, the first of 20 tries far from every colour in ``avoid``."""
    best, best_dist = None, -1.0
    for _ in range(20):
        colour = rng.integers(0, 256, size=3).astype(np.float32)
        dist = min((float(np.linalg.norm(colour - a)) for a in avoid), default=math.inf)
        if dist > 120:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best


def _annotation(obj: dict[str, Any], visible: np.ndarray) -> dict[str, Any]:
    """COCO annotation fields (no ids) of an object's visible (size, size) bool mask."""
    ys, xs = np.nonzero(visible)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    if obj["polygon_ok"] and np.array_equal(visible, obj["full"]):
        segmentation: Any = [flat for flat, _ in obj["polys"]]
    else:
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        counts = rle["counts"]
        segmentation = {"size": [int(v) for v in rle["size"]],
                        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
    return {"category_id": obj["category_id"], "segmentation": segmentation, "area": float(visible.sum()),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "iscrowd": 0}


def draw_scene(rng: np.random.Generator, size: int = IMAGE_SIZE, empty: bool = False) -> tuple[Image.Image, list[dict[str, Any]]]:
    """Draw one scene: a (size, size) RGB PIL image and the COCO annotations of its visible objects.
    ``empty``: background and clutter only, no objects (as the scenes drawn empty by chance).

    Each annotation is a dict with ``category_id``, ``segmentation`` (polygon list or compressed
    RLE dict), ``area``, ``bbox`` ([x, y, width, height] of the mask) and ``iscrowd`` (0); ids are
    left to the caller. All randomness comes from ``rng``.
    """
    canvas = Image.fromarray(draw_background(rng, size).astype(np.uint8))
    draw_clutter(ImageDraw.Draw(canvas), rng, size, int(rng.integers(0, 4)))
    pixels = np.asarray(canvas, dtype=np.float32).copy()
    kind = rng.random()
    if empty or kind < EMPTY_FRACTION:
        buckets = []
    elif kind < EMPTY_FRACTION + LARGE_FRACTION:  # one large object behind up to MAX_IN_FRONT others
        buckets = [2] + list(rng.choice(2, size=int(rng.integers(0, MAX_IN_FRONT + 1)), p=SIZE_ODDS))
    else:
        buckets = list(rng.choice(2, size=int(rng.integers(1, MAX_OBJECTS + 1)), p=SIZE_ODDS))
    objects = sorted((_sample_object(rng, size, int(b)) for b in buckets), key=lambda o: -o["scale"])

    avoid = [pixels.reshape(-1, 3).mean(0)]
    for obj in objects:  # back to front
        colour = _colour(rng, avoid[:1] + avoid[-2:])
        avoid.append(colour)
        fill = np.broadcast_to(colour, pixels.shape)
        if rng.random() < 0.4:  # noise texture
            fill = fill + rng.normal(0, rng.uniform(5, 25), size=(size, size, 1)).astype(np.float32)
        pixels[obj["full"]] = fill[obj["full"]]
    pixels += rng.normal(0, rng.uniform(0, 5), size=pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    annotations = []
    covered = np.zeros((size, size), dtype=bool)
    for obj in reversed(objects):  # front to back: what is in front hides what is behind
        visible = obj["full"] & ~covered
        covered |= obj["full"]
        in_image = int(obj["full"].sum())
        if visible.sum() >= max(MIN_AREA, MIN_VISIBLE * in_image):
            annotations.append(_annotation(obj, visible))
    return image, annotations[::-1]


def _categories() -> list[dict[str, Any]]:
    return [{"id": cat, "name": name, "supercategory": "shape"}
            for cat, name in zip(CATEGORY_IDS, BUILTIN_COCO_CLASSES)]


def _write_split(out: Path, split: str, split_index: int, count: int, size: int, seed: int) -> None:
    """Draw ``count`` scenes into ``out/<split>/`` and write ``out/annotations/instances_<split>.json``."""
    folder = out / split
    folder.mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        image, anns = draw_scene(np.random.default_rng([seed, split_index, i]), size)
        image_id = i + 1
        file_name = f"{image_id:06d}.png"
        image.save(folder / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    dataset = {
        "info": {"description": f"botnet built-in COCO-format shapes, {split} split",
                 "version": str(COCO_GENERATOR_VERSION), "contributor": "botnet.data.builtin_coco"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": _categories(),
    }
    (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(dataset, separators=(",", ":")))


def _readme(num_train: int, num_val: int, size: int, seed: int) -> str:
    return "\n".join([
        f"Built-in BoTNet COCO-format shapes dataset, generator version {COCO_GENERATOR_VERSION} "
        "(botnet.data.builtin_coco).",
        "",
        f"train/*.png: {num_train} images, val/*.png: {num_val}; {size}x{size} RGB PNGs.",
        "annotations/instances_{train,val}.json: COCO instances files (boxes, polygon or RLE masks).",
        "Categories (id: name): " + ", ".join(f"{c}: {n}" for c, n in zip(CATEGORY_IDS, BUILTIN_COCO_CLASSES)) + ".",
        f"0-{MAX_OBJECTS} objects per image (about {EMPTY_FRACTION:.0%} of images have none), random colours,",
        "sizes from small to large in COCO's sense, larger objects occluded by smaller ones; annotations",
        f"cover the visible part and objects less than {MIN_VISIBLE:.0%} visible are not annotated.",
        f"Deterministic: image i of split s (train 0, val 1) is drawn with numpy seed ({seed}, s, i).",
        "",
    ])


def _root_name(num_train: int, num_val: int, img_size: int, seed: int) -> str:
    name = f"coco-shapes-v{COCO_GENERATOR_VERSION}"
    if (num_train, num_val) != (NUM_TRAIN, NUM_VAL):
        name += f"-train{num_train}-val{num_val}"
    if img_size != IMAGE_SIZE:
        name += f"-size{img_size}"
    if seed != SEED:
        name += f"-seed{seed}"
    return name


def builtin_coco_root(cache_dir: str | os.PathLike | None = None, num_train: int = NUM_TRAIN,
                      num_val: int = NUM_VAL, img_size: int = IMAGE_SIZE, seed: int = SEED) -> Path:
    """Return the root of the built-in COCO-format dataset, generating it first if needed.

    The root is ``<cache_dir>/coco-shapes-v1`` for the defaults (1000 train + 200 val images of
    128 x 128) and gets ``-train{N}-val{M}``, ``-size{S}`` and ``-seed{X}`` appended for
    non-default values. ``cache_dir`` defaults to ``$BOTNET_CACHE`` or ``~/.cache/botnet``.
    Raises ``ValueError`` for counts < 1 or ``img_size`` < 32.
    """
    for what, value, low in (("num_train", num_train, 1), ("num_val", num_val, 1), ("img_size", img_size, 32)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{what} must be an int >= {low}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")

    def write(out: Path) -> int:
        (out / "annotations").mkdir()
        for split_index, (split, count) in enumerate(zip(SPLITS, (num_train, num_val))):
            _write_split(out, split, split_index, count, img_size, seed)
        (out / "README.txt").write_text(_readme(num_train, num_val, img_size, seed))
        return num_train + num_val

    marker = (f"coco shapes generator v{COCO_GENERATOR_VERSION} seed={seed} size={img_size} "
              f"categories={','.join(map(str, CATEGORY_IDS))} train={num_train} val={num_val}\n")
    return build_cached_tree(cache_dir, _root_name(num_train, num_val, img_size, seed), marker, write,
                             "built-in COCO-format shapes dataset")
