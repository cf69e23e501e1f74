"""Weight files: load into matching layers with a report, save and load safetensors / state dicts
with a model card, and rebuild a model from a file.

The paper initialises BoTNet from an ImageNet ResNet, its MHSA layers staying random (footnote 6).
``load_matching`` does exactly that for torchvision, timm and our own files: names are the same
(torchvision layout; timm's ``resnet*`` / ``seresnet*`` use it too, SE as ``se.fc1`` / ``se.fc2``),
the replaced 3x3 convs do not match anything, and the report lists what was loaded, what the model
kept and what the file had that was not used. Files in another layout are renamed first by a small
explicit key map (``KEY_MAPS``: timm's ``legacy_seresnet*`` / Cadene's SENets).

``save_weights(model, "m.safetensors")`` (or ``.pt`` / ``.pth``, a plain state dict) writes the
weights and ``m.json`` beside them, the model card: model name, architecture, input size,
normalization, class names, metrics, botnet version and the sha256 of the weight file.
``load_model(path)`` rebuilds the model from such a pair or from a ``botnet train`` checkpoint.

Files are read and written by ``botnet.checkpoint`` (its safe-load policy: a stored sha256 checked
first, then ``torch.load(weights_only=False)``, since training checkpoints hold RNG states): load
only files you trust, or use safetensors.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import (Checkpoint, card_path, checkpoint_of, file_sha256, is_state_dict, load_checkpoint,
                          open_checkpoint, read_card, write_atomic)
from .timm_botnets import IMAGENET_MEAN, IMAGENET_STD
from .. import __version__
from ._registry import model_entrypoint

__all__ = [
    "KEY_MAPS", "LoadReport", "extract_state_dict", "read_state_dict", "remap_keys", "load_matching",
    "load_weights", "save_weights", "model_card", "read_card", "card_from_checkpoint", "load_model",
    "NO_WEIGHTS_MESSAGE", "card_path", "match_weights",
]

log = logging.getLogger("botnet.weights")

_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.body.")
FORMATS = {".safetensors": "safetensors", ".pt": "torch", ".pth": "torch"}
CARD_VERSION = 1
NO_WEIGHTS_MESSAGE = (
    "botnet ships no downloadable weights; pass the path of a weight file instead: a .safetensors/.pt/.pth "
    "file written by botnet.models.weights.save_weights, a `botnet train` checkpoint, or a torchvision / timm "
    "ResNet or SE-ResNet state dict"
)

# name -> ordered (regex, replacement) rules applied to every key of a file in that layout
KEY_MAPS: dict[str, tuple[tuple[str, str], ...]] = {
    # timm legacy_seresnet* (timm/models/senet.py) and Cadene's pretrainedmodels se_resnet*: the stem
    # in layer0, SE as se_module, the classifier as last_linear. Those SENets are ResNet v1 (stride on
    # conv1) and pool with ceil_mode: build ours with stride_in_1x1=True, act="relu" to match them.
    "senet_legacy": (
        (r"^layer0\.conv1\.", "conv1."),
        (r"^layer0\.bn1\.", "bn1."),
        (r"\.se_module\.", ".se."),
        (r"^last_linear\.", "fc."),
    ),
}


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not (or not usable) in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    shape_mismatch: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # name, file, model
    key_map: str | None = None  # the KEY_MAPS entry the file's names went through, if any

    @property
    def complete(self) -> bool:
        """Every tensor of the model came from the file and the file had nothing else."""
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self, limit: int = 12) -> str:
        def names(xs):
            xs = list(xs)
            return ", ".join(xs[:limit]) + (f", ... ({len(xs) - limit} more)" if len(xs) > limit else "")

        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.key_map:
            lines.append(f"names mapped with {self.key_map!r}")
        if self.missing:
            lines.append(f"kept as initialised ({len(self.missing)}): {names(self.missing)}")
        if self.unexpected:
            lines.append(f"in the file but not in the model ({len(self.unexpected)}): {names(self.unexpected)}")
        if self.shape_mismatch:
            lines.append(
                f"shape differs, kept as initialised ({len(self.shape_mismatch)}): "
                + names(f"{n} {tuple(a)} vs {tuple(b)}" for n, a, b in self.shape_mismatch)
            )
        return "; ".join(lines)


def extract_state_dict(obj, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from a file's content: a plain state dict, or a checkpoint holding one under
    'model', 'state_dict' or 'model_state' ('ema', 'state_dict_ema' or 'model_ema' with
    ``use_ema``); DDP / compile / EMA / wrapper prefixes are removed."""
    if use_ema:
        ema = None
        if isinstance(obj, dict):
            ema = next((obj[k] for k in ("ema", "state_dict_ema", "model_ema") if isinstance(obj.get(k), dict)), None)
        if ema is None:
            raise ValueError("use_ema: the checkpoint has no EMA weights (botnet train writes them with run.ema=true)")
        obj = {k: v for k, v in ema.items() if k != "n_averaged"}  # AveragedModel's counter
    elif isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not is_state_dict(obj):
        raise ValueError("expected a state dict (name -> tensor) or a checkpoint with a 'model' or 'state_dict' entry")
    out = {}
    for k, v in obj.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def _weights_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path.name}: weight files end in {', '.join(FORMATS)} (safetensors or a torch state dict)")
    return fmt


