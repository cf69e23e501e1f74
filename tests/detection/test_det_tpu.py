"""The default detector is the Cloud TPU detection model of BoTNet's appendix A.2.

Each test holds a written description of the TPU model (tensorflow/tpu models/official/detection at
commit 1e6a3a5: modeling/architecture/fpn.py, heads.py, dataloader/anchor.py, modeling/losses.py,
utils/input_utils.py) and checks our model against it: the layer sequence of each head, a reference
forward of the FPN and the RPN head written from the description with the model's own weights,
the parameter count by arithmetic, the anchors, the RPN losses, the input padding; and that the
torchvision-style variant loads torchvision's own Mask R-CNN weights and gives its outputs.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import tv_tensors

from botnet.data import build_det_transforms
from botnet.detection import create_detector

C = 256  # A.2: fpn / rpn_head / frcnn_head / mrcnn_head num_filters


def _describe(m: nn.Module) -> str:
    if isinstance(m, nn.ConvTranspose2d):
        return f"deconv{m.kernel_size[0]}x{m.kernel_size[1]}/{m.stride[0]} {m.in_channels}->{m.out_channels} bias"
    if isinstance(m, nn.Conv2d):
        bias = " bias" if m.bias is not None else ""
        return f"conv{m.kernel_size[0]}x{m.kernel_size[1]}/{m.stride[0]} {m.in_channels}->{m.out_channels}{bias}"
    if isinstance(m, nn.Linear):
        return f"fc {m.in_features}->{m.out_features}" + (" bias" if m.bias is not None else "")
    return {nn.BatchNorm2d: "bn", nn.BatchNorm1d: "bn", nn.ReLU: "relu", nn.Flatten: "flatten"}[type(m)]


def _executed(module: nn.Module, *inputs) -> list[str]:
    """The leaf layers of ``module`` in the order a forward pass runs them."""
    order, hooks = [], []
    for m in module.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(lambda mod, i, o: order.append(_describe(mod))))
    with torch.no_grad():
        module.eval()(*inputs)
    for h in hooks:
        h.remove()
    return order


@pytest.fixture(scope="module")
def a2_model():
    torch.manual_seed(0)
    return create_detector("maskrcnn_botnet50_fpn", num_classes=91, img_size=128).eval()


def test_box_and_mask_heads_are_the_tpu_layers_in_order(a2_model):
    # FastrcnnHead (heads.py 218-259), num_convs=4, num_fcs=1, fc_dims=1024, use_batch_norm=True:
    # conv 3x3 (bias) -> BN -> ReLU, four times; flatten; FC 1024 -> BN -> ReLU; class and box FCs
    tpu_box = [f"conv3x3/1 {C}->{C} bias", "bn", "relu"] * 4 + [f"fc {C * 49}->1024 bias", "bn", "relu"]
    got = _executed(a2_model.roi_heads.box_head, torch.randn(3, C, 7, 7))
    assert [g for g in got if g != "flatten"] == tpu_box
    pred = a2_model.roi_heads.box_predictor
    assert (pred.cls_score.in_features, pred.cls_score.out_features, pred.bbox_pred.out_features) == (1024, 91, 364)
    assert pred.cls_score.weight.std().item() == pytest.approx(0.01, rel=0.05)  # heads.py 251
    assert pred.bbox_pred.weight.std().item() == pytest.approx(0.001, rel=0.05)  # heads.py 257
    # MaskrcnnHead (heads.py 337-374), num_convs=4: conv 3x3 -> BN -> ReLU four times, 2x2 stride-2
    # transposed conv -> BN -> ReLU, 1x1 conv to the class logits (28 x 28 from 14 x 14 RoIs)
    tpu_mask = [f"conv3x3/1 {C}->{C} bias", "bn", "relu"] * 4 + [f"deconv2x2/2 {C}->{C} bias", "bn", "relu",
                                                                  f"conv1x1/1 {C}->91 bias"]
    rh = a2_model.roi_heads
    x = torch.randn(2, C, 14, 14)
    assert _executed(nn.Sequential(rh.mask_head, rh.mask_predictor), x) == tpu_mask
    assert rh.mask_predictor(rh.mask_head(x)).shape == (2, 91, 28, 28)
    # RoIAlign: p2..p6 (the TPU assigns RoIs to every FPN level), one sample per bin, 7 and 14
    for pool, size in ((rh.box_roi_pool, 7), (rh.mask_roi_pool, 14)):
        assert pool.featmap_names == ["0", "1", "2", "3", "pool"] and pool.sampling_ratio == 1
        assert pool.output_size == (size, size)


def test_fpn_is_the_tpu_fpn(a2_model):
    """fpn.py 90-136: lateral 1x1 convs with bias and no BN; top-down nearest 2x + add; post-hoc 3x3
    convs; p6 = 3x3 stride-2 conv ('same' padding) on the post-hoc p5 before its BN; then BN without
    activation once on each of p2..p6. Written out here with the model's own layers."""
    fpn = a2_model.backbone.fpn
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fpn.modules()) == 5
    assert not any(isinstance(m, (nn.ReLU, nn.MaxPool2d)) for m in fpn.modules())
    g = torch.Generator().manual_seed(1)
    chans, sides = (256, 512, 1024, 2048), (32, 16, 8, 4)
    c = {str(i): torch.randn(2, ch, s, s, generator=g) for i, (ch, s) in enumerate(zip(chans, sides))}
    with torch.no_grad():
        for bn in fpn.norms:  # non-trivial running statistics, so that the BN's place shows
            bn.running_mean.normal_(generator=g)
            bn.running_var.uniform_(0.5, 2.0, generator=g)
        got = fpn(c)
        lat = [F.conv2d(c[str(i)], fpn.inner_blocks[i].weight, fpn.inner_blocks[i].bias) for i in range(4)]
        top = [None, None, None, lat[3]]
        for i in (2, 1, 0):
            top[i] = F.interpolate(top[i + 1], scale_factor=2, mode="nearest") + lat[i]
        post = [F.conv2d(t, fpn.layer_blocks[i].weight, fpn.layer_blocks[i].bias, padding=1) for i, t in enumerate(top)]
        # TF 'same' for a 3x3 stride-2 conv on an even size: 0 rows / columns before, 1 after
        p6 = F.conv2d(F.pad(post[3], [0, 1, 0, 1]), fpn.p6.weight, fpn.p6.bias, stride=2)
        ref = [F.batch_norm(p, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
               for p, bn in zip(post + [p6], fpn.norms)]
    assert list(got) == ["0", "1", "2", "3", "pool"]
    assert [tuple(v.shape[-2:]) for v in got.values()] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    for v, r in zip(got.values(), ref):
        torch.testing.assert_close(v, r, rtol=1e-4, atol=1e-4)
    assert all(m.bias is not None for m in fpn.modules() if isinstance(m, nn.Conv2d))


def test_rpn_head_is_the_tpu_rpn_head(a2_model):
    """heads.py 95-130 (num_convs=2, use_batch_norm=True): per level, conv3x3 (shared, bias) -> BN (of
    this level and conv) -> ReLU, twice; then 1x1 objectness (3 anchors) and 1x1 box (12) convs."""
    head = a2_model.rpn.head
    g = torch.Generator().manual_seed(2)
    feats = [torch.randn(1, C, s, s, generator=g) for s in (16, 8, 4, 2, 1)]
    with torch.no_grad():
        for bn in (n for level in head.norms for n in level):
            bn.running_mean.normal_(generator=g)
        logits, deltas = head(feats)
        for level, x in enumerate(feats):
            for depth, conv in enumerate(head.conv):
                bn = head.norms[depth][level]
                x = F.relu(F.batch_norm(F.conv2d(x, conv.weight, conv.bias, padding=1), bn.running_mean, bn.running_var,
                                        bn.weight, bn.bias, False, 0.0, bn.eps))
            torch.testing.assert_close(logits[level], head.cls_logits(x))
            torch.testing.assert_close(deltas[level], head.bbox_pred(x))
    assert len({id(n) for level in head.norms for n in level}) == 10  # 2 convs x 5 levels, none shared
    assert (head.cls_logits.out_channels, head.bbox_pred.out_channels) == (3, 12)
    assert all(conv.bias is not None and conv.weight.std().item() == pytest.approx(0.01, rel=0.05) for conv in head.conv)


def test_tpu_numbers(a2_model):
    """configs/maskrcnn_config.py 39-112 and detection_config.py 65-75 (commit 1e6a3a5)."""
    rpn, rh = a2_model.rpn, a2_model.roi_heads
    a2_model.train()
    assert (rpn.pre_nms_top_n(), rpn.post_nms_top_n()) == (2000, 1000)
    a2_model.eval()
    assert (rpn.pre_nms_top_n(), rpn.post_nms_top_n()) == (1000, 1000)
    assert (rpn.nms_thresh, rpn.score_thresh) == (0.7, 0.0)
    assert (rpn.proposal_matcher.high_threshold, rpn.proposal_matcher.low_threshold) == (0.7, 0.3)
    assert (rpn.fg_bg_sampler.batch_size_per_image, rpn.fg_bg_sampler.positive_fraction) == (256, 0.5)
    assert (rh.fg_bg_sampler.batch_size_per_image, rh.fg_bg_sampler.positive_fraction) == (512, 0.25)
    assert (rh.proposal_matcher.high_threshold, rh.proposal_matcher.low_threshold) == (0.5, 0.5)
    assert (rh.score_thresh, rh.nms_thresh, rh.detections_per_img) == (0.05, 0.5, 100)
    assert rh.box_coder.weights == (10.0, 10.0, 5.0, 5.0) and rpn.box_coder.weights == (1.0, 1.0, 1.0, 1.0)


def test_anchors_are_the_tpu_anchors(a2_model):
    """anchor.py 71-98: per level l (stride 2^l, l = 2..6), one size 8 x stride, aspect ratios
    {0.5, 1, 2} as w/h with sides size * sqrt(ar) x size / sqrt(ar), unrounded, centred at
    stride / 2 + k * stride."""
    from torchvision.models.detection.image_list import ImageList

    ag = a2_model.rpn.anchor_generator
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    feats = [torch.zeros(1, 1, 64 // 2 ** lv, 64 // 2 ** lv) for lv in range(2, 7)]
    anchors = ag(images, feats)[0]
    start = 0
    for lv in range(2, 7):
        stride, n = 2 ** lv, (64 // 2 ** lv) ** 2
        level = anchors[start:start + 3 * n]
        start += 3 * n
        sides = {(round(float(w), 3), round(float(h), 3)) for w, h in level[:3, 2:] - level[:3, :2]}
        size = 8 * stride
        assert sides == {(round(size * math.sqrt(ar), 3), round(size / math.sqrt(ar), 3)) for ar in (0.5, 1.0, 2.0)}
        centres = (level[:, :2] + level[:, 2:]) / 2
        assert centres[:, 0].min().item() == pytest.approx(stride / 2) and centres[:, 1].min().item() == pytest.approx(stride / 2)
        assert centres[:, 0].max().item() == pytest.approx(64 - stride / 2)
    assert start == len(anchors)


def _huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    a = x.abs()
    return torch.where(a <= delta, 0.5 * a ** 2, delta * (a - 0.5 * delta))


def test_rpn_losses_are_the_tpu_losses(a2_model):
    """losses.py 107-190: score = sigmoid cross-entropy summed over the sampled anchors / (B x 256);
    box = per level, Huber(delta=1/9) summed over the level's positive anchors / (4 x their number),
    summed over the levels."""
    rpn = a2_model.rpn
    counts = [3 * (128 // 2 ** lv) ** 2 for lv in range(2, 7)]  # anchors of p2..p6 at 128 x 128
    assert rpn.anchors_per_level == counts
    n = sum(counts)
    g = torch.Generator().manual_seed(3)
    labels = [torch.randint(-1, 2, (n,), generator=g).float() for _ in range(2)]
    labels[0][:counts[0]] = torch.where(labels[0][:counts[0]] > 0, 0.0, labels[0][:counts[0]])  # few positives on p2
    labels[0][5] = 1.0
    objectness, deltas = torch.randn(2 * n, 1, generator=g), torch.randn(2 * n, 4, generator=g) * 0.3
    targets = [torch.randn(n, 4, generator=g) * 0.3 for _ in range(2)]
    torch.manual_seed(7)
    score, box = rpn.compute_loss(objectness, deltas, labels, targets)
    torch.manual_seed(7)
    pos, neg = rpn.fg_bg_sampler(labels)
    sampled = (torch.cat(pos) | torch.cat(neg)).bool()
    y, z = torch.cat(labels), objectness.flatten()
    bce = torch.clamp(z, min=0) - z * y + torch.log1p(torch.exp(-z.abs()))  # TF sigmoid_cross_entropy
    assert int(sampled.sum()) == 512
    torch.testing.assert_close(score, bce[sampled].sum() / (2 * 256))
    ref, start = 0.0, 0
    err = deltas - torch.cat(targets)
    for c in counts:
        in_level = torch.zeros(n, dtype=torch.bool)
        in_level[start:start + c] = True
        start += c
        positive = (y == 1) & in_level.repeat(2)
        ref = ref + _huber(err[positive], 1 / 9).sum() / max(4 * int(positive.sum()), 1)
    torch.testing.assert_close(box, ref)
    # an image without boxes: torchvision encodes its anchors against empty boxes (infinite targets),
    # which must not reach the loss (no positives there)
    labels[1] = torch.where(labels[1] > 0, 0.0, labels[1])
    targets[1] = torch.full((n, 4), -float("inf"))
    score, box = rpn.compute_loss(objectness, deltas, labels, targets)
    assert torch.isfinite(score) and torch.isfinite(box) and box > 0


def _resnet50_count() -> int:
    """torchvision-layout ResNet-50 without fc: stem 7x7 conv + BN, then bottlenecks (1x1, 3x3, 1x1
    convs without bias, each with a BN of 2 params per channel; 1x1 projection + BN on each stage's
    first block)."""
    total = 3 * 64 * 49 + 2 * 64
    c_in = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            total += c_in * width + 2 * width + 9 * width * width + 2 * width + width * 4 * width + 2 * 4 * width
            if b == 0:
                total += c_in * 4 * width + 2 * 4 * width
            c_in = 4 * width
    return total


def _bot50_count(img_size: int) -> int:
    """BoT50: ResNet-50 with the 3x3 convs of c5's three blocks replaced by MHSA (gist: q, k, v
    projections of 512 x 512 without bias, 4 heads of 128; relative tables (2F - 1) x 128 for height
    and for width, F the side of the attention map: img_size / 16 in the first block, which attends
    before its 2x2 average pool (A.4), img_size / 32 in the other two)."""
    total = _resnet50_count() - 3 * 9 * 512 * 512
    for side in (img_size // 16, img_size // 32, img_size // 32):
        total += 3 * 512 * 512 + 2 * (2 * side - 1) * 128
    return total


def _tpu_heads_count(num_classes: int) -> int:
    """FPN + RPN head + box head + mask head of the TPU model (A.2 sizes), every conv / FC with a bias."""
    conv3, bn = 9 * C * C + C, 2 * C
    fpn = sum(c * C + C for c in (256, 512, 1024, 2048)) + 4 * conv3 + conv3 + 5 * bn  # laterals, post-hoc, p6, BN
    rpn = 2 * conv3 + 2 * 5 * bn + (C * 3 + 3) + (C * 12 + 12)
    box = 4 * (conv3 + bn) + (C * 49 * 1024 + 1024) + 2 * 1024 + (1024 * num_classes + num_classes) \
        + (1024 * 4 * num_classes + 4 * num_classes)
    mask = 4 * (conv3 + bn) + (4 * C * C + C) + bn + (C * num_classes + num_classes)
    return fpn + rpn + box + mask


@pytest.mark.parametrize("backbone", ["resnet50", "botnet50"])
def test_parameter_count_is_the_tpu_models(backbone):
    """Mask R-CNN at A.2 sizes (1024 x 1024, 91 classes as the TPU's num_classes), counted by arithmetic."""
    with torch.device("meta"):
        model = create_detector(f"maskrcnn_{backbone}_fpn", num_classes=91, img_size=1024)
    body = _resnet50_count() if backbone == "resnet50" else _bot50_count(1024)
    assert sum(p.numel() for p in model.backbone.body.parameters()) == body
    assert sum(p.numel() for p in model.parameters()) == body + _tpu_heads_count(91)


def test_training_and_eval_give_the_same_padded_normalised_input():
    """TPU maskrcnn_parser.py 203-226 / 330-340: normalise, resize, zero-pad to S x S at the
    top-left, in training and evaluation alike. One non-square image, training at scale 1 without
    flip (so no crop) and evaluation: the same input tensor (up to float rounding: the training
    pipeline resizes before the model normalises, evaluation after); the padding is 0, i.e. the
    mean colour, not black."""
    torch.manual_seed(0)
    model = create_detector("maskrcnn_botnet_tiny_fpn", num_classes=3, img_size=128, fpn_channels=32, box_fc=64,
                            mask_channels=32)
    g = torch.Generator().manual_seed(4)
    raw = tv_tensors.Image(torch.randint(0, 256, (3, 150, 90), dtype=torch.uint8, generator=g))
    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor([[10.0, 20.0, 60.0, 100.0]]), format="XYXY",
                                                canvas_size=(150, 90)),
              "labels": torch.tensor([1]), "masks": tv_tensors.Mask(torch.zeros(1, 150, 90, dtype=torch.uint8))}
    train_img, train_tgt = build_det_transforms(True, 128, scale_range=(1.0, 1.0), hflip=0.0)(raw, target)
    eval_img, _ = build_det_transforms(False, 128)(raw, target)
    assert tuple(train_img.shape) == (3, 128, 77)  # 150 x 90 fitted into 128: 128 x round(76.8)
    model.transform.train()
    train_batch, _ = model.transform([train_img], [dict(train_tgt)])
    model.transform.eval()
    eval_batch, _ = model.transform([eval_img])
    assert train_batch.image_sizes == eval_batch.image_sizes == [(128, 77)]
    torch.testing.assert_close(train_batch.tensors, eval_batch.tensors, rtol=0, atol=1e-5)
    assert train_batch.tensors.shape == (1, 3, 128, 128)
    assert (train_batch.tensors[..., 77:] == 0).all() and (train_batch.tensors[..., :77] != 0).any()
    torch.testing.assert_close(train_tgt["boxes"], torch.tensor([[10.0, 20.0, 60.0, 100.0]]) * torch.tensor(
        [77 / 90, 128 / 150, 77 / 90, 128 / 150]), rtol=0, atol=1e-4)


def test_jitter_crops_and_never_pads():
    """At scale 1.25 the image is larger than S: a crop of S x S; at 0.8 smaller: no padding here
    (the model pads after normalising)."""
    raw = tv_tensors.Image(torch.zeros(3, 200, 100, dtype=torch.uint8))
    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor([[0.0, 0.0, 100.0, 200.0]]), format="XYXY",
                                                canvas_size=(200, 100)), "labels": torch.tensor([1])}
    big, _ = build_det_transforms(True, 128, scale_range=(1.25, 1.25), hflip=0.0)(raw, target)
    small, _ = build_det_transforms(True, 128, scale_range=(0.8, 0.8), hflip=0.0)(raw, target)
    assert tuple(big.shape) == (3, 128, 80) and tuple(small.shape) == (3, 102, 51)


def test_torchvision_style_loads_torchvision_weights_with_the_same_outputs():
    """head_style="torchvision": torchvision's maskrcnn_resnet50_fpn state dict (random weights,
    built offline) loads key for key, and with torchvision's anchors and RoIAlign (the options it
    passes) the model gives torchvision's outputs."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, min_size=256, max_size=256,
                               box_score_thresh=0.0).eval()
    levels = ["0", "1", "2", "3"]
    ours = create_detector("maskrcnn_resnet50_fpn", num_classes=91, img_size=256, head_style="torchvision",
                           box_score_thresh=0.0,
                           rpn_anchor_generator=AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5),
                           box_roi_pool=MultiScaleRoIAlign(levels, 7, 2), mask_roi_pool=MultiScaleRoIAlign(levels, 14, 2))
    ours.load_state_dict(tv.state_dict(), strict=True)
    ours.eval()
    x = torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        feats_tv, feats_ours = tv.backbone(x[None]), ours.backbone(x[None])
        for k in feats_tv:
            torch.testing.assert_close(feats_ours[k], feats_tv[k])
        out_tv, out_ours = tv([x])[0], ours([x])[0]
    assert len(out_tv["boxes"]) > 10
    for k in ("boxes", "labels", "scores", "masks"):
        torch.testing.assert_close(out_ours[k], out_tv[k])
