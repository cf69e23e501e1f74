"""Top-k class predictions for image files with a trained classifier (``botnet predict``).

The checkpoint is a ``botnet train`` checkpoint or a weight file with its model card
(``botnet.models.weights.save_weights``); images are preprocessed as ``botnet eval`` does:
``eval_transform`` is ``botnet.data.transforms.build_eval_transform`` (resize the short side to
floor(size / crop_pct), center crop, normalize with the card's mean and std).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

from ..checkpoint import Checkpoint
from ..data.transforms import build_eval_transform
from ..engine.launch import resolve_device
from ..data.folder import DECODE_ERRORS, load_rgb
from ..models.precision import precision_context, prepare_inference
from ..models.weights import load_model

__all__ = ["IMAGE_SUFFIXES", "expand_image_paths", "eval_transform", "predict_classifier", "resolve_device"]

log = logging.getLogger("botnet.inference")
eval_transform = build_eval_transform  # the card's eval transform: the one ``botnet eval`` uses (floor, as timm)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def expand_image_paths(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given (whatever their suffix), folders searched recursively for image suffixes,
    sorted; a path that does not exist is a FileNotFoundError, no image at all a ValueError."""
    out: list[Path] = []
    items = list(items)
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"image or folder {str(p)!r} not found")
    if not out:
        raise ValueError(f"no images found in {[str(i) for i in items]} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return out


@torch.no_grad()
def predict_classifier(checkpoint: str | os.PathLike | dict | Checkpoint, paths: Iterable[str | os.PathLike], *,
                       topk: int = 5, batch_size: int = 16, device: str | torch.device = "auto",
                       use_ema: bool = False, precision: str = "auto") -> dict:
    """Classify image files (folders are searched recursively).

    Args:
        checkpoint: a ``botnet train`` checkpoint (path, loaded dict or ``open_checkpoint``) or a weight
            file with its card.
        paths: image files and folders.
        topk: classes per image (at most the number of classes).
        device: "auto" (CUDA when available), "cpu", "cuda", ...
        use_ema: use the EMA weights of a training checkpoint.
        precision: "auto" / "fp32" (float32) or "bf16" (``botnet.models.precision.bf16_classifier``).

    Returns:
        {"model", "checkpoint", "predictions": [{"image": path, "topk": [{"label": name,
        "index": class index, "score": probability}, ...]}, ...], "skipped": [{"image", "error"}, ...]}.
        Unreadable images are skipped with a warning and listed under "skipped".
    """

    if topk < 1 or batch_size < 1:
        raise ValueError(f"topk and batch_size must be >= 1, got {topk} and {batch_size}")
    files = expand_image_paths(paths)
    model, card = load_model(checkpoint, use_ema=use_ema)
    dev = resolve_device(device)
    model, amp, used = prepare_inference(model.to(dev), "classification", precision, dev)
    classes = card.get("classes") or [str(i) for i in range(card["num_classes"])]
    k = min(topk, len(classes))
    tf = build_eval_transform(card)
    where = checkpoint.path if isinstance(checkpoint, Checkpoint) else checkpoint
    where = None if isinstance(where, dict) else where
    result = {"model": card["model_name"], "checkpoint": None if where is None else str(where), "precision": used,
              "predictions": [], "skipped": []}
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    if len(batches) > 1:
        from tqdm import tqdm

        batches = tqdm(batches, desc="predict", unit="batch", disable=None, file=sys.stderr)
    for batch in batches:
        images, names = [], []
        for path in batch:
            try:
                images.append(tf(load_rgb(path)))
                names.append(str(path))
            except DECODE_ERRORS as e:
                log.warning("skipping unreadable image %s (%s: %s)", path, type(e).__name__, e)
                result["skipped"].append({"image": str(path), "error": f"{type(e).__name__}: {e}"})
        if not images:
            continue
        with precision_context(dev, amp):
            logits = model(torch.stack(images).to(dev))
        probs = logits.float().softmax(-1).cpu()
        top = probs.topk(k, dim=-1)
        for name, p, idx in zip(names, top.values.tolist(), top.indices.tolist()):
            result["predictions"].append(
                {"image": name, "topk": [{"label": classes[i], "index": i, "score": s} for s, i in zip(p, idx)]})
    return result