def _read_file(path: str | os.PathLike):
    return load_checkpoint(path, what="weights file")


def read_state_dict(source: str | os.PathLike | dict, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of a .safetensors file, a torch file (state dict or checkpoint), or a dict."""
    return extract_state_dict(source if isinstance(source, dict) else _read_file(source), use_ema)


def remap_keys(sd: dict[str, torch.Tensor], key_map: str | Sequence[tuple[str, str]] | None = "auto"):
    """Rename the keys of ``sd``. ``key_map``: a ``KEY_MAPS`` name, explicit (regex, replacement)
    rules, None (no renaming) or "auto" (the map whose layout the keys show). Returns (name, dict)."""
    if key_map == "auto":
        legacy = any(k.startswith("layer0.conv1.") or ".se_module." in k or k.startswith("last_linear.") for k in sd)
        key_map = "senet_legacy" if legacy else None
    if key_map is None:
        return None, sd
    if isinstance(key_map, str):
        if key_map not in KEY_MAPS:
            raise ValueError(f"unknown key map {key_map!r}; known: {sorted(KEY_MAPS)}")
        name, rules = key_map, KEY_MAPS[key_map]
    else:
        name, rules = "custom", tuple(key_map)
    out = {}
    for k, v in sd.items():
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return name, out


def match_weights(model: nn.Module, source, key_map="auto", use_ema: bool = False) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """The tensors of ``source`` that fit ``model`` (name and shape; position tables of another size
    count, the model's loading hooks resize them), and the report, before anything is loaded."""
    map_name, sd = remap_keys(read_state_dict(source, use_ema), key_map)
    own = model.state_dict()
    report = LoadReport(key_map=map_name)
    usable = {}
    for k, v in sd.items():
        if k not in own:
            report.unexpected.append(k)
        elif v.shape != own[k].shape and not _resizable_table(k, v.shape, own[k].shape):
            report.shape_mismatch.append((k, tuple(v.shape), tuple(own[k].shape)))
        else:
            usable[k] = v
    report.loaded = sorted(usable)
    report.missing = sorted(set(own) - set(usable) - {n for n, _, _ in report.shape_mismatch})
    return usable, report


def load_matching(model: nn.Module, source: str | os.PathLike | dict, key_map="auto", use_ema: bool = False) -> LoadReport:
    """Copy every tensor of ``source`` whose name and shape match the model; report the rest.
    Position tables of another resolution are resized by the model's own loading hooks."""
    usable, report = match_weights(model, source, key_map, use_ema)
    model.load_state_dict(usable, strict=False)
    return report


def load_weights(model: nn.Module, source: str | os.PathLike | dict, *, strict: bool = False, use_ema: bool = False,
                 key_map="auto") -> LoadReport:
    """Load a .safetensors / .pt / .pth file (ours, a ``botnet train`` checkpoint, torchvision, timm)
    into ``model``. ``strict=False`` loads what matches and reports the rest (``load_matching``);
    ``strict=True`` raises ValueError, leaving the model untouched, unless every tensor matches both ways."""
    usable, report = match_weights(model, source, key_map, use_ema)
    if strict and not report.complete:
        where = source if not isinstance(source, dict) else "the state dict"
        raise ValueError(f"{where} does not match {getattr(model, 'model_name', type(model).__name__)}: {report.summary()}")
    model.load_state_dict(usable, strict=False)
    return report


def _resizable_table(name: str, file_shape, own_shape) -> bool:
    """A position table of another length (another feature-map size) with the same head dimension:
    the model's loading hook resizes it. Another head dimension is a model of another width."""
    return (name.endswith(("pos.rel_height", "pos.rel_width", "pos.emb_height", "pos.emb_width"))
            and len(file_shape) == len(own_shape) and tuple(file_shape[1:]) == tuple(own_shape[1:]))


# saving ------------------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside torch.compile / DDP / AveragedModel wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _architecture(model: nn.Module) -> dict | None:
    """Keyword arguments that rebuild ``model`` with ``create_model(model.model_name, **arch)``."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        return None
    return {"num_classes": model.num_classes, "in_chans": model.in_chans, "img_size": list(model.img_size),
            **dataclasses.asdict(cfg)}


def model_card(model: nn.Module, **fields) -> dict:
    """The card of ``model``: what rebuilds and feeds it; ``fields`` add to or replace entries
    (``classes``, ``metrics``, ``mean``, ``std``, ``crop_pct``, ``input_size``, anything else)."""

    model = _unwrap(model)
    img = getattr(model, "img_size", None)
    card = {
        "card_version": CARD_VERSION,
        "kind": "classification",
        "model_name": getattr(model, "model_name", None),
        "architecture": _architecture(model),
        "input_size": [getattr(model, "in_chans", 3), *img] if img else None,
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "num_classes": getattr(model, "num_classes", None),
        "classes": None,
        "metrics": {},
        "num_params": sum(p.numel() for p in model.parameters()),
        "botnet_version": __version__,
    }
    card.update(fields)
    classes, n = card.get("classes"), card.get("num_classes")
    if classes is not None and n is not None and len(classes) != n:
        raise ValueError(f"the card names {len(classes)} classes but the model has {n} outputs")
    return card


def save_weights(model: nn.Module, path: str | os.PathLike, card: dict | None = None) -> Path:
    """Write ``model``'s state dict to ``path`` (.safetensors, or .pt / .pth for ``torch.save``) and
    its model card to ``<stem>.json`` beside it; ``card`` adds fields (``classes``, ``metrics``, ...).
    Both files are written atomically. Returns the card's path."""
    path = Path(path)
    fmt = _weights_format(path)
    model = _unwrap(model)
    info = model_card(model, **(card or {}))
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        meta = {"format": "pt", "model_name": str(info.get("model_name")), "botnet_version": info["botnet_version"]}
        write_atomic(path, lambda tmp: save_file(sd, tmp, metadata=meta))
    else:
        write_atomic(path, lambda tmp: torch.save(sd, tmp))
    info.update(weights_file=path.name, weights_format=fmt, sha256=file_sha256(path))
    out = card_path(path)
    write_atomic(out, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2, default=str) + "\n"))
    return out


