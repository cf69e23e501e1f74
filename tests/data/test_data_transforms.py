"""build_transforms: output shapes and dtypes, RandAugment only when asked, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from botnet.data import IMAGENET_MEAN, IMAGENET_STD, build_transforms


@pytest.fixture
def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(50, 70, 3), dtype=np.uint8))


def _types(compose):
    return [type(t) for t in compose.transforms]


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("magnitude", [None, 10, 30])
def test_output(image, train, magnitude):
    out = build_transforms(train, 32, randaug_magnitude=magnitude)(image)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert -3 < out.min() and out.max() < 3  # normalized


def test_train_ops():
    t = build_transforms(True, 32)
    assert _types(t) == [v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.ToImage, v2.ToDtype, v2.Normalize]
    t = build_transforms(True, 32, randaug_magnitude=15, randaug_layers=3)
    assert _types(t)[:3] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.RandAugment]
    ra = t.transforms[2]
    assert (ra.num_ops, ra.magnitude, ra.num_magnitude_bins) == (3, 15, 31)
    assert t.transforms[0].scale == (0.08, 1.0)
    norm = t.transforms[-1]
    assert tuple(norm.mean) == IMAGENET_MEAN and tuple(norm.std) == IMAGENET_STD


def test_eval_ops():
    t = build_transforms(False, 224, randaug_magnitude=10)
    assert _types(t) == [v2.Resize, v2.CenterCrop, v2.ToImage, v2.ToDtype, v2.Normalize]
    assert t.transforms[0].size == [256]
    assert list(t.transforms[1].size) == [224, 224]


def test_eval_is_deterministic(image):
    t = build_transforms(False, 32)
    assert torch.equal(t(image), t(image))


@pytest.mark.parametrize("kwargs, match", [
    (dict(img_size=4), "img_size"),
    (dict(randaug_magnitude=31), "randaug_magnitude"),
    (dict(randaug_magnitude=-1), "randaug_magnitude"),
    (dict(crop_pct=0), "crop_pct"),
    (dict(crop_pct=1.5), "crop_pct"),
    (dict(hflip=2), "hflip"),
    (dict(interpolation="lanczos"), "interpolation"),
    (dict(scale=(0.5, 0.1)), "scale"),
    (dict(randaug_layers=0), "randaug_layers"),
])
def test_bad_args(kwargs, match):
    args = dict(train=True, img_size=32) | kwargs
    with pytest.raises(ValueError, match=match):
        build_transforms(**args)
