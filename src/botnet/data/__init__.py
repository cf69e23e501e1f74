"""Data: the built-in datasets, image folders that skip unreadable files, COCO-format detection data, transforms.

``build_dataset(root, split, transform)`` opens ``ROOT/train/<class>/*`` or ``ROOT/val/<class>/*``
(``root=None``: the built-in dataset, generated on first use by ``builtin_dataset_root()``), or
the tar shards of ``ROOT/{split}.wids.json`` written by ``botnet shards`` (``botnet.data.shards``);
``build_transforms`` makes the matching torchvision v2 pipelines; batches are made with
``collate_skip_none``, which drops images that could not be decoded.

For detection and instance segmentation, ``build_coco_dataset(root, split, transforms, train=...)``
opens ``ROOT/{split}/`` + ``ROOT/annotations/instances_{split}.json`` as a ``CocoDetection``
(``root=None``: the built-in COCO-format shapes dataset, ``builtin_coco_root()``), or the COCO
shards ``ROOT/{split}.wids.json`` as a ``ShardCocoDetection``;
``build_det_transforms`` makes the scale-jitter train and the eval pipelines, and
``collate_detection`` batches samples as lists, dropping undecodable images.
"""

from .builtin import BUILTIN_CLASSES, builtin_dataset_root, default_cache_dir
from .builtin_coco import BUILTIN_COCO_CLASSES, builtin_coco_root
from .coco import CocoDetection, collate_detection
from .coco_shards import ShardCocoDetection, build_coco_dataset
from .det_transforms import build_det_transforms
from .folder import ImageFolderSafe, collate_skip_none, load_rgb
from .shards import ShardImageDataset, build_dataset, verify_shards, write_shards
from .transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

__all__ = [
    "BUILTIN_CLASSES",
    "BUILTIN_COCO_CLASSES",
    "CocoDetection",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageFolderSafe",
    "ShardCocoDetection",
    "ShardImageDataset",
    "build_coco_dataset",
    "build_dataset",
    "build_det_transforms",
    "build_transforms",
    "builtin_coco_root",
    "builtin_dataset_root",
    "collate_detection",
    "collate_skip_none",
    "default_cache_dir",
    "load_rgb",
    "verify_shards",
    "write_shards",
]
