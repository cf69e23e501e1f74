"""A ResNet-family backbone of the registry with a Feature Pyramid Network on top, p2..p6.

Any registered classifier (``botnet50``, ``resnet101``, ``resnet50_nl_c4``, ...) becomes a detection
backbone: its ``forward_pyramid`` gives c2..c5 and a feature pyramid makes p2..p6 from them:

- ``fpn_style="tpu"`` (default, the paper's A.2): ``TPUFeaturePyramid``, the Cloud TPU detection
  code's FPN (p6 a 3x3 stride-2 conv on p5, BatchNorm without activation once on each of p2..p6);
- ``fpn_style="torchvision"``: torchvision's ``FeaturePyramidNetwork`` without norm and with
  ``LastLevelMaxPool`` (p6 a stride-2 1x1 max pool of p5), as in torchvision's
  ``maskrcnn_resnet50_fpn``, whose weight file then loads into ours key for key
  (tests/detection/test_det_tpu.py checks it for ResNet-50: same keys, same outputs).

The classifier is built once, by the registry; nothing here copies it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ..models import create_model
from .fpn import TPUFeaturePyramid

__all__ = ["BackboneFPN", "build_backbone", "FPN_STYLES"]

FPN_STYLES = ("tpu", "torchvision")


class BackboneFPN(nn.Module):
    """``body`` (our ResNet, no classifier) + ``fpn``; ``out_channels`` as torchvision expects.

    Shapes: (B, 3, S, S) -> OrderedDict {"0": p2 (B, C, S/4, S/4), "1": p3, "2": p4, "3": p5,
    "pool": p6 (B, C, S/64, S/64)} with C = ``out_channels``. The attribute names follow
    torchvision's ``BackboneWithFPN`` (``body``, ``fpn``).
    """

    def __init__(self, body: nn.Module, out_channels: int = 256, fpn_style: str = "tpu"):
        super().__init__()
        strides = [info["reduction"] for info in body.feature_info[1:]]
        if strides != [4, 8, 16, 32]:
            raise ValueError(
                f"a detection backbone needs c2..c5 at strides 4, 8, 16, 32; {getattr(body, 'model_name', 'this model')} "
                f"has {strides} (BoTNet-S1 / T3-T7 keep c5 at stride 16: they are the paper's classification models)"
            )
        if fpn_style not in FPN_STYLES:
            raise ValueError(f"fpn_style must be one of {FPN_STYLES}, got {fpn_style!r}")
        self.body = body
        in_channels = [info["num_chs"] for info in body.feature_info[1:]]
        if fpn_style == "tpu":
            self.fpn = TPUFeaturePyramid(in_channels, out_channels, nn.BatchNorm2d)
        else:
            self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.body.forward_pyramid(x)
        return self.fpn(OrderedDict([("0", feats["c2"]), ("1", feats["c3"]), ("2", feats["c4"]), ("3", feats["c5"])]))


def build_backbone(name: str, img_size: int, out_channels: int = 256, norm_layer: Callable[..., nn.Module] | None = None,
                   fpn_style: str = "tpu", **kwargs) -> BackboneFPN:
    """The registry model ``name`` built for ``img_size`` x ``img_size`` inputs (its attention maps
    then have exactly the size of their relative tables), without classifier, plus FPN.

    ``norm_layer`` is the backbone's normalization (default BatchNorm2d, trained, as in the paper);
    ``fpn_style`` picks the pyramid (see the module docstring).
    """
    body_kwargs = dict(kwargs)
    if norm_layer is not None:
        body_kwargs["norm_layer"] = norm_layer
    body = create_model(name, num_classes=0, img_size=img_size, **body_kwargs)
    return BackboneFPN(body, out_channels, fpn_style)
