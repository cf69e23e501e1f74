"""SGD with momentum (or AdamW), weight decay off the normalization parameters, and a per-step LR
schedule (linear warmup, then cosine) on torch's ``LambdaLR``."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..counter import NORM_TYPES
from ..layers import MHSA2d

__all__ = ["WarmupMultiStep", "param_groups", "build_sgd", "build_optimizer", "WarmupCosine", "build_scheduler",
           "describe_schedule"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups, ``[{"params": decayed, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0}]``,
    with the rule of the TF code the paper trained with:

    - classifiers (tensorflow/tpu ``models/official/resnet/resnet_main.py`` 384-387): every
      parameter but the normalization ones;
    - detectors (a torchvision ``GeneralizedRCNN``; the Cloud TPU detection code,
      ``configs/base_config.py`` ``REGULARIZATION_VAR_REGEX = '.*(kernel|weight):0$'``): only the
      variables TF names ``kernel`` or ``weight``, i.e. the weights of convolutions and linear
      layers; not biases, not BatchNorm's gamma / beta, and not the BoT layers' parameters: the
      authors' gist (paper A.1) names its q / k / v projections ``w`` and its relative-position
      tables ``r_height`` / ``r_width``, which that pattern does not match (docs/detection.md).
    """
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN


    if isinstance(model, GeneralizedRCNN):
        gist_ids = {id(p) for m in model.modules() if isinstance(m, MHSA2d) for p in m.parameters()}
        layers = (nn.modules.conv._ConvNd, nn.Linear)
        decay_ids = {id(m.weight) for m in model.modules() if isinstance(m, layers) and m.weight is not None} - gist_ids
    else:
        norm_ids = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}
        decay_ids = {id(p) for p in model.parameters()} - norm_ids
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if id(p) in decay_ids else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float, nesterov: bool = False) -> torch.optim.SGD:
    return torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov)


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                    nesterov: bool = False, betas=(0.9, 0.999)) -> torch.optim.Optimizer:
    """"sgd": SGD with momentum (the paper); "adamw": AdamW (decoupled decay), e.g. for short CPU runs."""
    if name == "sgd":
        return build_sgd(model, lr, momentum, weight_decay, nesterov)
    if name == "adamw":
        return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas))
    raise ValueError(f"optim.name must be 'sgd' or 'adamw', got {name!r}")


class WarmupCosine:
    """LR factor at optimizer step s: linear from ``start`` to 1 over ``warmup`` steps, then cosine to 0."""

    def __init__(self, total_steps: int, warmup_steps: int, start_factor: float = 0.0):
        self.total, self.warmup, self.start = max(1, total_steps), min(warmup_steps, total_steps), start_factor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (1 - self.start) * step / self.warmup
        t = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    def describe(self, peak_lr: float) -> str:
        """The schedule in words, e.g. "peak lr 0.002, linear warmup from 0 over 94 steps, cosine decay to 0 at step 2790"."""
        warm = f"linear warmup from {self.start * peak_lr:.4g} over {self.warmup} steps" if self.warmup else "no warmup"
        return f"peak lr {peak_lr:.4g}, {warm}, cosine decay to 0 at step {self.total}"


class WarmupMultiStep:
    """LR factor at optimizer step s: linear from ``start`` to 1 over ``warmup`` steps, then times
    ``gamma`` at each milestone passed (the paper's detection schedule, Table 15: 0.1 -> 0.01 -> 0.001)."""

    def __init__(self, milestones: list[int], warmup_steps: int, start_factor: float = 0.0, gamma: float = 0.1):
        if list(milestones) != sorted(milestones):
            raise ValueError(f"LR milestones must be increasing, got {list(milestones)}")
        self.milestones, self.warmup, self.start, self.gamma = list(milestones), warmup_steps, start_factor, gamma

    def __call__(self, step: int) -> float:
        decay = self.gamma ** sum(step >= m for m in self.milestones)
        if step < self.warmup:
            return (self.start + (1 - self.start) * step / self.warmup) * decay
        return decay

    def describe(self, peak_lr: float) -> str:
        """The schedule in words, e.g. "peak lr 0.04, linear warmup from 0.004 over 50 steps, x0.1 at steps 450, 550"."""
        warm = f"linear warmup from {self.start * peak_lr:.4g} over {self.warmup} steps" if self.warmup else "no warmup"
        steps = ", ".join(map(str, self.milestones))
        decay = f"x{self.gamma:g} at step{'s' if len(self.milestones) > 1 else ''} {steps}" if self.milestones else "no decay"
        return f"peak lr {peak_lr:.4g}, {warm}, {decay}"


def build_scheduler(optimizer: torch.optim.Optimizer, schedule) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def describe_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler) -> str:
    """The learning-rate schedule of ``scheduler`` in words (peak, warmup, decay) for a run's header:
    the schedule's own ``describe`` for ``WarmupCosine`` / ``WarmupMultiStep``, else the base lr."""
    peak = scheduler.base_lrs[0]
    fns = getattr(scheduler, "lr_lambdas", [None])
    describe = getattr(fns[0], "describe", None)
    return describe(peak) if describe is not None else f"lr {peak:.4g}"
