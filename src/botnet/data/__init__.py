"""Data: the built-in shapes dataset, image folders that skip unreadable files, and transforms.

``build_dataset(root, split, transform)`` opens ``ROOT/train/<class>/*`` or ``ROOT/val/<class>/*``
(``root=None``: the built-in dataset, generated on first use by ``builtin_dataset_root()``);
``build_transforms`` makes the matching torchvision v2 pipelines; batches are made with
``collate_skip_none``, which drops images that could not be decoded.
"""

from .builtin import BUILTIN_CLASSES, builtin_dataset_root, default_cache_dir
from .folder import ImageFolderSafe, build_dataset, collate_skip_none, load_rgb
from .transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

__all__ = [
    "BUILTIN_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageFolderSafe",
    "build_dataset",
    "build_transforms",
    "builtin_dataset_root",
    "collate_skip_none",
    "default_cache_dir",
    "load_rgb",
]
