"""Detector builders: the paper's A.2 configuration on torchvision, for every backbone of the registry."""

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from botnet.detection import create_detector, list_detectors, parse_detector_name
from botnet.detection.heads import RPNHeadBN
from botnet.layers import MHSA2d
from botnet.models import list_models

TINY = dict(fpn_channels=32, box_fc=64, mask_channels=32, rpn_post_nms_top_n_train=64, rpn_pre_nms_top_n_train=128,
            box_batch_size_per_image=32, rpn_post_nms_top_n_test=50, rpn_pre_nms_top_n_test=100)


def test_every_stride32_backbone_has_both_detectors():
    names = set(list_detectors())
    classification_only = set(list_models("botnet_s1_*")) | set(list_models("botnet_t[0-9]*"))
    for b in set(list_models()) - classification_only:
        assert {f"maskrcnn_{b}_fpn", f"fasterrcnn_{b}_fpn"} <= names
    for table_name in ("maskrcnn_botnet50_fpn", "maskrcnn_resnet152_fpn", "maskrcnn_botnet50_c5_011_fpn",
                       "maskrcnn_resnet50_nl_c4_fpn", "maskrcnn_resnet50_se_c5_fpn", "fasterrcnn_botnet152_fpn",
                       "maskrcnn_botnet200_fpn"):
        assert table_name in names


@pytest.mark.parametrize("name", ["maskrcnn_botnett50_fpn", "botnet50", "maskrcnn_botnet_s1_50_fpn"])
def test_bad_names_are_clear_errors(name):
    with pytest.raises(ValueError, match="botnet|stride"):
        if name.startswith("maskrcnn_botnet_s1"):
            create_detector(name, num_classes=3, img_size=64, **TINY)
        else:
            parse_detector_name(name)


@pytest.mark.parametrize("name", list_detectors("maskrcnn_*"))
def test_every_detector_builds_with_the_right_backbone(name):
    """Built on the meta device (no memory, no time): backbone, FPN widths and BoT table sizes."""
    with torch.device("meta"):
        model = create_detector(name, num_classes=81, img_size=1024)
    body = model.backbone.body
    assert body.model_name == parse_detector_name(name)[1]
    assert isinstance(body.fc, nn.Identity)
    chans = [i["num_chs"] for i in body.feature_info[1:]]
    lateral_in = [next(m for m in b.modules() if isinstance(m, nn.Conv2d)).in_channels for b in model.backbone.fpn.inner_blocks]
    assert lateral_in == chans
    for m in body.modules():
        if isinstance(m, MHSA2d):
            assert tuple(m.pos.feat_size) in {(32, 32), (64, 64), (128, 128)}  # c5 at 1024/32, c4 (ablations) at /16, c3 (timm's botnet50ts_256) at /8


def test_paper_a2_configuration():
    model = create_detector("maskrcnn_botnet50_fpn", num_classes=81)
    # FPN p2-p6 with batch norm (layer by layer: tests/detection/test_det_tpu.py)
    fpn = model.backbone.fpn
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fpn.modules()) == 5
    assert model.backbone.out_channels == 256
    # anchors: 8 x stride for strides 4..64, 3 aspect ratios
    ag = model.rpn.anchor_generator
    assert ag.sizes == ((32,), (64,), (128,), (256,), (512,))
    assert all(r == (0.5, 1.0, 2.0) for r in ag.aspect_ratios)
    # RPN head: 2 convs of 256 with batch norm (per level), 3 anchors per location
    head = model.rpn.head
    assert isinstance(head, RPNHeadBN) and len(head.conv) == 2 and head.cls_logits.out_channels == 3
    # box head: 4 convs of 256 with BN + 1 FC of 1024 with BN
    bh = model.roi_heads.box_head
    convs = [m for m in bh.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in bh.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 4 and all(c.out_channels == 256 for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bh.modules()) == 4
    assert sum(isinstance(m, nn.BatchNorm1d) for m in bh.modules()) == 1
    assert [f.out_features for f in fcs] == [1024]
    # mask head: 4 convs of 256 with BN; 14x14 RoIAlign upsampled to 28x28 mask logits
    mh = model.roi_heads.mask_head
    assert sum(isinstance(m, nn.Conv2d) for m in mh.modules()) == 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in mh.modules()) == 4
    assert model.roi_heads.mask_roi_pool.output_size == (14, 14)
    x = torch.zeros(2, 256, 14, 14)
    assert model.roi_heads.mask_predictor(x).shape == (2, 81, 28, 28)
    # backbone: trained batch norm; BoT layers at 1024 / 32 = 32x32
    assert any(isinstance(m, nn.BatchNorm2d) and m.weight.requires_grad for m in model.backbone.body.modules())
    assert [tuple(m.pos.feat_size) for m in model.modules() if isinstance(m, MHSA2d)] == [(64, 64), (32, 32), (32, 32)]
    # 8-conv mask head option (the 44.4 AP model)
    m8 = create_detector("maskrcnn_botnet200_fpn", num_classes=81, mask_head_convs=8, img_size=1280)
    assert sum(isinstance(m, nn.Conv2d) for m in m8.roi_heads.mask_head.modules()) == 8
    assert [tuple(m.pos.feat_size) for m in m8.modules() if isinstance(m, MHSA2d)][-1] == (40, 40)


