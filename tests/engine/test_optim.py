"""Optimizer parameter groups and the warmup + cosine schedule."""

import math

import pytest
import torch
from torch import nn

from botnet.engine.optim import WarmupCosine, build_optimizer, build_scheduler, param_groups


def test_schedule_values():
    f = WarmupCosine(total_steps=100, warmup_steps=10, start_factor=0.1)
    assert f(0) == pytest.approx(0.1) and f(5) == pytest.approx(0.55) and f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(100) == pytest.approx(0.0) and f(150) == pytest.approx(0.0)


def test_scheduler_drives_lr_per_step():
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, "sgd", lr=0.4, weight_decay=1e-4)
    sched = build_scheduler(opt, WarmupCosine(10, 2))
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(0.2) and lrs[2] == pytest.approx(0.4) and lrs[-1] < lrs[3]


def test_no_weight_decay_on_norm_and_optimizer_names():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    decay, no_decay = param_groups(model, 1e-4)
    assert len(decay["params"]) == 2 and len(no_decay["params"]) == 2 and no_decay["weight_decay"] == 0.0
    assert isinstance(build_optimizer(model, "adamw", 1e-3, 0.05), torch.optim.AdamW)
    with pytest.raises(ValueError, match="optim.name"):
        build_optimizer(model, "lamb", 1e-3, 0.0)


def test_detector_weight_decay_follows_the_tpu_regex_and_the_gist():
    """Detectors: only what TF would name kernel / weight ('.*(kernel|weight):0$' of the Cloud TPU
    detection code): conv and linear weights. Not biases, not BN gamma / beta, and not the BoT
    layers' q / k / v projections and relative tables (the authors' gist names them w, r_height,
    r_width). Classifiers: everything but normalization (the TF ResNet code)."""
    from botnet.detection import create_detector
    from botnet.layers import MHSA2d

    with torch.device("meta"):
        det = create_detector("maskrcnn_botnet_tiny_fpn", num_classes=3, img_size=64)
    decay, no_decay = param_groups(det, 4e-5)
    names = {id(p): n for n, p in det.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decayed and kept and not decayed & kept and len(decayed) + len(kept) == len(names)
    for n in decayed:
        assert n.endswith(".weight") and ".attn." not in n, n
    mods = dict(det.named_modules())
    for n in kept:
        owner = mods[n.rsplit(".", 1)[0]]
        is_layer_weight = n.endswith(".weight") and isinstance(owner, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
        assert not is_layer_weight or ".attn." in n, n
    assert any(".bias" in n for n in kept) and any("bn" in n or "norms" in n for n in kept)
    assert any(n.endswith("attn.qkv.weight") for n in kept) and any("rel_height" in n for n in kept)
    assert "roi_heads.box_head.5.weight" in decayed and "roi_heads.box_head.6.weight" in kept  # FC, then its BN
    assert any(isinstance(m, MHSA2d) for m in det.modules())
    # classifiers keep the TF ResNet rule: biases and the BoT tables decay, normalization does not
    from botnet.models import create_model

    with torch.device("meta"):
        clf = create_model("botnet_tiny", num_classes=10, img_size=64)
    decay, no_decay = param_groups(clf, 4e-5)
    names = {id(p): n for n, p in clf.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "fc.bias" in decayed and any("rel_height" in n for n in decayed)
    assert all(isinstance(dict(clf.named_modules())[names[id(p)].rsplit(".", 1)[0]], nn.BatchNorm2d)
               for p in no_decay["params"])
