"""Anchors and RPN losses of the Cloud TPU detection code that BoTNet's appendix A.2 used (arXiv:2101.11605).

- ``TPUAnchorGenerator``: tensorflow/tpu ``dataloader/anchor.py`` ``Anchor._generate_boxes``
  (paper's commit 1e6a3a5, lines 71-98): anchor centres at ``stride / 2 + k * stride`` (torchvision's
  ``AnchorGenerator`` puts them at ``k * stride``) and unrounded sides ``size * sqrt(ar)`` x
  ``size / sqrt(ar)`` (torchvision rounds each half-side to a whole pixel).
- ``TPURegionProposalNetwork``: ``modeling/losses.py`` ``RpnScoreLoss`` / ``RpnBoxLoss`` (lines
  107-190): sigmoid cross-entropy summed over the 256 sampled anchors per image and divided by
  ``B x 256``; Huber loss (delta 1/9) over every positive anchor, divided by 4 x their number.
  torchvision instead averages the score loss over the anchors it sampled and divides a smooth-L1
  (beta 1/9) over the sampled positives by the number of sampled anchors. As in the TPU code, the box
  loss is normalised level by level and the levels are summed: the anchors of each level are known
  from the detector's fixed input size (``anchors_per_level``); without it, all levels are
  normalised at once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork

__all__ = ["TPUAnchorGenerator", "TPURegionProposalNetwork", "tpu_rpn"]


class TPUAnchorGenerator(AnchorGenerator):
    """One anchor size per level (``sizes[l]``), ``aspect_ratios`` (w/h as TF, h/w as torchvision: the
    set {0.5, 1, 2} is the same), centres offset by half the level's stride ``strides[l]``.

    Shapes: as torchvision's ``AnchorGenerator``: (ImageList, list of L maps) -> B tensors (A_total, 4) xyxy.
    """

    def __init__(self, sizes: tuple, aspect_ratios: tuple, strides: tuple[int, ...]):
        super().__init__(sizes, aspect_ratios)
        if len(strides) != len(self.cell_anchors):
            raise ValueError(f"one stride per anchor level: {len(self.cell_anchors)} levels, {len(strides)} strides")
        self.strides = tuple(int(s) for s in strides)
        self.cell_anchors = [a + s / 2.0 for a, s in zip(self.cell_anchors, self.strides)]

    def generate_anchors(self, scales: list[int], aspect_ratios: list[float], dtype: torch.dtype = torch.float32,
                         device: torch.device = torch.device("cpu")) -> torch.Tensor:
        """Zero-centred (len(ar) x len(scales), 4) xyxy anchors, not rounded (TPU ``anchor.py`` 84-92)."""
        rows = []
        for ar in aspect_ratios:
            for s in scales:
                half_w, half_h = s * math.sqrt(1.0 / ar) / 2.0, s * math.sqrt(ar) / 2.0
                rows.append([-half_w, -half_h, half_w, half_h])
        return torch.tensor(rows, dtype=dtype, device=device)


class TPURegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN with the TPU losses (see the module docstring); proposals are unchanged.

    ``anchors_per_level``: the number of anchors of each pyramid level in one image (fixed by the
    detector's input size), for the level-by-level box loss; empty: one normalisation for all."""

    __annotations__ = {"anchors_per_level": list[int]}  # for TorchScript (an empty list is not List[Tensor])

    def __init__(self, *args, anchors_per_level: list[int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.anchors_per_level = list(anchors_per_level or [])

    def compute_loss(self, objectness: torch.Tensor, pred_bbox_deltas: torch.Tensor, labels: list[torch.Tensor],
                     regression_targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """objectness (A_total*B,) or (A_total*B, 1) logits, pred_bbox_deltas (A_total*B, 4), per-image labels
        (A_total,) in {1, 0, -1} and regression targets (A_total, 4) -> (score loss, box loss), scalars."""
        sampled_pos, sampled_neg = self.fg_bg_sampler(labels)
        sampled = torch.where(torch.cat(sampled_pos, dim=0) | torch.cat(sampled_neg, dim=0))[0]
        objectness = objectness.flatten()
        labels_all = torch.cat(labels, dim=0)
        normalizer = float(len(labels) * self.fg_bg_sampler.batch_size_per_image)
        score_loss = F.binary_cross_entropy_with_logits(objectness[sampled], labels_all[sampled], reduction="sum")
        counts = self.anchors_per_level
        if len(counts) == 0 or sum(counts) != labels[0].numel():
            counts = [labels[0].numel()]
        device = objectness.device
        level = torch.cat([torch.full((c,), i, dtype=torch.int64, device=device) for i, c in enumerate(counts)])
        # positives only: the targets of other anchors may be infinite (an image without boxes)
        positive = torch.where(labels_all > 0)[0]
        level = level.repeat(len(labels))[positive]
        delta = 1.0 / 9.0
        # TF's Huber(delta) is delta x smooth-L1(beta=delta), per coordinate
        huber = delta * F.smooth_l1_loss(pred_bbox_deltas[positive], torch.cat(regression_targets, dim=0)[positive],
                                         beta=delta, reduction="none").sum(dim=1)
        sums = torch.zeros(len(counts), dtype=huber.dtype, device=device).index_add_(0, level, huber)
        npos = torch.zeros(len(counts), dtype=huber.dtype, device=device).index_add_(0, level, torch.ones_like(huber))
        box_loss = (sums / (4 * npos).clamp(min=1)).sum()
        return score_loss / normalizer, box_loss


def tpu_rpn(anchor_generator: AnchorGenerator, head: torch.nn.Module, options: dict,
            anchors_per_level: list[int] | None = None) -> TPURegionProposalNetwork:
    """A ``TPURegionProposalNetwork`` from torchvision ``MaskRCNN`` / ``FasterRCNN`` option names
    (``rpn_pre_nms_top_n_train``, ``rpn_fg_iou_thresh``, ...; every one must be in ``options``)."""
    o = options
    return TPURegionProposalNetwork(
        anchor_generator, head, o["rpn_fg_iou_thresh"], o["rpn_bg_iou_thresh"], o["rpn_batch_size_per_image"],
        o["rpn_positive_fraction"], {"training": o["rpn_pre_nms_top_n_train"], "testing": o["rpn_pre_nms_top_n_test"]},
        {"training": o["rpn_post_nms_top_n_train"], "testing": o["rpn_post_nms_top_n_test"]},
        o["rpn_nms_thresh"], o["rpn_score_thresh"], anchors_per_level=anchors_per_level)
