"""COCO-format detection data from tar shards (``botnet shards --coco``), and the one entry point
that opens either a COCO folder or its shards (``build_coco_dataset``).

``ShardCocoDetection`` is ``CocoDetection`` with its annotations and images read from the shards of
one split: the annotation json is rebuilt from the shards' ``.json`` members (image entries and
their annotations, in image-id order) and the index's categories, so ids, labels, targets, masks,
statistics and COCO evaluation are those of the folder the shards were written from, sample for
sample; training on them gives the same batches and resumes exactly. An image that does not
decode is skipped and counted (``None``), as from a folder; a ``.json`` member that cannot be read
is one ``ValueError`` naming the shard member at construction.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

from faster_coco_eval import COCO

from .coco import CocoDetection, build_coco_folder
from .folder import load_rgb
from .shard_reader import ShardError, ShardReader

__all__ = ["ShardCocoDetection", "build_coco_dataset", "coco_index_path"]

INDEX_SUFFIX = ".wids.json"
_META_SKIP = ("kind", "source", "split", "samples")


def coco_index_path(root: str | os.PathLike, split: str) -> Path:
    """``ROOT/{split}.wids.json`` (``botnet shards --coco`` names the split as the COCO folder)."""
    return Path(root).expanduser() / f"{split}{INDEX_SUFFIX}"


class ShardCocoDetection(CocoDetection):
    """``CocoDetection`` over the COCO shards of one split (``index_file``: its ``.wids.json``);
    the other arguments as ``CocoDetection``'s."""

    def __init__(self, index_file: str | os.PathLike, transforms: Callable | None = None, *, train: bool,
                 remove_empty: bool = False, masks: bool = True):
        self.reader = ShardReader(index_file, "coco")
        self._sample_of: dict[int, int] = {}
        super().__init__(self.reader.index_file.parent, self.reader.index_file, transforms, train=train,
                         remove_empty=remove_empty, masks=masks)

    def _check_sources(self) -> None:  # the reader checked the index and every shard's size
        pass

    def _check_files(self) -> None:  # every listed image is a sample of the shards
        pass

    def _load(self) -> COCO:
        images, annotations = [], []
        for i in range(len(self.reader)):
            try:
                sample = self.reader.read(i, only="json")
                record = json.loads(sample["json"])
                image, anns = record["image"], list(record["annotations"])
                self._sample_of[int(image["id"])] = i
            except ShardError as e:
                raise ValueError(f"{self.ann_file}: {e}") from None
            except (ValueError, TypeError, KeyError) as e:
                raise ValueError(f"{self.reader.where(i, sample, 'json')} is not a COCO record "
                                 f"{{\"image\", \"annotations\"}} ({type(e).__name__}: {e}); write the shards again "
                                 "with `botnet shards --coco`") from None
            images.append(image)
            annotations += anns
        meta = {k: v for k, v in self.reader.meta.items() if k not in _META_SKIP}
        try:
            return COCO({**meta, "images": images, "annotations": annotations})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{self.ann_file}: its records do not form a COCO instances set ({type(e).__name__}: "
                             f"{e})") from None

    def _image_name(self, image_id: int, info: dict) -> str:
        i = self._sample_of[image_id]
        ext = os.path.splitext(info.get("file_name", ""))[1].lower().lstrip(".")
        return f"{self.reader.where(i, {'__key__': f'{i:09d}'}, ext)} ({info.get('file_name')})"

    def _read_image(self, image_id: int, info: dict):
        i = self._sample_of[image_id]
        try:
            sample = self.reader.read(i)
        except ShardError as e:
            raise OSError(str(e)) from None
        ext = next((k for k in sample if not k.startswith("__") and k != "json"), None)
        if ext is None:
            raise OSError("the sample holds no image member")
        return load_rgb(io.BytesIO(sample[ext]))


def build_coco_dataset(root: str | os.PathLike | None, split: str, transforms: Callable | None, *,
                       train: bool, masks: bool = True) -> CocoDetection:
    """Open split ``split`` of COCO-format data: the shards ``ROOT/{split}.wids.json`` when they
    exist (``ShardCocoDetection``), else the folder ``ROOT/{split}/`` +
    ``ROOT/annotations/instances_{split}.json`` (``botnet.data.coco.build_coco_folder``;
    ``root=None``: the built-in scenes)."""
    if root is not None and coco_index_path(root, split).is_file():
        return ShardCocoDetection(coco_index_path(root, split), transforms, train=train, masks=masks)
    return build_coco_folder(root, split, transforms, train=train, masks=masks)
