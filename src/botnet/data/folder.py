"""Image-folder datasets that skip unreadable images, and the matching collate function.

``ImageFolderSafe`` is ``torchvision.datasets.ImageFolder`` with two changes: an image that cannot
be decoded yields ``None`` instead of raising (counted and logged once per file), and every image
comes out as 8-bit RGB whatever its mode. ``collate_skip_none`` drops those ``None`` samples
when batching. ``build_dataset`` opens ``ROOT/<split>`` or the built-in dataset.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import default_collate
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from .builtin import builtin_dataset_root

__all__ = ["ImageFolderSafe", "build_dataset", "collate_skip_none", "load_rgb", "SPLITS"]

log = logging.getLogger("botnet.data")

SPLITS = ("train", "val")
LAYOUT = "ROOT/train/<class>/*.jpg|png..., ROOT/val/<class>/*.jpg|png..."
_EXTENSIONS = "|".join(ext.lstrip(".") for ext in IMG_EXTENSIONS)

# Errors PIL raises for unreadable images: UnidentifiedImageError and truncation are OSErrors,
# some decoders raise SyntaxError/ValueError/EOFError, DecompressionBombError is its own class.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class SkipsUnreadable:
    """Mixin of the datasets that return None for a sample they cannot read: ``skip`` counts it in
    ``num_skipped`` and logs each file (or shard member) once, as "skipping unreadable <kind>"."""

    skipped_kind = "image"
    num_skipped = 0

    def skip(self, where: str, why: str) -> None:
        """Count a skipped sample; log it once per ``where``."""
        self.num_skipped += 1
        warned = self.__dict__.setdefault("warned_unreadable", set())
        if where not in warned:
            warned.add(where)
            log.warning("skipping unreadable %s %s: %s", self.skipped_kind, where, why)


def _to_uint8(array: np.ndarray, full_scale: float) -> np.ndarray:
    scaled = np.asarray(array, dtype=np.float64) * (255.0 / full_scale) + 0.5
    return np.clip(np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0), 0, 255).astype(np.uint8)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as 8-bit RGB (H, W, 3); raises on unreadable files.

    16-bit and 32-bit integer images ('I;16*', 'I') are rescaled from 0..65535 to 0..255 rather
    than clipped; float images ('F') are taken as 0..1 if their maximum is <= 1, else clipped to
    0..255 (NaN pixels become 0, infinities 0 or 255). Palette images with transparency and alpha
    images drop their alpha channel.
    """
    with Image.open(path) as img:
        img.load()
        if img.mode.startswith("I;16") or (img.mode == "I" and img.getextrema()[1] > 255):
            img = Image.fromarray(_to_uint8(np.asarray(img), 65535.0))
        elif img.mode == "I":
            img = Image.fromarray(_to_uint8(np.asarray(img), 255.0))
        elif img.mode == "F":
            img = Image.fromarray(_to_uint8(np.asarray(img), 1.0 if img.getextrema()[1] <= 1.0 else 255.0))
        elif img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        return img.convert("RGB")


class ImageFolderSafe(SkipsUnreadable, ImageFolder):
    """``ImageFolder`` over ``root/<class>/*`` that returns ``None`` for unreadable images.

    ``dataset[i]`` is ``(image, target)`` with ``image`` an RGB PIL image (or whatever
    ``transform`` makes of it, e.g. a (3, H, W) float tensor) and ``target`` the int class index,
    or ``None`` when the file cannot be decoded. ``num_skipped`` counts those in this process
    (DataLoader workers keep their own counts; ``collate_skip_none`` reports them per batch).
    Raises ``FileNotFoundError`` if ``root`` is missing and ``ValueError`` if it holds no classes
    or no images.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None,
                 target_transform: Callable | None = None) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist; expected {root}/<class>/*.{_EXTENSIONS}")
        try:
            super().__init__(root, transform=transform, target_transform=target_transform, loader=load_rgb)
        except FileNotFoundError as e:  # torchvision's "no class folder" / "no valid file"
            raise ValueError(f"{root} is not a usable image folder ({e}); expected "
                             f"{root}/<class>/*.{_EXTENSIONS} with at least one image per class") from None
        self.num_skipped = 0

    def __getitem__(self, index: int) -> tuple[Any, int] | None:
        path, target = self.samples[index]
        try:
            image = self.loader(path)
        except DECODE_ERRORS as e:
            return self.skip(path, f"{type(e).__name__}: {e}")
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


def collate_skip_none(batch: list) -> tuple[Tensor, Tensor, int]:
    """Collate ``(image, target)`` samples, dropping ``None`` ones.

    Returns ``(images (B, C, H, W) float, targets (B,) long, num_skipped)`` where B is the number
    of non-``None`` samples. If every sample is ``None`` it returns ``(torch.empty(0),
    torch.empty(0, dtype=torch.long), len(batch))``: images of shape (0,), targets of shape (0,).
    """
    kept = [sample for sample in batch if sample is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images, targets = default_collate(kept)
    return images, torch.as_tensor(targets, dtype=torch.long), skipped


def build_dataset(root: str | os.PathLike | None, split: str, transform: Callable | None) -> ImageFolderSafe:
    """Open split ``split`` ("train" or "val") of ``root``, or of the built-in dataset if ``root`` is None.

    Raises ``ValueError`` for an unknown split or an empty split folder, ``FileNotFoundError`` if
    ``root/<split>`` does not exist.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    base = builtin_dataset_root() if root is None else Path(root).expanduser()
    folder = Path(base) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} not found; expected layout {LAYOUT} (ROOT={base})")
    return ImageFolderSafe(folder, transform=transform)