def _targets(n, size):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        xy = torch.randint(0, size // 2, (2, 2), generator=g).float()
        boxes = torch.cat([xy, xy + torch.randint(8, size // 2, (2, 2), generator=g)], 1)
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        for m, b in zip(masks, boxes.long()):
            m[b[1]:b[3], b[0]:b[2]] = 1
        out.append({"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks})
    return out


@pytest.mark.parametrize("kind", ["maskrcnn", "fasterrcnn"])
def test_train_step_and_eval_at_original_size(kind):
    torch.manual_seed(0)
    model = create_detector(f"{kind}_botnet_tiny_fpn", num_classes=3, img_size=64, **TINY)
    model.train()
    losses = model([torch.rand(3, 64, 64) for _ in range(2)], _targets(2, 64))
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} | ({"loss_mask"} if kind == "maskrcnn" else set())
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    mhsa = [m for m in model.modules() if isinstance(m, MHSA2d)]
    assert mhsa and all(p.grad is not None for m in mhsa for p in m.parameters())
    # the BoT branch's last BN starts at zero (zero_init_last), so its gradient is what moves it first
    assert model.backbone.body.layer4[-1].bn3.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 50, 40), torch.rand(3, 64, 64)])
    assert len(out) == 2
    assert (out[0]["boxes"][:, 2] <= 40 + 1e-3).all() and (out[0]["boxes"][:, 3] <= 50 + 1e-3).all()
    if kind == "maskrcnn":
        assert out[0]["masks"].shape[1:] == (1, 50, 40)


def test_fixed_size_input_checks():
    with pytest.raises(ValueError, match="multiple of 32"):
        create_detector("maskrcnn_botnet_tiny_fpn", num_classes=3, img_size=100, **TINY)
    model = create_detector("maskrcnn_botnet_tiny_fpn", num_classes=3, img_size=64, **TINY).train()
    with pytest.raises(ValueError, match="larger than the detector's fixed input"):
        model([torch.rand(3, 96, 64)], _targets(1, 96))
    # eval resizes the longest side to the fixed size and pads: the BoT tables keep their size
    model.eval()
    images, _ = model.transform([torch.rand(3, 200, 100)])
    assert images.tensors.shape == (1, 3, 64, 64) and images.image_sizes == [(64, 32)]


def test_backbone_init_from_torchvision_resnet(tmp_path):
    """The paper's footnote 6: ImageNet ResNet weights everywhere but the BoT layers, which stay random."""
    import torchvision

    tv = torchvision.models.resnet50()
    torch.save(tv.state_dict(), tmp_path / "r50.pt")
    model = create_detector("maskrcnn_botnet50_fpn", num_classes=5, img_size=256, backbone_weights=str(tmp_path / "r50.pt"))
    rep = model.backbone_load_report
    assert torch.equal(model.backbone.body.layer3[2].conv2.weight, tv.layer3[2].conv2.weight)
    assert torch.equal(model.backbone.body.layer4[0].conv1.weight, tv.layer4[0].conv1.weight)
    assert any(k.startswith("layer4.0.conv2") for k in rep.unexpected)  # the replaced 3x3 convs
    assert any("attn" in k or "mhsa" in k or "rel_" in k for k in rep.missing)
    assert "fc.weight" in rep.unexpected


def test_frozen_bn_and_torchvision_heads_options():
    model = create_detector("fasterrcnn_resnet50_fpn", num_classes=3, img_size=256, norm_layer=FrozenBatchNorm2d,
                            head_style="torchvision")
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.body.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_anchor_size_and_roi_level_rule_scale_with_small_inputs():
    """anchor_size (the TPU's anchor.anchor_size) sets every level's anchor side in strides;
    roi_canonical_scale the RoI side read from p4, k = 4 + log2(sqrt(area) / scale) clamped to p2..p6."""
    model = create_detector("maskrcnn_botnet_tiny_fpn", num_classes=3, img_size=128, anchor_size=2,
                            roi_canonical_scale=28, **TINY)
    assert model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    for pool in (model.roi_heads.box_roi_pool, model.roi_heads.mask_roi_pool):
        feats = {k: torch.zeros(1, 1, 128 // s, 128 // s) for k, s in zip(("0", "1", "2", "3", "pool"), (4, 8, 16, 32, 64))}
        pool(feats, [torch.zeros(1, 4)], [(128, 128)])  # torchvision builds its level mapper on the first call
        boxes = torch.tensor([[0, 0, 7, 7], [0, 0, 14, 14], [0, 0, 28, 28], [0, 0, 56, 56], [0, 0, 112, 112.]])
        assert pool.map_levels([boxes]).tolist() == [0, 1, 2, 3, 4]  # p2..p6
    default = create_detector("maskrcnn_botnet_tiny_fpn", num_classes=3, img_size=128, **TINY)
    assert default.rpn.anchor_generator.sizes[0] == (32,) and default.roi_heads.box_roi_pool.canonical_scale == 224
    for bad in (dict(anchor_size=0), dict(roi_canonical_scale=-1)):
        with pytest.raises(ValueError, match="expected a number > 0"):
            create_detector("maskrcnn_botnet_tiny_fpn", num_classes=3, img_size=128, **bad, **TINY)
