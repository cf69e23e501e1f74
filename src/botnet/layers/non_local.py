"""Non-Local block (Wang et al., arXiv:1711.07971) in the form BoTNet compares against (Sec. 4.7).

BoTNet Fig. 4 and A.5 name what a Non-Local (NL) layer lacks compared with MHSA: multiple heads,
position encodings and the value projection. The block here is that NL layer inserted as a residual
unit (between the pre-final and final blocks of a stage, Fig. 13):

    z = x + BN(W_z(y)),  y = softmax(theta(x)^T phi(x)) . g(x)

with one head, embedded-Gaussian logits (no scaling, as in Wang et al.), no position encoding, and
g the identity unless ``value_proj=True`` (the "+0.2 AP" ablation of A.5). The BN after W_z is
zero-initialised, so the block starts as the identity.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["NonLocal2d"]


class NonLocal2d(nn.Module):
    """Args:
        channels: C of input and output.
        inter_channels: channels of theta/phi (and g); default C // 2.
        value_proj: use a learned value projection g (C -> inter_channels).
        norm_layer: normalization after the output projection W_z.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(
        self,
        channels: int,
        inter_channels: int | None = None,
        value_proj: bool = False,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
    ):
        super().__init__()
        ci = inter_channels or channels // 2
        if channels < 1 or ci < 1:
            raise ValueError(f"NonLocal2d needs at least 1 channel and 1 inner channel, got channels={channels}, "
                             f"inter_channels={ci} (channels // 2 by default)")
        self.theta = nn.Conv2d(channels, ci, 1)
        self.phi = nn.Conv2d(channels, ci, 1)
        self.g = nn.Conv2d(channels, ci, 1) if value_proj else None
        self.out = nn.Conv2d(ci if value_proj else channels, channels, 1, bias=False)
        self.bn = norm_layer(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.theta, self.phi, self.g, self.out):
            if conv is not None:
                nn.init.normal_(conv.weight, std=conv.weight.shape[1] ** -0.5)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
        if getattr(self.bn, "weight", None) is not None:
            nn.init.zeros_(self.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, Ci)
        k = self.phi(x).flatten(2)  # (B, Ci, N)
        attn = torch.softmax(q @ k, dim=-1, dtype=torch.float32)  # (B, N, N)
        v = (self.g(x) if self.g is not None else x).flatten(2)  # (B, Cv, N)
        y = (v @ attn.to(v.dtype).transpose(1, 2)).reshape(b, -1, h, w)
        return x + self.bn(self.out(y))
