"""Detectors from recipes and checkpoints: ``build_detector_from_config`` (a ``DetTrainConfig``),
``load_detector`` (a ``botnet train`` detection checkpoint, or exported safetensors weights with
their card) and ``det_data_root`` (the recipe's COCO-format data, or the built-in scenes)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..checkpoint import Checkpoint, open_checkpoint
from ..config import DetTrainConfig, config_from_dict
from ..data import builtin_coco_root
from .builders import create_detector

__all__ = ["build_detector_from_config", "load_detector", "det_data_root"]


def det_data_root(cfg: DetTrainConfig) -> Path:
    """The data root of ``cfg``: ``data.root``, or the built-in scenes (generated on first use)."""
    d = cfg.data
    if d.root is not None:
        return Path(d.root)
    return builtin_coco_root(num_train=d.builtin_train, num_val=d.builtin_val, img_size=d.builtin_img_size)


def _set_batchnorm(model: nn.Module, momentum: float | None, eps: float | None) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if momentum is not None:
                m.momentum = momentum
            if eps is not None:
                m.eps = eps


def build_detector_from_config(cfg: DetTrainConfig, num_classes: int, load_backbone: bool = True) -> nn.Module:
    """``create_detector`` with the recipe's model section (BatchNorm momentum / eps set on every
    layer); ``load_backbone``: load ``model.backbone_weights`` (a new run, not a resumed one)."""
    m = cfg.model
    model = create_detector(m.name, num_classes=num_classes, img_size=cfg.data.img_size,
                            backbone_weights=m.backbone_weights if load_backbone else None,
                            backbone_kwargs=m.backbone_kwargs, **m.kwargs)
    _set_batchnorm(model, m.bn_momentum, m.bn_eps)
    return model


def load_detector(source: str | Path | Checkpoint, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode on ``device``, checkpoint dict) from a detection checkpoint of
    ``botnet train``, or from a .safetensors file with its card (``botnet export --format
    safetensors``; the dict is then the card plus "model"). ``source``: a path or the
    ``open_checkpoint`` of one."""
    ckpt = source if isinstance(source, Checkpoint) else open_checkpoint(source, strict=False)
    if ckpt.kind == "weights" and (ckpt.task != "detection" or not ckpt.config):
        raise ValueError(f"{ckpt.where}: its card describes no detector (kind {ckpt.task!r}); "
                         "detector weights come from botnet export --format safetensors of a detection checkpoint")
    ckpt.require("detection")
    cfg = config_from_dict(ckpt.config, DetTrainConfig)
    model = build_detector_from_config(cfg, len(ckpt.classes) + 1, load_backbone=False)
    model.load_state_dict(ckpt.model_state())
    model.to(device).eval()
    return model, ckpt.as_dict()
