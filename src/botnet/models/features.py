"""Feature extraction: ``create_model(name, features_only=True)`` returns a ``FeatureListNet``.

The same contract as timm's ``FeatureListNet`` (timm ``models/_features.py``), without needing
timm: ``forward`` returns a list of feature maps, one per ``out_indices`` entry of the model's
``feature_info`` (0: the stem's ``act1`` at stride 2, 1-4: ``layer1``..``layer4``, i.e. c2..c5), and
``feature_info`` answers ``channels()``, ``reduction()`` and ``module_name()``. The wrapper holds the
model's own modules up to the last one asked for, under their own names, so state dict keys are the
classifier's (``conv1.weight``, ``layer1.0.conv1.weight``, ...) without the head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["FeatureInfo", "FeatureListNet", "resolve_out_indices", "take_indices"]


def take_indices(n: int, indices: int | Sequence[int] | None = None) -> tuple[list[int], int]:
    """The feature indices ``forward_intermediates`` / ``prune_intermediate_layers`` take, with
    timm's semantics (``timm.models._features.feature_take_indices``, which lives in a private timm
    module and needs timm; tests/models/test_intermediates.py checks the two agree): None takes all
    ``n``, an int ``k`` the last ``k``, a sequence those indices (negative ones count from the end;
    order and repeats kept). Returns (indices, their maximum)."""
    if indices is None:
        indices = n
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"indices={indices} asks for the last {indices} of {n} features (1 to {n})")
        take = list(range(n - indices, n))
    else:
        take = [n + i if i < 0 else i for i in indices]
        bad = [i for i in take if not 0 <= i < n]
        if bad or not take:
            raise ValueError(f"feature indices must be in [{-n}, {n - 1}] (0: stem, 1-4: layer1-4), got {list(indices)}")
    return take, max(take)


def resolve_out_indices(out_indices: int | Sequence[int], n: int) -> tuple[int, ...]:
    """``out_indices`` as a tuple of indices into a feature_info of ``n`` entries; an int ``k``
    means the last ``k`` features (timm's convention), negative indices count from the end."""
    if isinstance(out_indices, int):
        if not 1 <= out_indices <= n:
            raise ValueError(f"out_indices={out_indices} asks for the last {out_indices} of {n} features")
        return tuple(range(n - out_indices, n))
    out = []
    for i in out_indices:
        if not isinstance(i, int) or not -n <= i < n:
            raise ValueError(f"out_indices entries must be ints in [{-n}, {n - 1}] (0: stem, 1-4: layer1-4), got {i!r}")
        out.append(i % n)
    if len(set(out)) != len(out) or out != sorted(out):
        raise ValueError(f"out_indices must be increasing without repeats, got {tuple(out_indices)}")
    return tuple(out)


class FeatureInfo:
    """timm's ``FeatureInfo`` interface over a model's ``feature_info`` list of dicts.

    ``idx=None`` reads the selected outputs (``out_indices``); an int or a list reads entries of the
    full list, as timm does. ``len()`` and ``[i]`` see the full list.
    """

    def __init__(self, feature_info: list[dict], out_indices: Sequence[int]):
        self.info = [dict(fi, index=i) for i, fi in enumerate(feature_info)]
        self.out_indices = tuple(out_indices)

    def from_other(self, out_indices: Sequence[int]) -> FeatureInfo:
        return FeatureInfo(self.info, resolve_out_indices(out_indices, len(self.info)))

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None):
        def pick(i):
            return self.info[i] if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(i) for i in idx]
        return pick(idx)

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def __getitem__(self, item):
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)


class FeatureListNet(nn.ModuleDict):
    """The backbone of a ``ResNet`` returning the feature maps of ``out_indices`` as a list.

    Args:
        model: a model with a ``feature_info`` list (``module``, ``num_chs``, ``reduction``) whose
            named top-level children run in order (``ResNet``).
        out_indices: which ``feature_info`` entries to return (default all five: stem, c2..c5).

    Shapes: (B, in_chans, H, W) -> [(B, channels()[i], H / reduction()[i], W / reduction()[i]), ...].
    """

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] = (0, 1, 2, 3, 4)):
        info = list(model.feature_info)
        out_indices = resolve_out_indices(out_indices, len(info))
        return_layers = {info[i]["module"]: i for i in out_indices}
        modules, remaining = {}, set(return_layers)
        for name, module in model.named_children():
            if not remaining:
                break
            modules[name] = module
            remaining.discard(name)
        if remaining:
            raise ValueError(f"feature modules {sorted(remaining)} are not top-level children of {type(model).__name__}")
        super().__init__(modules)
        self.feature_info = FeatureInfo(info, out_indices)
        self.return_layers = return_layers
        self.in_chans = getattr(model, "in_chans", None)
        self.size_divisor = getattr(model, "size_divisor", 1)
        self.model_name = getattr(model, "model_name", None)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or (self.in_chans is not None and x.shape[1] != self.in_chans):
            raise ValueError(f"expected input of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        d = self.size_divisor
        if h % d or w % d:
            raise ValueError(f"input size {h}x{w} does not work for this model: H and W must be multiples of {d}")
        out = []
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out.append(x)
        return out
