"""The feature pyramid of the Cloud TPU detection code that BoTNet's appendix A.2 used (arXiv:2101.11605).

tensorflow/tpu ``models/official/detection/modeling/architecture/fpn.py`` (``Fpn.__call__``, at the
paper's commit 1e6a3a5, lines 90-136), for ``min_level=2, max_level=6`` on c2..c5:

1. lateral 1x1 conv (with bias, no norm) on each of c2..c5;
2. top-down: p5 = lateral5; p_l = nearest-2x-upsample(p_{l+1}) + lateral_l;
3. post-hoc 3x3 conv (with bias) on each of p2..p5;
4. p6 = 3x3 stride-2 conv (with bias, TF "same" padding) on the post-hoc p5, before its norm;
5. batch norm without activation once on every output level p2..p6.

TF's ``tf.layers.conv2d`` defaults: Glorot-uniform kernels, zero biases. torchvision's
``FeaturePyramidNetwork`` differs in p6 (a max pool), the norm's place (after every conv) and the
initialisation; ``head_style="torchvision"`` keeps it (see ``backbone.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TPUFeaturePyramid", "tf_same_pad"]


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad ``x`` (B, C, H, W) as TF's ``padding='same'`` does for a ``kernel`` x ``kernel``,
    ``stride`` conv: ``max((ceil(n / s) - 1) * s + k - n, 0)`` in total, the smaller half first (a
    3x3 stride-2 conv on an even size pads 0 before and 1 after, PyTorch's ``padding=1`` 1 and 1)."""
    h, w = x.shape[-2], x.shape[-1]
    pad_h = max(((h + stride - 1) // stride - 1) * stride + kernel - h, 0)
    pad_w = max(((w + stride - 1) // stride - 1) * stride + kernel - w, 0)
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


class TPUFeaturePyramid(nn.Module):
    """TPU ``Fpn`` on c2..c5 -> p2..p6 (see the module docstring).

    Shapes: dict of 4 maps (B, C_l, S/2^l, S/2^l), l = 2..5, in that order (the input of torchvision's
    ``FeaturePyramidNetwork``) -> OrderedDict {"0": p2, "1": p3, "2": p4,
    "3": p5, "pool": p6}, each (B, out_channels, S/2^l, S/2^l) (the keys torchvision's RPN and
    ``MultiScaleRoIAlign`` expect).
    """

    def __init__(self, in_channels: list[int], out_channels: int = 256,
                 norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d):
        super().__init__()
        self.inner_blocks = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)  # TPU "l2".."l5"
        self.layer_blocks = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1)  # "post_hoc_d2".."d5"
                                          for _ in in_channels)
        self.p6 = nn.Conv2d(out_channels, out_channels, 3, stride=2)  # "p6", TF "same" padding in forward
        levels = len(in_channels) + 1
        self.norms = nn.ModuleList(norm_layer(out_channels) if norm_layer is not None else nn.Identity()
                                   for _ in range(levels))  # "p2-bn".."p6-bn", no activation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)  # TF's default kernel initializer (Glorot uniform)
                nn.init.zeros_(m.bias)

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feats = list(x.values())
        laterals: list[torch.Tensor] = []
        for i, conv in enumerate(self.inner_blocks):
            laterals.append(conv(feats[i]))
        top = laterals[-1]
        merged = [top]
        for i in range(len(laterals) - 2, -1, -1):
            top = F.interpolate(top, size=laterals[i].shape[-2:], mode="nearest") + laterals[i]
            merged.insert(0, top)
        outs: list[torch.Tensor] = []
        for i, conv in enumerate(self.layer_blocks):
            outs.append(conv(merged[i]))
        outs.append(self.p6(tf_same_pad(outs[-1], 3, 2)))
        normed: list[torch.Tensor] = []
        for i, norm in enumerate(self.norms):
            normed.append(norm(outs[i]))
        return OrderedDict([(k, v) for k, v in zip(["0", "1", "2", "3", "pool"], normed)])
