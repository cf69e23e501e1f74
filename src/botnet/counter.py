"""Parameter and multiply-add counts.

Multiply-adds come from ``torch.utils.flop_counter.FlopCounterMode`` run on the meta device: every
convolution, linear layer and matrix product of the forward pass is counted, including the einsums
and batched matmuls of the attention (q k^T, the relative logits, attention x v) that hook-based
counters miss (the paper's A.9 warns about this). Elementwise ops, softmax, normalization and
pooling are not counted, as usual for M.Adds. One multiply-add = 2 FLOPs.

Attention is counted with its ``reference`` kernel (explicit q k^T, position logits, attention x v):
the faster kernels compute the same function with extra bookkeeping that is not the model's work.

The meta device allocates nothing, so BoT200 at 1280 or SENet-350 count in well under a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .layers import use_kernel
from .models import create_model

__all__ = ["Profile", "count_params", "count_madds", "profile_model", "NORM_TYPES"]

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class Profile:
    name: str
    img_size: tuple[int, int]
    params: int
    params_without_norm: int
    madds: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["img_size"] = list(self.img_size)
        return d


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, parameters outside normalization layers)."""
    total = sum(p.numel() for p in model.parameters())
    norm = sum(p.numel() for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False))
    return total, total - norm


def count_madds(model: nn.Module, img_size: int | tuple[int, int], in_chans: int = 3) -> int:
    """Multiply-adds of one forward pass of one image of ``img_size`` (eval mode)."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    device = next(model.parameters()).device
    x = torch.empty(1, in_chans, h, w, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), use_kernel("reference"), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def profile_model(name: str, img_size: int | tuple[int, int] | None = None, **kwargs) -> Profile:
    """Count a registered model (built on the meta device) at ``img_size`` (its default if None)."""
    with torch.device("meta"):
        if img_size is None:
            model = create_model(name, **kwargs)
        else:
            model = create_model(name, img_size=img_size, **kwargs)
    size = tuple(model.img_size)
    params, params_wo_norm = count_params(model)
    madds = count_madds(model, size, in_chans=model.in_chans)
    return Profile(name=name, img_size=size, params=params, params_without_norm=params_wo_norm, madds=madds)
