"""Efficient Channel Attention (Wang et al., "ECA-Net: Efficient Channel Attention for Deep
Convolutional Neural Networks", arXiv:1910.03151), as used by timm's ``eca_botnext26ts_256``.

The parameter name (``conv``, a (1, 1, k) Conv1d without bias) follows timm's ``EcaModule`` so its
weights load by name.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["EcaModule", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """The paper's adaptive kernel size: the odd number nearest (log2(C) + beta) / gamma, at least 3."""
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class EcaModule(nn.Module):
    """x * sigmoid(conv1d_k(mean_hw(x))): a k-tap 1D convolution across channels, k = eca_kernel_size(C).

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, gamma: float = 2, beta: float = 1):
        super().__init__()
        if channels < 1:
            raise ValueError(f"EcaModule needs at least 1 channel, got {channels}")
        k = eca_kernel_size(channels, gamma, beta)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.mean((2, 3)).unsqueeze(1))  # (B, 1, C)
        return x * y.sigmoid().transpose(1, 2).unsqueeze(-1)
