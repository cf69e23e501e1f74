"""Run a trained detector on image files: drawn predictions (the paper's Figs 10-11) and a JSON.

``predict_images(model, paths, class_names)`` yields one record per image; ``draw_detections``
draws masks (filled and outlined), boxes and "name score" labels on filled backgrounds
(``draw.draw_objects``); ``predict_to_folder`` writes the drawn images and ``detections.json``
(``botnet predict``). An image of a COCO-layout folder (ROOT/<split>/ with
ROOT/annotations/instances_<split>.json) is drawn as a ground truth | prediction panel, and its
record says how many ground-truth objects larger than 16 x 16 px the detections found
(``evaluate.found_objects``); ``recall_summary`` totals them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F

from .draw import coco_ground_truth, draw_objects, side_by_side
from .evaluate import found_objects
from ..data.folder import load_rgb
from ..models.precision import precision_context

__all__ = ["predict_images", "draw_detections", "predict_to_folder", "recall_summary", "MIN_SIDE_COUNTED"]

log = logging.getLogger("botnet")
MIN_SIDE_COUNTED = 16  # ground-truth objects larger than this in both sides count for the recall


@torch.no_grad()
def predict_images(model, paths: list[Path], class_names: list[str], score_thresh: float = 0.5,
                   device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None) -> Iterator[dict]:
    """For each readable image: {"path", "image" (3,H,W) uint8, "boxes" (N,4) xyxy, "labels" (N,)
    1-based, "names", "scores" (N,), optional "masks" (N,H,W) bool}, detections scoring >= score_thresh.
    Unreadable files are skipped with a warning (a record with "error" instead). ``amp_dtype``:
    autocast the forward to it (None: no autocast; a bfloat16 model comes from
    ``botnet.models.precision.bf16_detector`` instead)."""

    model.eval()
    for path in paths:
        try:
            img = F.pil_to_tensor(load_rgb(path))
        except Exception as e:  # unreadable or not an image
            log.warning("skipping %s: %s", path, e)
            yield {"path": str(path), "error": str(e)}
            continue
        with precision_context(device, amp_dtype):
            out = model([F.to_dtype(img, torch.float32, scale=True).to(device)])[0]
        keep = out["scores"] >= score_thresh
        rec = {"path": str(path), "image": img, "boxes": out["boxes"][keep].cpu(), "labels": out["labels"][keep].cpu(),
               "scores": out["scores"][keep].cpu()}
        rec["names"] = [class_names[int(i) - 1] for i in rec["labels"]]
        if "masks" in out:
            rec["masks"] = (out["masks"][keep][:, 0] > 0.5).cpu()
        yield rec


def draw_detections(rec: dict) -> torch.Tensor:
    """The image of ``rec`` (from ``predict_images``), enlarged to be legible, with masks, boxes and
    "name score" labels (``draw.draw_objects``): (3, f*H, f*W) uint8."""
    return draw_objects(rec["image"], rec["boxes"], rec["labels"], rec["names"], rec["scores"], rec.get("masks"))


def _ground_truth(rec: dict, score_thresh: float) -> tuple[dict | None, dict | None]:
    """(ground truth of the image or None, its JSON summary or None)."""
    gt = coco_ground_truth(rec["path"])
    if gt is None:
        return None, None
    counted, found = found_objects(gt["boxes"], gt["labels"], rec["boxes"], rec["labels"], rec["scores"],
                                   score_thresh=score_thresh, min_side=MIN_SIDE_COUNTED)
    return gt, {"objects": len(gt["boxes"]), "counted": int(counted.sum()), "found": int((found & counted).sum()),
                "found_all_sizes": int(found.sum()), "iou_thresh": 0.5, "score_thresh": score_thresh,
                "min_side": MIN_SIDE_COUNTED}


def _draw(rec: dict, gt: dict | None, summary: dict | None) -> torch.Tensor:
    pred = draw_detections(rec)
    if gt is None:
        return pred
    truth = draw_objects(rec["image"], gt["boxes"], gt["labels"], gt["names"], None, gt["masks"])
    titles = (f"ground truth: {summary['objects']} objects",
              f"prediction: {len(rec['boxes'])} (score >= {summary['score_thresh']:g}), "
              f"found {summary['found']} of {summary['counted']} > {MIN_SIDE_COUNTED} px")
    return side_by_side(truth, pred, titles)


def recall_summary(records: list[dict]) -> dict | None:
    """{"images", "counted", "found", "recall"} over the records with ground truth (None if none has):
    the ground-truth objects larger than 16 x 16 px found at IoU 0.5 (see ``predict_to_folder``)."""
    gts = [r["ground_truth"] for r in records if "ground_truth" in r]
    if not gts:
        return None
    counted, found = sum(g["counted"] for g in gts), sum(g["found"] for g in gts)
    return {"images": len(gts), "counted": counted, "found": found, "recall": found / counted if counted else None}


def _record_json(rec: dict) -> dict:
    if "error" in rec:
        return {"image": rec["path"], "error": rec["error"]}
    dets = [{"label": n, "label_id": int(lbl), "score": round(float(s), 4), "box_xyxy": [round(float(v), 1) for v in b]}
            for n, lbl, s, b in zip(rec["names"], rec["labels"], rec["scores"], rec["boxes"])]
    if "masks" in rec:
        for d, m in zip(dets, rec["masks"]):
            d["mask_area"] = int(m.sum())
    h, w = rec["image"].shape[-2:]
    return {"image": rec["path"], "height": int(h), "width": int(w), "detections": dets}


def predict_to_folder(model, paths: list[Path], class_names: list[str], output: str | Path, score_thresh: float = 0.5,
                      device: torch.device | str = "cpu", progress: bool = False,
                      amp_dtype: torch.dtype | None = None) -> Iterator[dict]:
    """Run ``model`` on ``paths``, draw each image's detections into ``output/<stem>_pred.png`` and
    write every record to ``output/detections.json`` when done. Yields each image's JSON record
    ({"image", "height", "width", "detections", "drawn"} or {"image", "error"}) as it is made.
    An image with COCO ground truth (``draw.coco_ground_truth``) is drawn as a ground truth |
    prediction panel and its record gets "ground_truth": {"objects", "counted" (larger than 16 x 16
    px), "found" (of those, matched by a detection of its class at IoU >= 0.5 scoring >= score_thresh),
    "found_all_sizes", ...}."""
    from PIL import Image

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    it = predict_images(model, paths, class_names, score_thresh, device, amp_dtype)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(paths), desc="predict")
    for rec in it:
        records.append(_record_json(rec))
        if "error" not in rec:
            gt, summary = _ground_truth(rec, score_thresh)
            if summary is not None:
                records[-1]["ground_truth"] = summary
            png = out / f"{Path(rec['path']).stem}_pred.png"
            Image.fromarray(_draw(rec, gt, summary).permute(1, 2, 0).numpy()).save(png)
            records[-1]["drawn"] = str(png)
        yield records[-1]
    (out / "detections.json").write_text(json.dumps(records, indent=1))
