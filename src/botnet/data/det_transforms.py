"""Detection transforms (torchvision.transforms.v2) for BoTNet Mask R-CNN / Faster R-CNN.

BoTNet ("Bottleneck Transformers for Visual Recognition", arXiv:2101.11605) trains Mask R-CNN
on fixed-size square inputs (1024 x 1024 on COCO) with multi-scale jitter: the image is resized
so that its longer side is ``size * s`` for ``s`` drawn uniformly from a range ([0.8, 1.25]
canonical; the paper also studies [0.5, 2.0] and [0.1, 2.0]), then randomly cropped or
zero-padded to ``size`` x ``size``.
The train preset does that and a horizontal flip, with boxes and masks following the image;
boxes are clamped to the crop and those under one pixel are dropped with their labels and
masks. The eval preset only converts the image to float: the model resizes the longer side to
``size``, pads to ``size`` x ``size`` and maps predictions back to the original image.

Both take and return ``(image, target)`` pairs as made by ``CocoDetection``; the image comes
out as a float32 (3, H, W) ``tv_tensors.Image`` in [0, 1] (not normalized: the detection model
normalizes), exactly (3, size, size) in training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.transforms import v2

__all__ = ["PAPER_SCALE_RANGES", "SIZE_DIVISOR", "build_det_transforms"]

SIZE_DIVISOR = 32  # the backbone's output stride: C5 (where the MHSA blocks are) is size / 32
PAPER_SCALE_RANGES: tuple[tuple[float, float], ...] = ((0.8, 1.25), (0.5, 2.0), (0.1, 2.0))


def _nearest_sizes(size: float) -> list[int]:
    if not size >= SIZE_DIVISOR:  # also NaN
        return [SIZE_DIVISOR]
    lower = int(size // SIZE_DIVISOR) * SIZE_DIVISOR
    return [lower] if lower == size else [lower, lower + SIZE_DIVISOR]


def _check(size: int, scale_range: Sequence[float], hflip: float) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % SIZE_DIVISOR:
        nearest = _nearest_sizes(float(size)) if isinstance(size, (int, float)) else [SIZE_DIVISOR]
        raise ValueError(f"size must be a positive multiple of {SIZE_DIVISOR} (the backbone's output stride), "
                         f"got {size!r}; nearest valid sizes: {', '.join(map(str, nearest))}")
    try:
        lo, hi = (float(v) for v in scale_range)
    except (TypeError, ValueError):
        raise ValueError(f"scale_range must be (min, max), got {scale_range!r}") from None
    if not (math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"scale_range must be (min, max) with 0 < min <= max, got {scale_range!r}; "
                         f"the paper uses {', '.join(map(str, PAPER_SCALE_RANGES))}")
    if not 0 <= hflip <= 1:
        raise ValueError(f"hflip must be a probability in [0, 1], got {hflip!r}")


class _ScaleJitter(v2.ScaleJitter):
    """``v2.ScaleJitter`` that never resizes a side to 0 px (an elongated image at a small scale)."""

    def make_params(self, flat_inputs: list) -> dict:
        height, width = super().make_params(flat_inputs)["size"]
        return dict(size=(max(1, height), max(1, width)))


def build_det_transforms(train: bool, size: int, scale_range: Sequence[float] = (0.8, 1.25),
                         hflip: float = 0.5) -> v2.Compose:
    """Build the detection train or eval transform for ``(image, target)`` pairs.

    Train: scale jitter of the longer side to ``size * U(scale_range)``, random crop / zero pad to
    (3, size, size), horizontal flip with probability ``hflip``, clamp boxes to the image, drop
    boxes under 1 px together with their labels and masks, image to float32 in [0, 1].
    Eval: image to float32 in [0, 1] at its own size; the target is left untouched.
    Raises ``ValueError`` if ``size`` is not a positive multiple of 32 (naming the nearest valid
    sizes), if ``scale_range`` is not ``0 < min <= max``, or ``hflip`` is outside [0, 1].
    """
    _check(size, scale_range, hflip)
    ops: list = [v2.ToImage()]
    if train:
        ops += [
            _ScaleJitter(target_size=(size, size), scale_range=(float(scale_range[0]), float(scale_range[1])),
                         antialias=True),
            v2.RandomCrop(size, pad_if_needed=True, fill=0),
            v2.RandomHorizontalFlip(hflip),
            v2.ClampBoundingBoxes(),
            # finds target["labels"] in an (image, target) pair; (N, H, W) masks are filtered along
            v2.SanitizeBoundingBoxes(min_size=1),
        ]
    ops.append(v2.ToDtype(torch.float32, scale=True))  # images only: masks stay uint8, boxes float32
    return v2.Compose(ops)
