"""COCO metrics with faster-coco-eval: the 12 numbers of pycocotools' ``COCOeval.summarize`` (AP,
AP50, AP75, AP small/medium/large, AR at 1/10/100 detections, AR small/medium/large) for boxes and masks.

``to_coco_results`` turns a detector's outputs into COCO result records (xywh boxes in original
pixels, category ids, RLE masks), ``evaluate_coco`` scores them against a ground-truth COCO object,
``evaluate_results_file`` scores a saved results JSON (the same numbers pycocotools' COCOeval
gives on the same files; tests/detection/test_det_evaluate.py checks that). As in pycocotools, a
metric whose area range has no ground truth (APl on a set without large objects) is -1, and
``format_coco_table`` prints it as "-".
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch

__all__ = ["METRIC_NAMES", "ALL_METRIC_NAMES", "to_coco_results", "evaluate_coco", "evaluate_results_file", "format_coco_table",
           "found_objects"]

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # the table's columns
ALL_METRIC_NAMES = METRIC_NAMES + ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")  # COCOeval.stats, in order


def to_coco_results(outputs: list[dict], image_ids: list[int], label_to_cat: dict[int, int],
                    mask_threshold: float = 0.5) -> list[dict]:
    """Detector outputs -> COCO result records.

    ``outputs[i]``: {boxes (N,4) xyxy, labels (N,), scores (N,), optional masks (N,1,H,W) in [0,1]}
    for image ``image_ids[i]``, at its original size. Masks are thresholded at ``mask_threshold`` and
    RLE-encoded."""
    from faster_coco_eval.core import mask as mask_util

    records = []
    for out, image_id in zip(outputs, image_ids):
        boxes = out["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        scores = out["scores"].detach().float().cpu().tolist()
        cats = [label_to_cat[int(lbl)] for lbl in out["labels"].cpu()]
        rles = None
        if "masks" in out:
            binary = (out["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
            rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        for j in range(len(scores)):
            rec = {"image_id": int(image_id), "category_id": cats[j], "bbox": [round(v, 2) for v in xywh[j]],
                   "score": round(scores[j], 5)}
            if rles is not None:
                rle = dict(rles[j])
                rle["counts"] = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
                rec["segmentation"] = rle
            records.append(rec)
    return records


def evaluate_coco(coco_gt, results: list[dict], iou_types=("bbox", "segm"), image_ids: list[int] | None = None) -> dict:
    """{"bbox": {"AP": .., "AP50": .., ..., "ARl": ..}, "segm": {...}}: the 12 ``ALL_METRIC_NAMES`` in
    percent, over ``image_ids`` (default: every image of ``coco_gt``); -1 (not a percentage) where
    the area range has no ground truth, as pycocotools. No detections: 0 where there is ground truth."""
    from faster_coco_eval import COCOeval_faster

    metrics = {}
    for iou_type in iou_types:
        if iou_type == "segm" and results and "segmentation" not in results[0]:
            raise ValueError("segm evaluation needs 'segmentation' in the results (a Faster R-CNN has none: use bbox)")
        with contextlib.redirect_stdout(io.StringIO()):
            dt = coco_gt.loadRes([dict(r) for r in results])
            ev = COCOeval_faster(coco_gt, dt, iouType=iou_type, print_function=lambda *a, **k: None)
            if image_ids is not None:
                ev.params.imgIds = sorted(int(i) for i in image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        metrics[iou_type] = {k: float(v) * 100 if v >= 0 else -1.0 for k, v in zip(ALL_METRIC_NAMES, ev.stats[:12])}
    return metrics


def evaluate_results_file(ann_file: str | Path, results_file: str | Path, iou_types=("bbox", "segm")) -> dict:
    """Score a saved COCO results JSON against ``ann_file`` (see ``evaluate_coco``)."""
    from faster_coco_eval import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
    results = json.loads(Path(results_file).read_text())
    return evaluate_coco(gt, results, iou_types)


def found_objects(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                  scores: torch.Tensor, iou_thresh: float = 0.5, score_thresh: float = 0.5,
                  min_side: float = 16.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Which ground-truth objects the detections find: (counted (N,) bool, found (N,) bool).

    ``gt_boxes`` (N, 4) and ``boxes`` (D, 4) are xyxy pixels, ``gt_labels`` (N,) / ``labels`` (D,)
    class ids, ``scores`` (D,). An object is counted when its box is larger than ``min_side`` x
    ``min_side`` (both sides longer than ``min_side``); it is found when a detection of its class
    scoring at least ``score_thresh`` overlaps it with box IoU >= ``iou_thresh``. Matching is
    one-to-one and greedy, highest score first, each detection taking the unmatched object of its
    class it overlaps most (as COCOeval matches). Recall = found[counted].sum() / counted.sum().
    """
    from torchvision.ops import box_iou

    gt_boxes, boxes = gt_boxes.float().reshape(-1, 4), boxes.float().reshape(-1, 4)
    sides = gt_boxes[:, 2:] - gt_boxes[:, :2]
    counted = (sides > min_side).all(1)
    found = torch.zeros(len(gt_boxes), dtype=torch.bool)
    keep = scores >= score_thresh
    if not keep.any() or not len(gt_boxes):
        return counted, found
    order = torch.argsort(scores[keep], descending=True)
    det_boxes, det_labels = boxes[keep][order], labels[keep][order]
    iou = box_iou(det_boxes, gt_boxes)  # (D', N)
    for d in range(len(det_boxes)):
        cand = iou[d].masked_fill(found | (gt_labels != det_labels[d]), -1.0)
        best = int(cand.argmax())
        if cand[best] >= iou_thresh:
            found[best] = True
    return counted, found


def format_coco_table(metrics: dict) -> str:
    """A text table: one row per IoU type, one column per AP metric; "-" where it is -1 (no ground truth)."""
    head = f"{'':6s}" + "".join(f"{k:>8s}" for k in METRIC_NAMES)
    rows = [head] + [f"{t:6s}" + "".join(f"{m[k]:8.2f}" if m[k] >= 0 else f"{'-':>8s}" for k in METRIC_NAMES)
                     for t, m in metrics.items()]
    return "\n".join(rows)
