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
