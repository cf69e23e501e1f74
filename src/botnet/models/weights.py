"""Load a checkpoint into the layers of a model that match it by name and shape, with a report.

The paper initialises BoTNet from an ImageNet ResNet, its MHSA layers staying random (footnote 6).
``load_matching`` does exactly that for torchvision, timm and our own files: names are the same
(torchvision layout), the replaced 3x3 convs do not match anything, and the report lists what was
loaded, what the model kept and what the file had that was not used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["LoadReport", "load_matching", "extract_state_dict"]

_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.body.")


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not (or not usable) in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    shape_mismatch: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # name, file, model

    def summary(self, limit: int = 12) -> str:
        def names(xs):
            xs = list(xs)
            return ", ".join(xs[:limit]) + (f", ... ({len(xs) - limit} more)" if len(xs) > limit else "")

        lines = [f"loaded {len(self.loaded)} tensors"]
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


def extract_state_dict(obj) -> dict[str, torch.Tensor]:
    """A state dict from a file's content: a plain state dict, or a checkpoint holding one under
    'model', 'state_dict', 'model_state' or 'ema'; DDP / compile / wrapper prefixes are removed."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("expected a state dict (name -> tensor) or a checkpoint with a 'model' or 'state_dict' entry")
    out = {}
    for k, v in obj.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def load_matching(model: nn.Module, source: str | os.PathLike | dict) -> LoadReport:
    """Copy every tensor of ``source`` whose name and shape match the model; report the rest.
    Position tables of another resolution are resized by the model's own loading hooks."""
    if not isinstance(source, dict):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"pretrained checkpoint {str(source)!r} not found")
        source = torch.load(source, map_location="cpu", weights_only=False)
    sd = extract_state_dict(source)
    own = model.state_dict()
    report = LoadReport()
    usable = {}
    for k, v in sd.items():
        if k not in own:
            report.unexpected.append(k)
        elif v.shape != own[k].shape and not _resizable_table(k):
            report.shape_mismatch.append((k, tuple(v.shape), tuple(own[k].shape)))
        else:
            usable[k] = v
    result = model.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    report.missing = sorted(set(result.missing_keys) - {n for n, _, _ in report.shape_mismatch})
    return report


def _resizable_table(name: str) -> bool:
    return name.endswith(("pos.rel_height", "pos.rel_width", "pos.emb_height", "pos.emb_width"))
