"""What our models tell timm beyond their names (used by ``botnet.models._timm``): the pretrained
config of models with published weights, the real ``pool_size`` of a built model, and the layers
timm's FX feature extraction must keep as leaves.

Names: timm's own BoTNet-family names (``botnet26t_256``, ...) are ours too; in timm's registry ours
are ``botnet_botnet26t_256``, ``botnet_sebotnet33ts_256``, ... so timm's own models stay timm's.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from .timm_botnets import PRETRAINED_CFGS, pretrained_cfg
from ..layers import MHSA2d, MHSA2dQK

__all__ = ["TIMM_OWN_NAMES", "timm_pretrained_cfg", "finish_timm_model", "register_fx_leaves"]

TIMM_OWN_NAMES = frozenset(PRETRAINED_CFGS)  # names timm itself registers (timm/models/byoanet.py)


def timm_pretrained_cfg(our_name: str) -> dict:
    """The fields of our pretrained config that timm's ``PretrainedCfg`` knows ({} for models without one)."""
    from timm.models import PretrainedCfg

    cfg = pretrained_cfg(our_name)
    if cfg is None:
        return {}
    known = {f.name for f in dataclasses.fields(PretrainedCfg)}
    return {k: v for k, v in cfg.items() if k in known and v not in ("", None)}


def finish_timm_model(model: nn.Module) -> nn.Module:
    """Set ``pool_size`` of the model's timm config from the model itself (stride 16 for BoTNet-S1)."""
    info = getattr(model, "feature_info", None)
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(info, list) and isinstance(cfg, dict) and "input_size" in cfg:
        r = info[-1]["reduction"]
        cfg = dict(cfg, pool_size=tuple(-(-s // r) for s in cfg["input_size"][1:]))
        model.pretrained_cfg = model.default_cfg = cfg
    return model


def register_fx_leaves() -> None:
    """Attention layers are leaves of timm's FX graphs (their size-dependent table resizing is
    Python control flow); everything around them traces."""
    from timm.layers import register_notrace_module


    for cls in (MHSA2d, MHSA2dQK):
        register_notrace_module(cls)
