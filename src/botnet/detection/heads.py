"""Detection heads with batch norm, as the paper's A.2 configuration has them.

torchvision's box head (``FastRCNNConvFCHead``) and mask head (``MaskRCNNHeads``) take a
``norm_layer``; its ``RPNHead`` does not, so ``RPNHeadBN`` adds one: the convolutions are shared by
all pyramid levels, each level has its own BatchNorm (level statistics differ; the Cloud TPU
detection code the paper used does the same).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection.rpn import RPNHead

__all__ = ["RPNHeadBN"]


class RPNHeadBN(RPNHead):
    """RPN head: ``conv_depth`` 3x3 convs (shared over levels, BN per level, ReLU), then 1x1
    objectness and box-delta convs.

    Shapes: list of L maps (B, C, H_l, W_l) -> (list of (B, A, H_l, W_l), list of (B, 4A, H_l, W_l)).
    """

    def __init__(self, in_channels: int, num_anchors: int, num_levels: int = 5, conv_depth: int = 2):
        super().__init__(in_channels, num_anchors, conv_depth=conv_depth)
        self.conv = nn.ModuleList(nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False) for _ in range(conv_depth))
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(in_channels) for _ in range(num_levels)) for _ in range(conv_depth)
        )
        for conv in self.conv:
            nn.init.normal_(conv.weight, std=0.01)
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
