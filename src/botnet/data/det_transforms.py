"""Detection transforms (torchvision.transforms.v2) for BoTNet Mask R-CNN / Faster R-CNN.

BoTNet ("Bottleneck Transformers for Visual Recognition", arXiv:2101.11605) trains Mask R-CNN
on fixed-size square inputs (1024 x 1024 on COCO) with the Cloud TPU detection code's input
pipeline (tensorflow/tpu ``dataloader/maskrcnn_parser.py`` 203-226, ``utils/input_utils.py``
``resize_and_crop_image`` 170-210): random horizontal flip; then for a scale ``s`` drawn uniformly
from a range ([0.8, 1.25] canonical; the paper also studies [0.5, 2.0] and [0.1, 2.0]) the image is
resized, keeping its aspect ratio, to the largest size inside ``round(s * size)`` squared
(``fit_size``), bilinearly without antialiasing, and cropped at a random offset to at most
``size`` x ``size``. Boxes and masks follow the image; boxes are clamped to the crop and those
under one pixel are dropped with their labels and masks.

Padding is not done here: the detector's transform (``botnet.detection.transform``) normalises
first and then pads with zeros to ``size`` x ``size``, image at the top-left, in training and in
evaluation alike, as the TPU code does. The eval preset only converts the image to float: the model
resizes it with the same ``fit_size`` rule and maps predictions back to the original image.

Both take and return ``(image, target)`` pairs as made by ``CocoDetection``; the image comes
out as a float32 (3, H, W) ``tv_tensors.Image`` in [0, 1] (not normalized: the detection model
normalizes), at most (3, size, size) in training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from ..compat import V2Transform, query_size

__all__ = ["PAPER_SCALE_RANGES", "SIZE_DIVISOR", "build_det_transforms", "fit_size", "ScaleJitterCrop"]

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


def fit_size(height: int, width: int, side: float) -> list[int]:
    """[h, w] of a ``height`` x ``width`` image resized, keeping its aspect ratio, to the largest size
    inside ``side`` x ``side``: each side times ``min(side / height, side / width)``, rounded (half up;
    TF's ``tf.round`` rounds half to even: they differ only on an exact .5) and at least 1 px
    (TPU ``input_utils.resize_and_crop_image`` 182-184). TorchScript-compatible: the detector's eval
    transform uses it too."""
    scale = min(side / height, side / width)
    return [max(1, int(math.floor(height * scale + 0.5))), max(1, int(math.floor(width * scale + 0.5)))]


class ScaleJitterCrop(V2Transform):
    """TPU scale jitter: resize to ``fit_size(H, W, round(U(scale_range) * size))`` (bilinear, no
    antialiasing; masks nearest), then crop to at most ``size`` x ``size`` at a random offset
    ``floor(U(0, 1) * max(0, side - size))`` per side. No padding (the model pads after normalising)."""

    def __init__(self, size: int, scale_range: tuple[float, float]):
        super().__init__()
        self.size, self.scale_range = size, scale_range

    def make_params(self, flat_inputs: list) -> dict:
        height, width = query_size(flat_inputs)
        lo, hi = self.scale_range
        desired = math.floor(float(torch.empty(()).uniform_(lo, hi)) * self.size + 0.5)
        h, w = fit_size(height, width, float(max(desired, 1)))
        top = int(float(torch.rand(())) * max(0, h - self.size))
        left = int(float(torch.rand(())) * max(0, w - self.size))
        return dict(size=[h, w], top=top, left=left, height=min(h, self.size), width=min(w, self.size))

    def transform(self, inpt, params: dict):
        out = self._call_kernel(v2.functional.resize, inpt, size=params["size"], antialias=False)
        return self._call_kernel(v2.functional.crop, out, top=params["top"], left=params["left"],
                                 height=params["height"], width=params["width"])


def build_det_transforms(train: bool, size: int, scale_range: Sequence[float] = (0.8, 1.25),
                         hflip: float = 0.5) -> v2.Compose:
    """Build the detection train or eval transform for ``(image, target)`` pairs.

    Train: image to float32 in [0, 1], horizontal flip with probability ``hflip``, ``ScaleJitterCrop``
    (TPU scale jitter of the longer side to ``size * U(scale_range)`` and random crop to at most
    (3, size, size), no padding), clamp boxes to the image, drop boxes under 1 px together with
    their labels and masks.
    Eval: image to float32 in [0, 1] at its own size; the target is left untouched.
    Raises ``ValueError`` if ``size`` is not a positive multiple of 32 (naming the nearest valid
    sizes), if ``scale_range`` is not ``0 < min <= max``, or ``hflip`` is outside [0, 1].
    """
    _check(size, scale_range, hflip)
    # float first: the resize then interpolates the same float values the eval transform does
    ops: list = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]  # images only: masks stay uint8
    if train:
        ops += [
            v2.RandomHorizontalFlip(hflip),
            ScaleJitterCrop(size, (float(scale_range[0]), float(scale_range[1]))),
            v2.ClampBoundingBoxes(),
            # finds target["labels"] in an (image, target) pair; (N, H, W) masks are filtered along
            v2.SanitizeBoundingBoxes(min_size=1),
        ]
    return v2.Compose(ops)
