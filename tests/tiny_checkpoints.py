"""Tiny classification checkpoints and images for the inference / export tests (no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import botnet
from botnet.config import TrainConfig, config_to_dict

CLASSES = ["circle", "square", "triangle"]


def make_checkpoint(path, classes=CLASSES, name="botnet_tiny", img_size=64, crop_pct=1.0, ema=False, seed=0) -> Path:
    """A checkpoint in the format of `botnet train` (``botnet.engine.trainer.Trainer.checkpoint``), random weights."""
    torch.manual_seed(seed)
    cfg = TrainConfig(name="tiny")
    cfg.model.name, cfg.data.img_size, cfg.data.crop_pct = name, img_size, crop_pct
    model = botnet.create_model(name, num_classes=len(classes), img_size=img_size, zero_init_last=False)
    ema_sd = None
    if ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.5), use_buffers=True)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)  # the EMA now differs from the model
        ema_sd = avg.state_dict()
    ckpt = {"model": model.state_dict(), "ema": ema_sd, "config": config_to_dict(cfg), "classes": list(classes),
            "model_name": name, "img_size": img_size, "metrics": {"top1": 50.0}, "kind": "classification",
            "epoch": 1, "step": 10}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def write_images(folder, n=3, size=(48, 64), seed=0) -> list[Path]:
    """``n`` random RGB PNGs under folder/ and folder/sub/ (H, W = size)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    paths = []
    for i in range(n):
        p = folder / ("sub" if i % 2 else "") / f"img{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return sorted(paths)
