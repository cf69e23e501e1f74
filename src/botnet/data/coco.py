"""COCO-format instance detection and segmentation data, for BoTNet Mask R-CNN / Faster R-CNN.

The BoTNet paper (Srinivas et al., "Bottleneck Transformers for Visual Recognition",
arXiv:2101.11605) evaluates its backbones on COCO instance segmentation with Mask R-CNN.
``CocoDetection`` reads an ``instances_*.json`` with ``faster_coco_eval`` (no pycocotools at run
time) and the images it lists, and yields ``(image, target)`` pairs in the format of
torchvision's detection models: ``image`` a ``tv_tensors.Image`` (3, H, W), ``target`` a dict
with ``boxes`` (N, 4) XYXY, ``labels`` (N,) in 1..K (0 is background), ``masks`` (N, H, W),
``image_id`` and ``orig_size``. COCO category ids, which need not be contiguous, map to labels
in sorted order (``label_to_cat`` / ``cat_to_label``).

What the COCO tools do, it does too: crowd annotations are left out of training targets
(``COCOeval`` reads them from the json), boxes are clipped to the image and dropped below one
pixel, and annotations whose mask is empty are dropped when masks are trained. Images left
with no annotation are kept (as the TPU detection code keeps them; ``remove_empty=True`` drops
them). Every drop is counted in ``dataset.stats``.
Unknown category ids and missing image files are errors at construction; an image that cannot
be decoded yields ``None`` (logged once), which ``collate_detection`` drops from the batch.
``build_coco_folder`` opens ``ROOT/{split}/`` + ``ROOT/annotations/instances_{split}.json``
(``botnet.data.coco_shards.build_coco_dataset`` also opens COCO shards).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from faster_coco_eval import COCO
from faster_coco_eval.core import mask as mask_utils
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from .folder import DECODE_ERRORS, SkipsUnreadable, load_rgb
from .builtin_coco import builtin_coco_root

__all__ = ["CocoDetection", "build_coco_folder", "collate_detection", "decode_segmentation"]

log = logging.getLogger("botnet.data")

Sample = tuple[tv_tensors.Image, dict[str, Any]]
MIN_BOX_SIZE = 1.0  # pixels, after clipping to the image
MAX_LISTED = 5  # missing files named in an error message

# Counters in ``CocoDetection.stats``; an annotation is counted under the first reason that applies.
STAT_KEYS = (
    "images",  # listed in the json
    "images_kept",  # served by the dataset (len(dataset))
    "images_without_annotations",  # no usable annotation left (removed if remove_empty)
    "annotations",  # listed for the listed images
    "annotations_kept",  # in the targets of the kept images
    "crowd",  # iscrowd=1
    "degenerate_box",  # width or height < 1 px after clipping to the image, or not finite
    "empty_mask",  # segmentation decodes to no pixel (only counted with masks=True)
)


def _polygon_parts(segm: list, where: str) -> list[list[float]]:
    """The usable parts of a COCO polygon segmentation: flat [x0, y0, x1, y1, ...] lists, >= 3 points.

    Parts with fewer than 3 points cover no pixel. They are left out rather than passed on, since
    the COCO mask API reads a first part of exactly 4 numbers as a box, not a polygon.
    """
    parts = []
    for part in segm:
        if not isinstance(part, (list, tuple)):
            raise ValueError(f"{where}: a polygon segmentation must be a list of [x0, y0, x1, y1, ...] lists, "
                             f"got an element of type {type(part).__name__}")
        if len(part) >= 6:
            try:
                parts.append([float(v) for v in part])
            except (TypeError, ValueError):
                raise ValueError(f"{where}: polygon coordinates must be numbers, got {part[:6]!r}...") from None
    return parts


def _check_rle(segm: dict, height: int, width: int, where: str) -> None:
    if "counts" not in segm or "size" not in segm:
        raise ValueError(f"{where}: an RLE segmentation needs 'counts' and 'size', got keys {sorted(segm)}")
    if [int(v) for v in segm["size"]] != [height, width]:
        raise ValueError(f"{where}: RLE size {list(segm['size'])} does not match the image size "
                         f"[height, width] = [{height}, {width}]")


def _to_rle(segm: list | dict, height: int, width: int, where: str) -> dict:
    """Polygon parts, uncompressed RLE or compressed RLE -> one compressed RLE of size (height, width)."""
    if isinstance(segm, dict):
        _check_rle(segm, height, width, where)
        if isinstance(segm["counts"], list):  # uncompressed
            return mask_utils.frPyObjects(segm, height, width)
        return segm
    parts = _polygon_parts(segm, where)
    if not parts:
        return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    rles = mask_utils.frPyObjects(parts, height, width)
    return rles[0] if len(rles) == 1 else mask_utils.merge(rles)


def decode_segmentation(segm: list | dict, height: int, width: int) -> np.ndarray:
    """Decode one COCO segmentation (polygons, uncompressed or compressed RLE) to a (height, width) uint8 mask.

    Polygon parts with fewer than 3 points are ignored; an empty polygon list gives an all-zero
    mask. Raises ``ValueError`` for a malformed segmentation or an RLE of another size.
    """
    rle = _to_rle(segm, height, width, "segmentation")
    return np.ascontiguousarray(mask_utils.decode(rle))


def _mask_nonempty(segms: list[list | dict], height: int, width: int, wheres: list[str]) -> list[bool]:
    """Whether each segmentation covers at least one pixel, with one mask-API call per format."""
    nonempty = [False] * len(segms)
    poly_parts, poly_owner, compressed, compressed_owner = [], [], [], []
    for k, (segm, where) in enumerate(zip(segms, wheres)):
        if isinstance(segm, dict):
            _check_rle(segm, height, width, where)
            if isinstance(segm["counts"], list):  # uncompressed: runs alternate 0s, 1s, 0s, ...
                nonempty[k] = sum(segm["counts"][1::2]) > 0
            else:
                compressed.append(segm)
                compressed_owner.append(k)
        elif isinstance(segm, list):
            parts = _polygon_parts(segm, where)
            poly_parts += parts
            poly_owner += [k] * len(parts)
        else:
            raise ValueError(f"{where}: segmentation must be a polygon list or an RLE dict, got {type(segm).__name__}")
    if poly_parts:  # a union of parts is empty iff every part is
        for k, area in zip(poly_owner, mask_utils.area(mask_utils.frPyObjects(poly_parts, height, width))):
            nonempty[k] |= bool(area > 0)
    if compressed:
        for k, area in zip(compressed_owner, mask_utils.area(compressed)):
            nonempty[k] = bool(area > 0)
    return nonempty


class CocoDetection(SkipsUnreadable, torch.utils.data.Dataset):
    """The images of a COCO-format ``ann_file`` under ``img_dir``, with detection targets.

    ``dataset[i]`` is ``(image, target)`` for image id ``dataset.ids[i]``, or ``None`` if its file
    cannot be decoded (counted in ``num_skipped`` and logged once per file). Before ``transforms``
    (called as ``transforms(image, target)``, e.g. ``build_det_transforms``) the sample is:

    - ``image``: ``tv_tensors.Image`` uint8 (3, H, W), 8-bit RGB whatever the file's mode.
    - ``target["boxes"]``: ``tv_tensors.BoundingBoxes`` float32 (N, 4), XYXY, clipped to the image.
    - ``target["labels"]``: int64 (N,), contiguous labels 1..K (``label_to_cat[label]`` is the
      COCO category id).
    - ``target["masks"]``: ``tv_tensors.Mask`` uint8 (N, H, W) of 0/1, only if ``masks=True``.
    - ``target["image_id"]``: int, the COCO image id.
    - ``target["orig_size"]``: int64 tensor [H, W], the size of the image as read from disk.

    Crowd annotations, boxes under 1 px after clipping and (with ``masks=True``) empty masks are
    left out; ``remove_empty`` (default False) drops the images left without annotations. They are
    kept by default, for training too: the Cloud TPU detection code the paper used trains on them
    (tensorflow/tpu ``tools/datasets/create_coco_tf_record.py`` writes every image, with or without
    boxes), as background-only images.
    ``stats`` counts these (see ``STAT_KEYS``) plus ``unreadable`` images met so far in this
    process (DataLoader workers keep their own counts; ``collate_detection`` reports them per batch).

    Raises ``FileNotFoundError`` if ``img_dir`` or ``ann_file`` does not exist, and ``ValueError``
    for an unreadable or malformed json, an annotation with an unknown category id or image id,
    or images listed in the json (and kept) that are missing from ``img_dir``; ``dataset[i]``
    raises ``ValueError`` if an image's size differs from the one in the json.
    """

    def __init__(self, img_dir: str | os.PathLike, ann_file: str | os.PathLike,
                 transforms: Callable | None = None, *, train: bool, remove_empty: bool = False,
                 masks: bool = True) -> None:
        self.img_dir = Path(img_dir).expanduser()
        self.ann_file = Path(ann_file).expanduser()
        self._check_sources()
        self.transforms = transforms
        self.train = bool(train)
        self.remove_empty = bool(remove_empty)
        self.masks = bool(masks)
        self.num_skipped = 0

        self.coco = self._load()
        self.cat_ids: list[int] = sorted(self.coco.cats)
        self.class_names: list[str] = [str(self.coco.cats[c].get("name", c)) for c in self.cat_ids]
        self.label_to_cat: dict[int, int] = {label: cat for label, cat in enumerate(self.cat_ids, start=1)}
        self.cat_to_label: dict[int, int] = {cat: label for label, cat in self.label_to_cat.items()}
        self.num_classes = len(self.cat_ids) + 1  # background is label 0
        self._check_annotations()

        counts = dict.fromkeys(STAT_KEYS, 0)
        # image id -> (boxes (N, 4) float32 XYXY, labels (N,) int64, segmentations (N,))
        self._targets: dict[int, tuple[np.ndarray, np.ndarray, list]] = {}
        ids = []
        for image_id in sorted(self.coco.imgs):
            boxes, labels, segms = self._usable(image_id, counts)
            self._targets[image_id] = (boxes, labels, segms)
            counts["images"] += 1
            counts["annotations_kept"] += len(labels)
            if not len(labels):
                counts["images_without_annotations"] += 1
                if self.remove_empty:
                    del self._targets[image_id]
                    continue
            ids.append(image_id)
        counts["images_kept"] = len(ids)
        self.ids: list[int] = ids
        self._stats = counts
        self._check_files()
        log.debug("%s: %s", self.ann_file, self.stats)

    # ----------------------------------------------------------------------------------- loading
    def _check_sources(self) -> None:
        """Before anything is read: the annotation file and the image folder exist (subclasses that
        read elsewhere, e.g. ``ShardCocoDetection``, check their own sources)."""
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"COCO annotation file {self.ann_file} does not exist")
        if not self.img_dir.is_dir():
            raise FileNotFoundError(f"image folder {self.img_dir} does not exist (images of {self.ann_file})")

    def _image_name(self, image_id: int, info: dict) -> str:
        """The image's file, as messages name it."""
        return str(self.img_dir / info["file_name"])

    def _read_image(self, image_id: int, info: dict):
        """The image as an RGB PIL image; raises one of ``DECODE_ERRORS``."""
        return load_rgb(self.img_dir / info["file_name"])

    def _load(self) -> COCO:
        try:
            coco = COCO(str(self.ann_file))
        except (OSError, ValueError, AssertionError) as e:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"cannot read COCO annotation file {self.ann_file}: {type(e).__name__}: {e}") from None
        except (KeyError, TypeError) as e:  # createIndex on entries without "id" / "image_id"
            raise ValueError(f"{self.ann_file} is not a COCO instances file: an entry lacks or has a bad {e}") from None
        missing = [key for key in ("images", "categories") if key not in coco.dataset]
        if missing:
            raise ValueError(f"{self.ann_file} is not a COCO instances file: no {' or '.join(map(repr, missing))} "
                             f"list (keys: {sorted(coco.dataset)})")
        for cat in coco.dataset["categories"]:
            if "id" not in cat:
                raise ValueError(f"{self.ann_file}: category {cat!r} has no 'id'")
        for img in coco.dataset["images"]:
            if not all(key in img for key in ("id", "file_name", "width", "height")):
                raise ValueError(f"{self.ann_file}: image {img.get('id')!r} needs 'id', 'file_name', 'width' and "
                                 f"'height', has {sorted(img)}")
            if int(img["width"]) < 1 or int(img["height"]) < 1:
                raise ValueError(f"{self.ann_file}: image {img['id']} has size {img['width']}x{img['height']}")
        return coco

    def _check_annotations(self) -> None:
        for ann in self.coco.dataset.get("annotations", []):
            if ann["category_id"] not in self.coco.cats:
                raise ValueError(f"{self.ann_file}: annotation {ann.get('id')!r} has unknown category_id "
                                 f"{ann['category_id']!r}; the categories are {self.cat_ids}")
            if ann["image_id"] not in self.coco.imgs:
                raise ValueError(f"{self.ann_file}: annotation {ann.get('id')!r} refers to image_id "
                                 f"{ann['image_id']!r}, which is not in 'images'")

    def _usable(self, image_id: int, counts: dict[str, int]) -> tuple[np.ndarray, np.ndarray, list]:
        """Boxes, labels and segmentations of the usable annotations of one image; counts the others."""
        info = self.coco.imgs[image_id]
        height, width = int(info["height"]), int(info["width"])
        boxes, labels, segms, wheres = [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            counts["annotations"] += 1
            where = f"{self.ann_file}: annotation {ann.get('id')!r}"
            if ann.get("iscrowd", 0):
                counts["crowd"] += 1
                continue
            bbox = ann.get("bbox")
            try:
                x, y, w, h = (float(v) for v in bbox)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}") from None
            x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
            x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
            if not (math.isfinite(x0 + y0 + x1 + y1) and x1 - x0 >= MIN_BOX_SIZE and y1 - y0 >= MIN_BOX_SIZE):
                counts["degenerate_box"] += 1
                continue
            boxes.append((x0, y0, x1, y1))
            labels.append(self.cat_to_label[ann["category_id"]])
            segms.append(ann.get("segmentation", []) if self.masks else None)
            wheres.append(where)
        if self.masks and segms:
            keep = _mask_nonempty(segms, height, width, wheres)
            counts["empty_mask"] += keep.count(False)
            boxes, labels, segms = ([v for v, k in zip(seq, keep) if k] for seq in (boxes, labels, segms))
        return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64),
                segms if self.masks else [])

    def _check_files(self) -> None:
        missing = [self.coco.imgs[i]["file_name"] for i in self.ids
                   if not (self.img_dir / self.coco.imgs[i]["file_name"]).is_file()]
        if missing:
            listed = ", ".join(missing[:MAX_LISTED]) + (", ..." if len(missing) > MAX_LISTED else "")
            raise ValueError(f"{len(missing)} of the {len(self.ids)} images of {self.ann_file} are missing from "
                             f"{self.img_dir}: {listed}")

    # ---------------------------------------------------------------------------------- samples
    @property
    def stats(self) -> dict[str, int]:
        """What was kept and dropped and why (``STAT_KEYS``), plus ``unreadable`` images so far."""
        return {**self._stats, "unreadable": self.num_skipped}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample | None:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = self._image_name(image_id, info)
        try:
            pil = self._read_image(image_id, info)
        except DECODE_ERRORS as e:
            return self.skip(path, f"{type(e).__name__}: {e}")
        width, height = pil.size
        if (height, width) != (int(info["height"]), int(info["width"])):
            raise ValueError(f"{path} is {width}x{height} (WxH) but {self.ann_file} says "
                             f"{info['width']}x{info['height']} for image {image_id}")
        image = tv_tensors.Image(F.pil_to_tensor(pil))
        boxes, labels, segms = self._targets[image_id]
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes.copy()), format="XYXY",
                                              canvas_size=(height, width)),
            "labels": torch.from_numpy(labels.copy()),
        }
        if self.masks:
            target["masks"] = tv_tensors.Mask(torch.from_numpy(self._decode(segms, height, width)))
        target["image_id"] = int(image_id)
        target["orig_size"] = torch.tensor([height, width], dtype=torch.int64)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _decode(self, segms: list, height: int, width: int) -> np.ndarray:
        """The (N, height, width) uint8 masks of N segmentations (checked at construction)."""
        if not segms:
            return np.zeros((0, height, width), dtype=np.uint8)
        rles = [_to_rle(segm, height, width, f"{self.ann_file}") for segm in segms]
        return np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.ann_file}, images={len(self)}, classes={self.num_classes - 1}, "
                f"train={self.train}, masks={self.masks})")