def card_from_checkpoint(ckpt: Checkpoint | dict) -> dict:
    """The model card of a ``botnet train`` classification checkpoint (config, classes, metrics)."""

    ckpt = ckpt if isinstance(ckpt, Checkpoint) else checkpoint_of(ckpt)
    cfg = ckpt.config or {}
    data, mcfg = cfg.get("data") or {}, cfg.get("model") or {}
    img = data.get("img_size", ckpt.get("img_size", 224))
    eval_size = data.get("eval_size") or img
    classes = list(ckpt.classes or [])
    arch = {"num_classes": len(classes), "img_size": img, **(mcfg.get("kwargs") or {})}
    return {
        "card_version": CARD_VERSION, "kind": ckpt.task, "model_name": ckpt.model_name,
        "architecture": arch, "input_size": [arch.get("in_chans", 3), eval_size, eval_size],
        "crop_pct": data.get("crop_pct", 0.875), "interpolation": "bilinear",
        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "num_classes": len(classes), "classes": classes,
        "metrics": ckpt.metrics, "epoch": ckpt.epoch, "step": ckpt.step,
        "botnet_version": __version__,
    }


def _open(source: str | os.PathLike | dict | Checkpoint) -> Checkpoint:
    if isinstance(source, Checkpoint):
        return source
    if isinstance(source, dict):
        ckpt = checkpoint_of(source)
        if ckpt.kind != "train":
            raise ValueError("load_model needs a botnet train checkpoint dict (with model_name, model, config)")
        return ckpt
    return open_checkpoint(source, strict=False)


def load_model(source: str | os.PathLike | dict | Checkpoint, *, use_ema: bool = False) -> tuple[nn.Module, dict]:
    """Rebuild a classifier from a weight file with its card (``save_weights``) or from a
    ``botnet train`` checkpoint (a path, the loaded dict or its ``open_checkpoint``). Returns
    ``(model.eval(), card)``."""

    ckpt = _open(source)
    if ckpt.kind == "other":
        read_card(ckpt.path)  # FileNotFoundError: a bare state dict without its card
    if ckpt.task != "classification":
        raise ValueError(f"{ckpt.where} is a {ckpt.task} checkpoint; load_model rebuilds classifiers")
    card = card_from_checkpoint(ckpt) if ckpt.kind == "train" else ckpt.card
    if not card.get("architecture"):
        raise ValueError(f"{ckpt.where}: its card describes no classifier architecture (kind {card.get('kind')!r})")
    model = model_entrypoint(card["model_name"])(**card["architecture"])
    model.model_name = card["model_name"]
    state = ckpt.model_state(use_ema) if ckpt.kind == "train" else extract_state_dict(ckpt.state, use_ema)
    usable, report = match_weights(model, extract_state_dict(state), None, False)
    if not report.complete:
        raise ValueError(f"{ckpt.where} does not match the {card['model_name']} its card describes: {report.summary()}")
    model.load_state_dict(usable)
    return model.eval(), card
