"""Detection heads of the Cloud TPU detection code that BoTNet's appendix A.2 used (arXiv:2101.11605).

tensorflow/tpu ``models/official/detection/modeling/architecture/heads.py`` (paper's commit 1e6a3a5)
with ``use_batch_norm=True`` everywhere (A.2: "batch norm in the backbone, FPN, RPN head, FRCNN
head and MRCNN head"):

- ``RPNHeadBN`` (``RpnHead``, lines 90-137): ``num_convs`` 3x3 convs shared by all levels, each
  followed by a BatchNorm of its own level and ReLU, then 1x1 objectness and box convs; every conv
  has a bias and N(0, 0.01) weights (lines 76-79).
- ``FastRCNNHeadBN`` (``FastrcnnHead``, lines 218-246): ``num_convs`` 3x3 convs, each + BN + ReLU,
  flatten, ``num_fcs`` FCs, each + BN + ReLU (the BN after the FC is what torchvision's
  ``FastRCNNConvFCHead`` lacks). Convs: He-normal fan-out (lines 183-187); FC: TF's Glorot uniform.
- ``mask_head_bn`` + ``MaskRCNNPredictorBN`` (``MaskrcnnHead``, lines 337-374): ``num_convs`` 3x3
  convs, each + BN + ReLU, a 2x2 stride-2 transposed conv + BN + ReLU, 1x1 class logits; He-normal
  fan-out everywhere.
- ``init_box_predictor``: class logits N(0, 0.01), box deltas N(0, 0.001), zero biases (lines 248-259).

The TPU convs keep their bias even before a BatchNorm (``tf.layers.conv2d``'s default); so do ours,
so the parameter count is the TPU model's.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops.misc import Conv2dNormActivation

__all__ = ["RPNHeadBN", "FastRCNNHeadBN", "mask_head_bn", "MaskRCNNPredictorBN", "init_box_predictor"]


class RPNHeadBN(RPNHead):
    """RPN head: ``conv_depth`` 3x3 convs (shared over levels, BN per level and conv, ReLU), then
    1x1 objectness and box-delta convs.

    At the paper's commit the TPU code gave both convs of one level the same BatchNorm (the name
    ``rpn-l%d-bn`` repeats under ``AUTO_REUSE``); commit 40cf4c3 (2021-02-23) gave each conv its own,
    as here.

    Shapes: list of L maps (B, C, H_l, W_l) -> (list of (B, A, H_l, W_l), list of (B, 4A, H_l, W_l)).
    """

    def __init__(self, in_channels: int, num_anchors: int, num_levels: int = 5, conv_depth: int = 2):
        super().__init__(in_channels, num_anchors, conv_depth=conv_depth)
        self.conv = nn.ModuleList(nn.Conv2d(in_channels, in_channels, 3, padding=1) for _ in range(conv_depth))
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(in_channels) for _ in range(num_levels)) for _ in range(conv_depth)
        )
        for conv in self.conv:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.num_levels = num_levels

    def forward(self, x: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(x) != self.num_levels:
            raise ValueError(f"RPNHeadBN was built for {self.num_levels} pyramid levels, got {len(x)}")
        # depth by depth over all levels: TorchScript indexes a ModuleList by literals only (norms[level] fails)
        feats = x
        for conv, norms in zip(self.conv, self.norms):
            out: list[torch.Tensor] = []
            for level, norm in enumerate(norms):
                out.append(torch.relu(norm(conv(feats[level]))))
            feats = out
        logits: list[torch.Tensor] = []
        deltas: list[torch.Tensor] = []
        for t in feats:
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def _conv_bn_relu(in_channels: int, out_channels: int) -> Conv2dNormActivation:
    """3x3 conv (with bias, as TF's) + BatchNorm2d + ReLU, He-normal fan-out weights."""
    block = Conv2dNormActivation(in_channels, out_channels, 3, norm_layer=nn.BatchNorm2d, bias=True)
    nn.init.kaiming_normal_(block[0].weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(block[0].bias)
    return block


class FastRCNNHeadBN(nn.Sequential):
    """TPU box head: ``num_convs`` x (3x3 conv + BN + ReLU), flatten, FC + BN + ReLU.

    Shapes: RoI features (R, C, 7, 7) -> (R, fc_dim).
    """

    def __init__(self, input_size: tuple[int, int, int], num_convs: int = 4, conv_dim: int = 256, fc_dim: int = 1024):
        c, h, w = input_size
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers.append(_conv_bn_relu(c if i == 0 else conv_dim, conv_dim))
        fc_in = (conv_dim if num_convs else c) * h * w
        fc = nn.Linear(fc_in, fc_dim)
        nn.init.xavier_uniform_(fc.weight)  # tf.layers.dense's default kernel initializer
        nn.init.zeros_(fc.bias)
        layers += [nn.Flatten(start_dim=1), fc, nn.BatchNorm1d(fc_dim), nn.ReLU(inplace=True)]
        super().__init__(*layers)


def mask_head_bn(in_channels: int, num_convs: int = 4, conv_dim: int = 256) -> nn.Sequential:
    """TPU mask head convs: ``num_convs`` x (3x3 conv + BN + ReLU). (R, C, 14, 14) -> (R, conv_dim, 14, 14)."""
    return nn.Sequential(*[_conv_bn_relu(in_channels if i == 0 else conv_dim, conv_dim) for i in range(num_convs)])


class MaskRCNNPredictorBN(nn.Sequential):
    """TPU mask predictor: 2x2 stride-2 transposed conv + BN + ReLU, 1x1 class logits.

    Shapes: (R, C, 14, 14) -> (R, num_classes, 28, 28) logits. The names follow torchvision's
    ``MaskRCNNPredictor`` (``conv5_mask``, ``mask_fcn_logits``), plus ``bn5_mask``.
    """

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int):
        super().__init__(OrderedDict([
            ("conv5_mask", nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2)),
            ("bn5_mask", nn.BatchNorm2d(dim_reduced)),
            ("relu5_mask", nn.ReLU(inplace=True)),
            ("mask_fcn_logits", nn.Conv2d(dim_reduced, num_classes, 1)),
        ]))
        for m in (self.conv5_mask, self.mask_fcn_logits):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)


def init_box_predictor(predictor: nn.Module) -> nn.Module:
    """TPU init of a ``FastRCNNPredictor``: class logits N(0, 0.01), box deltas N(0, 0.001), zero biases."""
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    return predictor