def collate_detection(batch: list[Sample | None]) -> tuple[list, list[dict[str, Any]], int]:
    """Batch detection samples as lists, dropping ``None`` ones (unreadable images).

    Returns ``(images, targets, num_skipped)``: ``images`` a list of B (3, H_i, W_i) tensors,
    ``targets`` the B matching dicts, and ``num_skipped`` the number of ``None`` samples dropped
    (B + num_skipped == len(batch); B may be 0).
    """
    kept = [sample for sample in batch if sample is not None]
    return [sample[0] for sample in kept], [sample[1] for sample in kept], len(batch) - len(kept)


def build_coco_folder(root: str | os.PathLike | None, split: str, transforms: Callable | None, *,
                      train: bool, masks: bool = True) -> CocoDetection:
    """Open split ``split`` of a COCO-format tree: ``ROOT/{split}/`` + ``ROOT/annotations/instances_{split}.json``.

    That is the layout of COCO itself (``split="train2017"``, ``"val2017"``) and of the built-in
    dataset (``"train"``, ``"val"``), which ``root=None`` opens (generated on first use by
    ``builtin_coco_root()``). Raises ``FileNotFoundError`` naming both expected paths if either
    is missing.
    """
    if root is None:

        root = builtin_coco_root()
    if not split or "/" in split or split in (".", ".."):
        raise ValueError(f"split must be a folder name such as 'train' or 'val2017', got {split!r}")
    base = Path(root).expanduser()
    img_dir, ann_file = base / split, base / "annotations" / f"instances_{split}.json"
    if not img_dir.is_dir() or not ann_file.is_file():
        missing = " and ".join(str(p) for p, ok in ((img_dir, img_dir.is_dir()), (ann_file, ann_file.is_file()))
                               if not ok)
        raise FileNotFoundError(f"COCO split {split!r} not found under {base}: expected images in {img_dir}/ and "
                                f"annotations in {ann_file}; missing: {missing}")
    return CocoDetection(img_dir, ann_file, transforms, train=train, masks=masks)

