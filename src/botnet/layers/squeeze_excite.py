"""Squeeze-and-Excitation (Hu et al., arXiv:1709.01507), as used by the SENets of BoTNet Tables 12-14.

Parameter names follow timm's ``SEModule`` (``fc1``, ``fc2``) so SE-ResNet weights map directly.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["SEModule"]


class SEModule(nn.Module):
    """x * sigmoid(fc2(act(fc1(mean_hw(x))))).

    Args:
        channels: C of the input.
        rd_ratio: reduced channels = C * rd_ratio (1/16: 256 -> 16, 2048 -> 128, as in SENet and
            in the TF ResNet-RS code the paper builds on: 0.25 of the bottleneck width).
        act_layer: activation between fc1 and fc2 (the block's activation).
        rd_divisor: round the reduced channels to a multiple of this (timm's SE: 8, at least 8).

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, act_layer: Callable[..., nn.Module] = nn.ReLU,
                 rd_divisor: int = 1):
        super().__init__()
        if channels < 1:
            raise ValueError(f"SEModule needs at least 1 channel, got {channels}")
        if rd_divisor > 1:  # timm's make_divisible(C * rd_ratio, rd_divisor, round_limit=0)
            rd = max(rd_divisor, int(channels * rd_ratio + rd_divisor / 2) // rd_divisor * rd_divisor)
        else:
            rd = max(1, int(round(channels * rd_ratio)))
        self.fc1 = nn.Conv2d(channels, rd, kernel_size=1, bias=True)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * s.sigmoid()

