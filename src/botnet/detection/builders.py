"""Mask R-CNN and Faster R-CNN with FPN on any backbone of the registry, in the paper's A.2 setup.

``create_detector("maskrcnn_botnet50_fpn", num_classes=81)`` builds torchvision's ``MaskRCNN``
with:

- backbone: the registry model (BoT layers included) + FPN p2..p6, batch norm in both;
- anchors: one size per level, 8 x stride (32..512 for p2..p6), aspect ratios 0.5, 1, 2;
- RPN head: 2 convs of 256 with batch norm;
- box head: 4 convs of 256 with batch norm + 1 FC of 1024;
- mask head: 4 convs of 256 with batch norm (``mask_head_convs=8`` for the 44.4 AP model),
  28 x 28 mask targets (14 x 14 RoIAlign, upsampled 2x by the predictor);
- fixed ``img_size x img_size`` input (1024 by default; any multiple of 32).

The names are ``{maskrcnn,fasterrcnn}_{backbone}_fpn`` for every stride-32 backbone of the model
registry, so the paper's tables are rerun by changing one name. See docs/detection.md for where
torchvision's parts differ from the TPU code of the paper.
"""

from __future__ import annotations

import re
from typing import Callable

from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..models import is_model, list_models
from ..models.convert import load_pretrained
from .backbone import build_backbone
from .heads import RPNHeadBN
from .transform import FixedSizeTransform

__all__ = ["create_detector", "list_detectors", "parse_detector_name", "DETECTOR_KINDS"]

DETECTOR_KINDS = ("maskrcnn", "fasterrcnn")
_NAME = re.compile(r"^(maskrcnn|fasterrcnn)_(.+)_fpn$")
# Classification-only registry entries: c5 at stride 16 (BoTNet-S1 and T3-T7) does not give p2..p5.
_EXCLUDED = ("botnet_s1_*", "botnet_t[0-9]*")


def list_detectors(pattern: str = "*") -> list[str]:
    """Every detector name: both kinds for every stride-32 backbone of the registry."""
    import fnmatch

    excluded = {n for p in _EXCLUDED for n in list_models(p)}
    names = [f"{kind}_{b}_fpn" for kind in DETECTOR_KINDS for b in list_models() if b not in excluded]
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def parse_detector_name(name: str) -> tuple[str, str]:
    """'maskrcnn_botnet50_fpn' -> ('maskrcnn', 'botnet50'); a clear error otherwise."""
    m = _NAME.match(name)
    if not m or not is_model(m.group(2)):
        import difflib

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
    norm_layer: Callable[..., nn.Module] | None = None,
    heads_norm: bool = True,
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
        norm_layer: the backbone's normalization (default trained BatchNorm2d; e.g.
            ``torchvision.ops.FrozenBatchNorm2d`` for Detectron-style frozen statistics).
        heads_norm: batch norm in FPN, RPN, box and mask heads (the paper); False: torchvision's
            plain convolutions.
        backbone_weights: an ImageNet checkpoint (ours, torchvision's or timm's) loaded into the
            matching backbone layers; BoT layers stay random (the paper's footnote 6). The load
            report is kept as ``model.backbone_load_report``.
        backbone_kwargs: options of the backbone model (e.g. ``pos_enc``, ``width``).
        detector_kwargs: torchvision ``MaskRCNN`` / ``FasterRCNN`` options (``rpn_post_nms_top_n_train``,
            ``box_batch_size_per_image``, ``box_detections_per_img``, ``box_score_thresh``, ...).

    Returns a torchvision ``MaskRCNN`` / ``FasterRCNN``: in training ``model(images, targets)`` gives
    a dict of losses, in eval ``model(images)`` a list of {boxes (N,4) xyxy in original pixels,
    labels (N,), scores (N,), masks (N,1,H,W) probabilities}.
    """
    kind, backbone_name = parse_detector_name(name)
    if img_size < 64 or img_size % 32:
        lo = max(64, img_size // 32 * 32)
        raise ValueError(f"detector input size must be a multiple of 32 and at least 64 (p6 is 1/64 of it), "
                         f"got {img_size}; nearest: {lo} or {lo + 32}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background too: expected >= 2, got {num_classes}")
    bn = nn.BatchNorm2d if heads_norm else None
    backbone = build_backbone(backbone_name, img_size, fpn_channels, norm_layer=norm_layer, fpn_norm=heads_norm,
                              **(backbone_kwargs or {}))
    report = None
    if backbone_weights:
        report = load_pretrained(backbone.body, backbone_weights)  # timm BoTNet-family files converted, others matched
    levels = 5
    anchors = AnchorGenerator(sizes=tuple((8 * 2 ** (i + 2),) for i in range(levels)),
                              aspect_ratios=((0.5, 1.0, 2.0),) * levels)
    rpn_head = (RPNHeadBN(fpn_channels, 3, levels, conv_depth=2) if heads_norm
                else _plain_rpn_head(fpn_channels))
    box_head = FastRCNNConvFCHead((fpn_channels, 7, 7), [fpn_channels] * box_head_convs, [box_fc], norm_layer=bn)
    common = dict(rpn_anchor_generator=anchors, rpn_head=rpn_head, box_head=box_head,
                  box_predictor=FastRCNNPredictor(box_fc, num_classes), min_size=img_size, max_size=img_size)
    common.update(detector_kwargs)
    if kind == "maskrcnn":
        mask_head = MaskRCNNHeads(fpn_channels, [mask_channels] * mask_head_convs, 1, norm_layer=bn)
        model = MaskRCNN(backbone, mask_head=mask_head, mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes),
                         **common)
    else:
        model = FasterRCNN(backbone, **common)
    model.transform = FixedSizeTransform(img_size, list(IMAGENET_MEAN), list(IMAGENET_STD))
    model.detector_name = name
    model.img_size = img_size
    model.backbone_load_report = report
    return model


def _plain_rpn_head(channels: int) -> nn.Module:
    from torchvision.models.detection.rpn import RPNHead

    return RPNHead(channels, 3, conv_depth=2)
