"""Readable drawings of detections and of COCO ground truth (``botnet predict``, the det-demo pictures).

``draw_objects`` draws masks (translucent fill and an opaque outline), boxes and labels ("name
score", dark text on a filled box of the object's colour) on an image enlarged to at least
``MIN_SIDE`` pixels, so that the 128 x 128 demo scenes stay legible; ``coco_ground_truth`` finds
the annotations of an image that lies in a COCO-layout folder (ROOT/<split>/<file> with
ROOT/annotations/instances_<split>.json); ``side_by_side`` puts a ground-truth and a prediction
drawing in one titled panel.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf
from torchvision.utils import draw_segmentation_masks

from ..compat import draw_labelled_boxes
from ..data.coco import decode_segmentation

__all__ = ["PALETTE", "MIN_SIDE", "draw_objects", "coco_ground_truth", "side_by_side", "mask_outlines"]

# Light colours (dark label text stays readable on all of them), one per class id modulo the length.
PALETTE = [(255, 99, 71), (60, 220, 90), (255, 225, 25), (80, 170, 255), (255, 160, 60), (200, 120, 255),
           (70, 240, 240), (250, 110, 230), (210, 245, 60), (250, 190, 212), (150, 230, 200), (230, 200, 140)]
MIN_SIDE = 384  # drawings are enlarged by an integer factor until the shorter side is at least this


def mask_outlines(masks: torch.Tensor, width: int = 1) -> torch.Tensor:
    """The border pixels of each mask: (N, H, W) bool -> (N, H, W) bool, ``width`` pixels thick
    (a mask pixel with a non-mask pixel within ``width`` in x or y, the image border counting as outside)."""
    if masks.numel() == 0:
        return masks.bool()
    m = masks.float().unsqueeze(1)
    k = 2 * width + 1
    inner = -nnf.max_pool2d(-nnf.pad(m, (width,) * 4, value=0.0), k, stride=1)  # erosion
    return (m.bool() & ~inner.bool()).squeeze(1)


def _enlarge(image: torch.Tensor, factor: int) -> torch.Tensor:
    if factor == 1:
        return image
    return nnf.interpolate(image[None].float(), scale_factor=factor, mode="nearest")[0].to(torch.uint8)


def draw_objects(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, names: list[str],
                 scores: torch.Tensor | None = None, masks: torch.Tensor | None = None) -> torch.Tensor:
    """``image`` (3, H, W) uint8 with its objects drawn, enlarged by ``ceil(MIN_SIDE / min(H, W))``.

    ``boxes`` (N, 4) xyxy pixels, ``labels`` (N,) class ids (they pick the colours), ``names`` N
    strings, ``scores`` (N,) or None (ground truth: the label is the name alone), ``masks`` (N, H, W)
    bool or None. Returns (3, f*H, f*W) uint8.
    """
    factor = max(1, math.ceil(MIN_SIDE / min(image.shape[-2:])))
    img = _enlarge(image, factor)
    if len(boxes) == 0:
        return img
    colors = [PALETTE[int(i) % len(PALETTE)] for i in labels]
    if masks is not None and masks.any():
        big = _enlarge(masks.to(torch.uint8), factor).bool() if factor > 1 else masks.bool()
        img = draw_segmentation_masks(img, big, alpha=0.35, colors=colors)
        img = draw_segmentation_masks(img, mask_outlines(big, max(1, factor - 1)), alpha=1.0, colors=colors)
    text = list(names) if scores is None else [f"{n} {s:.2f}" for n, s in zip(names, scores.tolist())]
    return draw_labelled_boxes(img, boxes.float() * factor, text, colors, max(1, factor - 1))


@lru_cache(maxsize=8)
def _coco_index(ann_file: str) -> tuple[dict, dict, dict]:
    """({file_name: image record}, {image_id: [annotations]}, {category_id: (label, name)}) of a COCO file."""
    data = json.loads(Path(ann_file).read_text())
    images = {im["file_name"]: im for im in data.get("images", [])}
    anns: dict[int, list] = {}
    for a in data.get("annotations", []):
        anns.setdefault(a["image_id"], []).append(a)
    cats = {c["id"]: (k + 1, c["name"]) for k, c in enumerate(sorted(data.get("categories", []), key=lambda c: c["id"]))}
    return images, anns, cats


def coco_ground_truth(path: str | Path) -> dict | None:
    """The ground truth of the image ``path`` if it lies in a COCO-layout folder
    (ROOT/<split>/<file> listed in ROOT/annotations/instances_<split>.json), else None.

    Returns {"boxes" (N, 4) xyxy float, "labels" (N,) 1-based in sorted category-id order (as the
    detectors number classes), "names", "masks" (N, H, W) bool}; crowd annotations are left out.
    """

    path = Path(path)
    ann_file = path.parent.parent / "annotations" / f"instances_{path.parent.name}.json"
    if not ann_file.is_file():
        return None
    images, anns, cats = _coco_index(str(ann_file.resolve()))
    record = images.get(path.name)
    if record is None:
        return None
    h, w = record["height"], record["width"]
    objs = [a for a in anns.get(record["id"], []) if not a.get("iscrowd", 0) and a["category_id"] in cats]
    boxes = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in objs)],
                         dtype=torch.float32).reshape(-1, 4)
    masks = torch.from_numpy(np.stack([decode_segmentation(a["segmentation"], h, w) for a in objs])
                             if objs else np.zeros((0, h, w), dtype=np.uint8)).bool()
    return {"boxes": boxes, "labels": torch.tensor([cats[a["category_id"]][0] for a in objs], dtype=torch.int64),
            "names": [cats[a["category_id"]][1] for a in objs], "masks": masks}


def side_by_side(left: torch.Tensor, right: torch.Tensor, titles: tuple[str, str], gap: int = 8) -> torch.Tensor:
    """Two (3, H, W) uint8 drawings next to each other on white, each under its title: (3, H + T, 2W + gap)."""
    from PIL import Image, ImageDraw

    h, w = left.shape[-2:]
    title_h = 22
    canvas = Image.new("RGB", (2 * w + gap, h + title_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (img, title) in enumerate(zip((left, right), titles)):
        x = k * (w + gap)
        canvas.paste(Image.fromarray(img.permute(1, 2, 0).numpy()), (x, title_h))
        draw.text((x + 4, 4), title, fill=(0, 0, 0), font_size=14)
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).contiguous()
