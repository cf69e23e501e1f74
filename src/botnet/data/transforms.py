"""Train and eval image transforms (torchvision.transforms.v2).

Train: the standard ResNet augmentation, RandomResizedCrop + horizontal flip, optionally followed
by RandAugment as in the BoTNet paper (magnitudes 10, 15 or 24 on the 0..30 scale, i.e.
``num_magnitude_bins=31``). Eval (``make_eval_transform``, the one every command uses): resize the
short side to floor(img_size / crop_pct) and take the central ``img_size`` crop, as timm's
``create_transform(**resolve_data_config(model=...))`` does. Both end in a normalized
(3, img_size, img_size) float32 tensor.

``build_eval_transform(cfg)`` is ``make_eval_transform`` with the size, crop fraction, interpolation,
mean and std a model's pretrained config (or a model card) describes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from ..models.timm_botnets import IMAGENET_MEAN, IMAGENET_STD  # defined once, beside the model cards that carry them

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "build_transforms", "build_eval_transform", "make_eval_transform"]

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
RANDAUG_BINS = 31  # magnitudes 0..30


def _check(img_size: int, randaug_magnitude: int | None, randaug_layers: int, crop_pct: float, hflip: float,
           mean: Sequence[float], std: Sequence[float], interpolation: str, scale: Sequence[float]) -> None:
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 8:
        raise ValueError(f"img_size must be an int >= 8, got {img_size!r}")
    if randaug_magnitude is not None and not 0 <= randaug_magnitude <= RANDAUG_BINS - 1:
        raise ValueError(f"randaug_magnitude must be in [0, {RANDAUG_BINS - 1}] or None, got {randaug_magnitude!r}")
    if randaug_layers < 1:
        raise ValueError(f"randaug_layers must be >= 1, got {randaug_layers!r}")
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
    if not 0 <= hflip <= 1:
        raise ValueError(f"hflip must be a probability in [0, 1], got {hflip!r}")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std need 3 values each and std > 0, got mean={mean!r} std={std!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must be (min, max) with 0 < min <= max <= 1, got {scale!r}")


def build_transforms(train: bool, img_size: int, randaug_magnitude: int | None = None, randaug_layers: int = 2,
                     crop_pct: float = 0.875, hflip: float = 0.5, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD, interpolation: str = "bilinear",
                     scale: Sequence[float] = (0.08, 1.0)) -> v2.Compose:
    """Build the train or eval transform: PIL RGB image -> (3, img_size, img_size) float32 tensor.

    ``randaug_magnitude`` (0..30) adds RandAugment with ``randaug_layers`` ops after the crop and
    flip of the train transform; it is ignored for eval. ``crop_pct`` only affects eval,
    ``hflip`` and ``scale`` only train. Raises ``ValueError`` for out-of-range arguments.
    """
    _check(img_size, randaug_magnitude, randaug_layers, crop_pct, hflip, mean, std, interpolation, scale)
    if not train:
        return make_eval_transform((img_size, img_size), crop_pct, interpolation, mean, std)
    mode = InterpolationMode(interpolation)
    ops: list = [
        v2.RandomResizedCrop(img_size, scale=tuple(scale), interpolation=mode, antialias=True),
        v2.RandomHorizontalFlip(hflip),
    ]
    if randaug_magnitude is not None:
        ops.append(v2.RandAugment(num_ops=randaug_layers, magnitude=int(randaug_magnitude),
                                  num_magnitude_bins=RANDAUG_BINS, interpolation=mode))
    ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)


def make_eval_transform(size: tuple[int, int], crop_pct: float = 0.875, interpolation: str = "bilinear",
                        mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """The one eval transform: PIL RGB image -> normalized (3, H, W) float32 tensor for ``size`` (H, W).

    Resizes the short side to floor(H / crop_pct) (each side to floor(side / crop_pct) when H != W)
    and takes the central H x W crop, as timm's ``create_transform`` does (floor, not round: at 320
    with crop_pct 0.95 that is 336). ``botnet eval``, ``botnet predict``, ``botnet attention`` and the
    pretrained evaluation all build it. Raises ``ValueError`` for out-of-range arguments."""
    h, w = size
    for side in (h, w):
        _check(side, None, 2, crop_pct, 0.5, mean, std, interpolation, (0.08, 1.0))
    resize = math.floor(h / crop_pct) if h == w else (math.floor(h / crop_pct), math.floor(w / crop_pct))
    return v2.Compose([
        v2.Resize(resize, interpolation=InterpolationMode(interpolation), antialias=True), v2.CenterCrop((h, w)),
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
    ])


def build_eval_transform(cfg: dict, img_size: int | None = None) -> v2.Compose:
    """``make_eval_transform`` of a pretrained config / model card: PIL RGB -> (3, H, W) float32.

    ``cfg`` keys: ``input_size`` (C, H, W), ``crop_pct``, ``interpolation``, ``mean``, ``std`` (the
    pretrained_cfg of ``botnet26t_256`` ...: 256, 0.95, bicubic, ImageNet mean / std). ``img_size``
    evaluates at another square S with the same crop fraction. Raises ``ValueError`` for bad values.
    """
    size = (int(img_size), int(img_size)) if img_size else (int(cfg["input_size"][-2]), int(cfg["input_size"][-1]))
    return make_eval_transform(size, float(cfg.get("crop_pct", 0.875)), cfg.get("interpolation", "bilinear"),
                               tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)))
