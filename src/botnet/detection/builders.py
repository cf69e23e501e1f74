"""Mask R-CNN and Faster R-CNN with FPN on any backbone of the registry, as BoTNet's appendix A.2 built them.

``create_detector("maskrcnn_botnet50_fpn", num_classes=81)`` builds torchvision's ``MaskRCNN`` with
the parts and numbers of the Cloud TPU detection code the paper used (tensorflow/tpu
``models/official/detection``, ``configs/maskrcnn_config.py`` with A.2's changes):

- backbone: the registry model (BoT layers included) + the TPU FPN p2..p6 (p6 a 3x3 stride-2 conv
  on p5, BatchNorm without activation on each output level);
- anchors: one size per level, 8 x stride (32..512 for p2..p6; ``anchor_size``), aspect ratios 0.5, 1, 2, centred
  at stride / 2 as in the TPU code;
- RPN head: 2 convs of 256, BatchNorm per level; TPU RPN losses (``rpn.py``);
- box head: 4 convs of 256 + 1 FC of 1024, each followed by BatchNorm and ReLU; predictor init
  N(0, 0.01) / N(0, 0.001);
- mask head: 4 convs of 256 (``mask_head_convs=8`` for the 44.4 AP model) and a 2x2 transposed
  conv, each followed by BatchNorm and ReLU; 28 x 28 mask targets from 14 x 14 RoIAlign;
- RoIAlign over p2..p6 with one sample per bin; RPN / RoI sampling and test-time numbers of
  ``TPU_OPTIONS``;
- fixed ``img_size x img_size`` input (1024 by default; any multiple of 32).

``head_style="torchvision"`` swaps the FPN and the RPN, box and mask heads for those of torchvision's
``maskrcnn_resnet50_fpn`` (no norm, max-pool p6, 1-conv RPN head, two-FC box head), so that
torchvision's weight files load; everything else stays as above. The names are
``{maskrcnn,fasterrcnn}_{backbone}_fpn`` for every stride-32 backbone of the model registry.
docs/detection.md puts every setting side by side with the TPU file and line it comes from.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Callable

from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..models import is_model, list_models
from ..models.convert import load_pretrained
from .backbone import FPN_STYLES, build_backbone
from .heads import FastRCNNHeadBN, MaskRCNNPredictorBN, RPNHeadBN, init_box_predictor, mask_head_bn
from .rpn import TPUAnchorGenerator, tpu_rpn
from .transform import FixedSizeTransform

__all__ = ["create_detector", "list_detectors", "parse_detector_name", "DETECTOR_KINDS", "HEAD_STYLES", "TPU_OPTIONS"]

HEAD_STYLES = FPN_STYLES  # "tpu" (the paper's A.2) or "torchvision" (maskrcnn_resnet50_fpn's heads, for its weights)
# torchvision MaskRCNN options at the TPU values (configs/maskrcnn_config.py, detection_config.py of
# tensorflow/tpu at commit 1e6a3a5; docs/detection.md gives the line of each)
TPU_OPTIONS = dict(
    rpn_pre_nms_top_n_train=2000, rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_train=1000,
    rpn_post_nms_top_n_test=1000, rpn_nms_thresh=0.7, rpn_score_thresh=0.0, rpn_fg_iou_thresh=0.7,
    rpn_bg_iou_thresh=0.3, rpn_batch_size_per_image=256, rpn_positive_fraction=0.5,
    box_batch_size_per_image=512, box_positive_fraction=0.25, box_fg_iou_thresh=0.5, box_bg_iou_thresh=0.5,
    box_score_thresh=0.05, box_nms_thresh=0.5, box_detections_per_img=100, bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
)
LEVELS = ("0", "1", "2", "3", "pool")  # p2..p6: the TPU RoIAlign assigns RoIs to every FPN level

DETECTOR_KINDS = ("maskrcnn", "fasterrcnn")
_NAME = re.compile(r"^(maskrcnn|fasterrcnn)_(.+)_fpn$")
# Classification-only registry entries: c5 at stride 16 (BoTNet-S1 and T3-T7) does not give p2..p5.
_EXCLUDED = ("botnet_s1_*", "botnet_t[0-9]*")


def list_detectors(pattern: str = "*") -> list[str]:
    """Every detector name: both kinds for every stride-32 backbone of the registry."""

    excluded = {n for p in _EXCLUDED for n in list_models(p)}
    names = [f"{kind}_{b}_fpn" for kind in DETECTOR_KINDS for b in list_models() if b not in excluded]
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def parse_detector_name(name: str) -> tuple[str, str]:
    """'maskrcnn_botnet50_fpn' -> ('maskrcnn', 'botnet50'); a clear error otherwise."""
    m = _NAME.match(name)
    if not m or not is_model(m.group(2)):

        close = difflib.get_close_matches(name, list_detectors(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown detector {name!r}: expected {{maskrcnn,fasterrcnn}}_<backbone>_fpn with a backbone "
                         f"from `botnet list`{hint}")
    return m.group(1), m.group(2)


def create_detector(
    name: str,
    num_classes: int = 91,
    img_size: int = 1024,
    *,
    fpn_channels: int = 256,
    box_head_convs: int = 4,
    box_fc: int = 1024,
    mask_head_convs: int = 4,
    mask_channels: int = 256,
    anchor_size: float = 8.0,
    roi_canonical_scale: int = 224,
    norm_layer: Callable[..., nn.Module] | None = None,
    head_style: str = "tpu",
    backbone_weights: str | None = None,
    backbone_kwargs: dict | None = None,
    **detector_kwargs,
) -> nn.Module:
    """Build detector ``name`` (see the module docstring).

    Args:
        num_classes: object classes + 1 (background is label 0, as torchvision expects).
        img_size: the fixed square input side (multiple of 32); the BoT layers' relative tables are
            built for img_size / 32.
        fpn_channels, box_head_convs, box_fc, mask_head_convs, mask_channels: head sizes (the
            paper: 256, 4, 1024, 4 (8 for the 44.4 AP model), 256). Smaller values make CPU demos.
            ``head_style="torchvision"`` has no box convs (``box_head_convs`` is not used).
        anchor_size: anchor side in strides (the TPU's ``anchor.anchor_size``, 8: 32..512 px on p2..p6);
            2 gives 8..128 px for objects 8x smaller, as in the 128-px CPU demo.
        roi_canonical_scale: the RoI side read from p4 (level 4 + log2(sqrt(area) / scale), 224 as in
            FPN and the TPU code); 28 keeps that assignment for objects 8x smaller.
        norm_layer: the backbone's normalization (default BatchNorm2d; ``FrozenBatchNorm2d``: Detectron-style).
        head_style: "tpu" (the paper's FPN and heads, default) or "torchvision" (those of
            torchvision's ``maskrcnn_resnet50_fpn``, for its weights).
        backbone_weights: a classification checkpoint (ours, torchvision's or timm's) loaded into the matching
            backbone layers (an R50's leaves BoT layers random: footnote 6); report: ``model.backbone_load_report``.
        backbone_kwargs: options of the backbone model (e.g. ``pos_enc``, ``width``).
        detector_kwargs: torchvision ``MaskRCNN`` / ``FasterRCNN`` options over ``TPU_OPTIONS``
            (``rpn_post_nms_top_n_train``, ``box_batch_size_per_image``, ``box_score_thresh``, ...,
            also ``rpn_anchor_generator``, ``box_roi_pool``, ``mask_roi_pool``).

    Returns a torchvision ``MaskRCNN`` / ``FasterRCNN``: in training ``model(images, targets)`` gives a dict
    of losses, in eval ``model(images)`` a list of {boxes (N,4) xyxy, labels (N,), scores (N,), masks (N,1,H,W)}.
    """
    kind, backbone_name = parse_detector_name(name)
    _check_args(img_size, num_classes, head_style, anchor_size, roi_canonical_scale)
    backbone = build_backbone(backbone_name, img_size, fpn_channels, norm_layer=norm_layer, fpn_style=head_style,
                              **(backbone_kwargs or {}))
    report = load_pretrained(backbone.body, backbone_weights) if backbone_weights else None  # timm BoTNet-family files converted, others matched
    options = _heads(head_style, kind, num_classes, fpn_channels, box_head_convs, box_fc, mask_head_convs, mask_channels,
                     anchor_size, roi_canonical_scale)
    options.update(detector_kwargs)
    model = (MaskRCNN if kind == "maskrcnn" else FasterRCNN)(backbone, min_size=img_size, max_size=img_size, **options)
    per_location = options["rpn_anchor_generator"].num_anchors_per_location()
    sides = [-(-img_size // 2 ** (i + 2)) for i in range(len(LEVELS))]  # p2..p6 (p6: TF "same" stride 2)
    model.rpn = tpu_rpn(options["rpn_anchor_generator"], options["rpn_head"], options,
                        [a * s * s for a, s in zip(per_location, sides)])
    model.transform = FixedSizeTransform(img_size, list(IMAGENET_MEAN), list(IMAGENET_STD))
    model.detector_name, model.img_size, model.head_style, model.backbone_load_report = name, img_size, head_style, report
    return model


def _check_args(img_size: int, num_classes: int, head_style: str, anchor_size: float, roi_canonical_scale: int) -> None:
    if img_size < 64 or img_size % 32:
        lo = max(64, img_size // 32 * 32)
        raise ValueError(f"detector input size must be a multiple of 32 and at least 64 (p6 is 1/64 of it), "
                         f"got {img_size}; nearest: {lo} or {lo + 32}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background too: expected >= 2, got {num_classes}")
    if not roi_canonical_scale > 0:
        raise ValueError(f"roi_canonical_scale is the RoI side read from p4: expected a number > 0, got {roi_canonical_scale}")
    if not anchor_size > 0:
        raise ValueError(f"anchor_size is the anchor side in strides: expected a number > 0, got {anchor_size}")
    if head_style not in HEAD_STYLES:
        raise ValueError(f"head_style must be one of {HEAD_STYLES}, got {head_style!r}")


def _heads(style: str, kind: str, num_classes: int, channels: int, box_convs: int, box_fc: int, mask_convs: int,
           mask_channels: int, anchor_size: float, canonical: int) -> dict[str, nn.Module]:
    """``TPU_OPTIONS`` plus the anchors, RoIAlign and the rpn_head, box_head, box_predictor (and
    mask_head, mask_predictor) of ``style``: the torchvision MaskRCNN / FasterRCNN options."""
    levels = len(LEVELS)
    options = dict(TPU_OPTIONS, rpn_anchor_generator=TPUAnchorGenerator(
        tuple((anchor_size * 2 ** (i + 2),) for i in range(levels)), ((0.5, 1.0, 2.0),) * levels,
        tuple(2 ** (i + 2) for i in range(levels))),
        box_roi_pool=MultiScaleRoIAlign(list(LEVELS), 7, sampling_ratio=1, canonical_scale=canonical))
    if kind == "maskrcnn":
        options["mask_roi_pool"] = MultiScaleRoIAlign(list(LEVELS), 14, sampling_ratio=1, canonical_scale=canonical)
    if style == "tpu":
        heads = dict(rpn_head=RPNHeadBN(channels, 3, levels, conv_depth=2),
                     box_head=FastRCNNHeadBN((channels, 7, 7), box_convs, channels, box_fc))
    else:
        heads = dict(rpn_head=RPNHead(channels, 3), box_head=TwoMLPHead(channels * 7 * 7, box_fc))
    heads["box_predictor"] = init_box_predictor(FastRCNNPredictor(box_fc, num_classes))
    if kind == "maskrcnn":
        if style == "tpu":
            heads["mask_head"] = mask_head_bn(channels, mask_convs, mask_channels)
            heads["mask_predictor"] = MaskRCNNPredictorBN(mask_channels, mask_channels, num_classes)
        else:
            heads["mask_head"] = MaskRCNNHeads(channels, [mask_channels] * mask_convs, 1)
            heads["mask_predictor"] = MaskRCNNPredictor(mask_channels, mask_channels, num_classes)
    return dict(options, **heads)
