"""Run a trained detector on image files: drawn predictions (the paper's Figs 10-11) and a JSON.

``predict_images(model, paths, class_names)`` yields one record per image; ``draw_detections``
draws masks, boxes, class names and scores over an image with torchvision's drawing utilities;
``predict_to_folder`` writes the drawn images and ``detections.json`` (``botnet predict``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as F
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

__all__ = ["predict_images", "draw_detections", "predict_to_folder"]

log = logging.getLogger("botnet")
_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


@torch.no_grad()
def predict_images(model, paths: list[Path], class_names: list[str], score_thresh: float = 0.5,
                   device: torch.device | str = "cpu") -> Iterator[dict]:
    """For each readable image: {"path", "image" (3,H,W) uint8, "boxes" (N,4) xyxy, "labels" (N,)
    1-based, "names", "scores" (N,), optional "masks" (N,H,W) bool}, detections scoring >= score_thresh.
    Unreadable files are skipped with a warning (a record with "error" instead)."""
    from ..data.folder import load_rgb

    model.eval()
    for path in paths:
        try:
            img = F.pil_to_tensor(load_rgb(path))
        except Exception as e:  # unreadable or not an image
            log.warning("skipping %s: %s", path, e)
            yield {"path": str(path), "error": str(e)}
            continue
        out = model([F.to_dtype(img, torch.float32, scale=True).to(device)])[0]
        keep = out["scores"] >= score_thresh
        rec = {"path": str(path), "image": img, "boxes": out["boxes"][keep].cpu(), "labels": out["labels"][keep].cpu(),
               "scores": out["scores"][keep].cpu()}
        rec["names"] = [class_names[int(i) - 1] for i in rec["labels"]]
        if "masks" in out:
            rec["masks"] = (out["masks"][keep][:, 0] > 0.5).cpu()
        yield rec


def draw_detections(rec: dict, width: int = 2) -> torch.Tensor:
    """The image of ``rec`` (from ``predict_images``) with masks, boxes and "name score" labels: (3,H,W) uint8."""
    img = rec["image"]
    colors = [_PALETTE[int(i) % len(_PALETTE)] for i in rec["labels"]]
    if len(rec["boxes"]) == 0:
        return img
    if "masks" in rec and rec["masks"].any():
        img = draw_segmentation_masks(img, rec["masks"], alpha=0.45, colors=colors)
    labels = [f"{n} {s:.2f}" for n, s in zip(rec["names"], rec["scores"].tolist())]
    return draw_bounding_boxes(img, rec["boxes"], labels=labels, colors=colors, width=width)


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
                      device: torch.device | str = "cpu", progress: bool = False) -> Iterator[dict]:
    """Run ``model`` on ``paths``, draw each image's detections into ``output/<stem>_pred.png`` and
    write every record to ``output/detections.json`` when done. Yields each image's JSON record
    ({"image", "height", "width", "detections", "drawn"} or {"image", "error"}) as it is made."""
    from PIL import Image

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    it = predict_images(model, paths, class_names, score_thresh, device)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(paths), desc="predict")
    for rec in it:
        records.append(_record_json(rec))
        if "error" not in rec:
            png = out / f"{Path(rec['path']).stem}_pred.png"
            Image.fromarray(draw_detections(rec).permute(1, 2, 0).numpy()).save(png)
            records[-1]["drawn"] = str(png)
        yield records[-1]
    (out / "detections.json").write_text(json.dumps(records, indent=1))
