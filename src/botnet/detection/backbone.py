"""A ResNet-family backbone of the registry with a Feature Pyramid Network on top, p2..p6.

Any registered classifier (``botnet50``, ``resnet101``, ``resnet50_nl_c4``, ...) becomes a detection
backbone: its ``forward_pyramid`` gives c2..c5, torchvision's ``FeaturePyramidNetwork`` makes
p2..p5 from them and ``LastLevelMaxPool`` adds p6 (a stride-2 1x1 max pool of p5, as Detectron and
the Cloud TPU detection code the paper used do). The classifier is built once, by the registry;
nothing here copies it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ..models import create_model

__all__ = ["BackboneFPN", "build_backbone"]


class BackboneFPN(nn.Module):
    """``body`` (our ResNet, no classifier) + ``fpn``; ``out_channels`` as torchvision expects.

    Shapes: (B, 3, S, S) -> OrderedDict {"0": p2 (B, C, S/4, S/4), "1": p3, "2": p4, "3": p5,
    "pool": p6 (B, C, S/64, S/64)} with C = ``out_channels``. The attribute names follow
    torchvision's ``BackboneWithFPN`` (``body``, ``fpn``), so its weight files and ours interchange.
    """

    def __init__(self, body: nn.Module, out_channels: int = 256, norm_layer: Callable[..., nn.Module] | None = None):
        super().__init__()
        strides = [info["reduction"] for info in body.feature_info[1:]]
        if strides != [4, 8, 16, 32]:
            raise ValueError(
                f"a detection backbone needs c2..c5 at strides 4, 8, 16, 32; {getattr(body, 'model_name', 'this model')} "
                f"has {strides} (BoTNet-S1 / T3-T7 keep c5 at stride 16: they are the paper's classification models)"
            )
        self.body = body
        in_channels = [info["num_chs"] for info in body.feature_info[1:]]
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool(), norm_layer=norm_layer)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.body.forward_pyramid(x)
        return self.fpn(OrderedDict([("0", feats["c2"]), ("1", feats["c3"]), ("2", feats["c4"]), ("3", feats["c5"])]))


def build_backbone(name: str, img_size: int, out_channels: int = 256, norm_layer: Callable[..., nn.Module] | None = None,
                   fpn_norm: bool = True, **kwargs) -> BackboneFPN:
    """The registry model ``name`` built for ``img_size`` x ``img_size`` inputs (its attention maps
    then have exactly the size of their relative tables), without classifier, plus FPN.

    ``norm_layer`` is the backbone's normalization (default BatchNorm2d, trained, as in the paper);
    ``fpn_norm`` puts BatchNorm after the FPN's lateral and output convolutions (the paper's A.2).
    """
    body_kwargs = dict(kwargs)
    if norm_layer is not None:
        body_kwargs["norm_layer"] = norm_layer
    body = create_model(name, num_classes=0, img_size=img_size, **body_kwargs)
    return BackboneFPN(body, out_channels, nn.BatchNorm2d if fpn_norm else None)
