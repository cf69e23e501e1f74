"""Evaluate a model with published weights on an ImageFolder, preprocessed as its source evaluates it
(``botnet eval --model botnet26t_256 --data DIR``): the weights come from ``create_model(name,
pretrained=...)``, the transform from the model's pretrained config (timm's crop 0.95 / 0.94,
bicubic, ImageNet mean / std; ``botnet.data.transforms.build_eval_transform``), so the published
top-1 can be checked on one's own copy of ImageNet-1k val.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import DataLoader

from ..data import ImageFolderSafe, collate_skip_none
from ..data.transforms import build_eval_transform
from ..models import create_model
from ..models.precision import prepare_inference
from .classify import evaluate
from .launch import resolve_device

__all__ = ["evaluate_pretrained"]


def evaluate_pretrained(name: str, data_root: str | os.PathLike, weights: str | os.PathLike | None = None,
                        batch_size: int = 64, workers: int = 2, device: str = "auto", img_size: int | None = None,
                        precision: str = "auto", **model_kwargs) -> dict:
    """Top-1 / top-5 / loss of ``name`` with ``weights`` (default: its published ones, cached or
    fetched) on ``data_root/val`` (or ``data_root`` itself, one folder per class in index order).

    ``precision``: "auto" / "fp32" (float32) or "bf16" (``botnet.models.precision.bf16_classifier``).
    ``model_kwargs`` go to ``create_model`` (e.g. ``num_classes`` of a fine-tuned file). Raises
    ValueError / FileNotFoundError (``PretrainedNotFound``) with a one-line message."""
    model = create_model(name, pretrained=weights or True, **model_kwargs)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "input_size" not in cfg:
        raise ValueError(f"{name} has no pretrained config (input size, crop, mean / std) to evaluate it with")
    root = Path(data_root).expanduser()
    folder = root / "val" if (root / "val").is_dir() else root
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} not found (one sub-folder per class)")
    ds = ImageFolderSafe(folder, transform=build_eval_transform(cfg, img_size))
    if len(ds.classes) != model.num_classes:
        raise ValueError(f"{folder} has {len(ds.classes)} class folders; {name} has {model.num_classes} classes")
    dev = resolve_device(device)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_skip_none,
                        pin_memory=dev.type == "cuda")
    run, amp, used = prepare_inference(model.to(dev), "classification", precision, dev)
    res = evaluate(run, loader, dev, amp)
    res.update(model=name, checkpoint=str(weights) if weights else "published weights", epoch=None, ema=False,
               precision=used,
               crop_pct=cfg.get("crop_pct"), interpolation=cfg.get("interpolation"),
               published_top1=cfg.get("top1"), published_top1_source=cfg.get("top1_source"))
    return res
