"""botnet.models.precision: bfloat16 classifiers and detectors against float32, and the choice of
precision."""

import pytest
import torch

from botnet.detection.builders import create_detector
from botnet.models import create_model
from botnet.models.precision import (DETECTOR_PARTS, PRECISIONS, AutocastPart, CastIO, bf16_classifier, bf16_detector,
                                     check_precision, prepare_inference, resolve_precision)

# one of timm's family (SE, ECA and the other variants share its blocks), the paper's BoT50, the demo's
CASES = [("sebotnet33ts_256", 64), ("botnet50", 64), ("botnet_tiny", 64)]


@pytest.mark.parametrize("name,size", CASES)
def test_bf16_classifier_is_float32_in_and_out_and_close_to_float32(name, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, img_size=size).eval()
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        want = model(x)
        half = bf16_classifier(model)
        got = half(x)
    assert isinstance(half, CastIO) and got.dtype == torch.float32 and got.shape == want.shape
    weights = [p for p in half.parameters() if p.dim() == 4]
    assert weights and all(p.dtype == torch.bfloat16 and p.is_contiguous(memory_format=torch.channels_last)
                           for p in weights)
    rel = float((got - want).norm() / want.norm())
    assert rel < 0.05, rel  # bfloat16 rounding (8-bit mantissa) through the network: about 0.5-2 % here
    assert next(model.parameters()).dtype == torch.float32  # the original is left alone


def test_bf16_detector_keeps_boxes_in_float32():
    torch.manual_seed(0)
    model = create_detector("maskrcnn_botnet_tiny_fpn", num_classes=4, img_size=64, fpn_channels=32, box_fc=64,
                            mask_channels=32, anchor_size=2).eval()
    model.roi_heads.score_thresh = 0.0
    half = bf16_detector(model)
    wrapped = [p for p in DETECTOR_PARTS if isinstance(half.get_submodule(p), AutocastPart)]
    assert wrapped == list(DETECTOR_PARTS)
    img = [torch.rand(3, 64, 64)]
    with torch.no_grad():
        want, got = model(img)[0], half(img)[0]
        feats32 = model.backbone(img[0][None])
        feats16 = half.backbone(img[0][None])
    assert all(got[k].dtype == want[k].dtype for k in want) and got["boxes"].dtype == torch.float32
    for k, f in feats32.items():
        assert feats16[k].dtype == torch.float32
        assert float((feats16[k] - f).norm() / f.norm()) < 0.05
    # the best-scoring float32 detection has a bf16 detection of its class on top of it
    from torchvision.ops import box_iou

    same = got["labels"] == want["labels"][0]
    assert float(box_iou(want["boxes"][:1], got["boxes"][same]).max()) > 0.9
    assert not isinstance(model.backbone, AutocastPart)  # a copy


def test_precision_is_resolved_per_device_and_recipe():
    assert resolve_precision("auto", "cpu", "bf16") is None
    assert resolve_precision("auto", "cuda", "bf16") is torch.bfloat16
    assert resolve_precision("auto", "cuda", "fp16") is torch.float16
    assert resolve_precision("auto", "cuda", "none") is None
    assert resolve_precision("fp32", "cuda", "bf16") is None
    assert resolve_precision("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp8'"):
        check_precision("fp8")
    model = create_model("botnet_tiny", num_classes=3, img_size=32).eval()
    run, amp, name = prepare_inference(model, "classification", "bf16", "cpu")
    assert isinstance(run, CastIO) and amp is None and name == "bf16"
    run, amp, name = prepare_inference(model, "classification", "auto", "cpu")
    assert (amp, name) == (None, "fp32") and run is not model  # folded: a copy
    assert run.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    detector = create_detector("fasterrcnn_botnet_tiny_fpn", num_classes=3, img_size=64)
    assert prepare_inference(detector, "detection", "fp32", "cpu") == (detector, None, "fp32")


def test_the_cli_lists_the_same_precisions():
    from botnet.cli.precision import EXPORT_PRECISIONS, PRECISIONS as CLI
    from botnet.export.classify import EXPORT_PRECISIONS as EXPORTERS

    assert CLI == PRECISIONS and EXPORT_PRECISIONS == EXPORTERS
