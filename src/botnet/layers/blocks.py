"""Residual blocks: the ResNet bottleneck and the Bottleneck Transformer (BoT) block.

BoTNet: "Bottleneck Transformers for Visual Recognition", Srinivas et al., arXiv:2101.11605,
Fig. 1 (BoT block) and Fig. 12 (BoT block with stride 2).

Attribute names follow torchvision's ``Bottleneck`` (conv1, bn1, conv2, bn2, conv3, bn3,
downsample.0/1) so torchvision and timm ResNet weights load by name. In a BoT block the 3x3
convolution ``conv2`` is replaced by ``attn`` (MHSA2d), which is therefore left out of such loads
(paper footnote 6: the replacement layers start from random initialisation).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .checks import check_even
from .mhsa import MHSA2d
from .mhsa_qk import MHSA2dQK
from .squeeze_excite import SEModule

__all__ = ["Bottleneck", "BoTBlock", "make_downsample", "check_even"]

Layer = Callable[..., nn.Module]
torch.fx.wrap("check_even")  # a leaf of traced graphs where this module calls it


def make_downsample(in_chs: int, out_chs: int, stride: int, norm_layer: Layer) -> nn.Module | None:
    """Projection shortcut: strided 1x1 conv + norm (None when the identity fits)."""
    if stride == 1 and in_chs == out_chs:
        return None
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False), norm_layer(out_chs))


class _Residual(nn.Module):
    """Shared tail: bn3 (optionally zero-initialised), SE, drop-path, shortcut add, activation."""

    expansion = 4

    def _init_tail(self, planes, in_chs, stride, se, act_layer, norm_layer, drop_path, out_chs=None):
        out_chs = out_chs or planes * self.expansion
        self.conv3 = nn.Conv2d(planes, out_chs, 1, bias=False)
        self.bn3 = norm_layer(out_chs)
        self.se = SEModule(out_chs, act_layer=act_layer) if se else None
        if drop_path > 0:  # imported here: `import torchvision` costs about 1 s (torch._dynamo), see botnet.models._timm
            from torchvision.ops import StochasticDepth

            self.drop_path = StochasticDepth(drop_path, "row")
        else:
            self.drop_path = nn.Identity()
        self.act3 = act_layer()
        self.downsample = make_downsample(in_chs, out_chs, stride, norm_layer)

    def zero_init_last(self) -> None:
        if getattr(self.bn3, "weight", None) is not None:
            nn.init.zeros_(self.bn3.weight)

    def _tail(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act3(self.drop_path(x) + shortcut)


class Bottleneck(_Residual):
    """ResNet bottleneck: 1x1 -> 3x3 -> 1x1 (x4), v1.5 (stride on the 3x3) by default.

    Args:
        in_chs: input channels; planes: bottleneck width (output is 4 * planes).
        stride: spatial stride of the block.
        se: add a Squeeze-Excitation module after bn3 (SENet).
        stride_in_1x1: put the stride on conv1 (ResNet v1, as in the original MSRA models and
            detectron2's ``STRIDE_IN_1X1``); v1.5 (torchvision, the paper's Tables 1 and 14) otherwise.
        drop_path: stochastic-depth (DropConnect) probability of the residual branch.
        out_chs: output channels (default 4 * planes; timm's ResNet-T family: any).
        groups: groups of the 3x3 conv (ResNeXt-style; planes must be divisible by it).
        mid_attn: channel attention on the 3x3 conv's output (``mid_attn(planes)``, kept as
            ``mid_se``: SE / ECA placed as in timm's ``BottleneckBlock``).

    Shapes: (B, in_chs, H, W) -> (B, out_chs, H/stride, W/stride).
    """

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int = 1,
        se: bool = False,
        act_layer: Layer = nn.ReLU,
        norm_layer: Layer = nn.BatchNorm2d,
        drop_path: float = 0.0,
        stride_in_1x1: bool = False,
        out_chs: int | None = None,
        groups: int = 1,
        mid_attn: Layer | None = None,
    ):
        super().__init__()
        self.stride = stride
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_chs, planes, 1, stride=s1, bias=False)
        self.bn1 = norm_layer(planes)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=s3, padding=1, groups=groups, bias=False)
        self.bn2 = norm_layer(planes)
        self.act2 = act_layer()
        self.mid_se = mid_attn(planes) if mid_attn is not None else None
        self._init_tail(planes, in_chs, stride, se, act_layer, norm_layer, drop_path, out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.act2(self.bn2(self.conv2(y)))
        if self.mid_se is not None:
            y = self.mid_se(y)
        return self._tail(y, x)


class BoTBlock(_Residual):
    """Bottleneck Transformer block: the 3x3 conv of a bottleneck replaced by MHSA2d.

    With stride 2 (Fig. 12) attention runs at the input resolution and a 2x2 average pooling with
    stride 2 follows it; the shortcut is a strided 1x1 projection.

    Args:
        in_chs, planes, stride: as ``Bottleneck``; attention runs on ``planes`` channels.
        feat_size: (H, W) of the block input, for the position tables.
        num_heads, pos_enc, content: passed to ``MHSA2d``.
        se: SE module after bn3 (the text of the paper keeps SE out of BoT blocks; its Table 14
            parameter counts include it, see docs/paper-fidelity.md).
        out_chs: output channels (default 4 * planes).
        qk_head_dim: narrower query/key heads (``MHSA2dQK``; timm's ``dim_head``); None: planes / heads.

    Shapes: (B, in_chs, H, W) -> (B, out_chs, H/stride, W/stride); H, W divisible by stride.
    """

    def __init__(
        self,
        in_chs: int,
        planes: int,
        stride: int = 1,
        feat_size: int | tuple[int, int] = 14,
        num_heads: int = 4,
        pos_enc: str = "relative",
        content: bool = True,
        se: bool = False,
        act_layer: Layer = nn.ReLU,
        norm_layer: Layer = nn.BatchNorm2d,
        drop_path: float = 0.0,
        out_chs: int | None = None,
        qk_head_dim: int | None = None,
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"BoTBlock supports stride 1 or 2, got {stride}")
        self.conv1 = nn.Conv2d(in_chs, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.act1 = act_layer()
        self.stride = stride
        attn_opts = dict(num_heads=num_heads, feat_size=feat_size, pos_enc=pos_enc, content=content)
        if qk_head_dim is None:
            self.attn = MHSA2d(planes, **attn_opts)
        else:
            self.attn = MHSA2dQK(planes, qk_head_dim=qk_head_dim, **attn_opts)
        self.pool = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()
        self.bn2 = norm_layer(planes)
        self.act2 = act_layer()
        self._init_tail(planes, in_chs, stride, se, act_layer, norm_layer, drop_path, out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2 and not torch.jit.is_scripting():
            x = check_even(x)
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.act2(self.bn2(self.pool(self.attn(y))))
        return self._tail(y, x)
