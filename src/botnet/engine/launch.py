"""Where and how a run executes: the device, the process group, the model's wrappers.

``launch(run_cfg, body)`` runs the trainer's body on the device ``run.device`` names, inside the
process group torchrun describes and a ``PreemptionHandler``, and tears the group down after;
``resolve_device`` turns "auto" into a device; ``to_channels_last`` puts a model (weights and
inputs) in channels_last memory format; ``wrap`` adds DDP and ``torch.compile`` (``botnet.compiling``).
"""

from __future__ import annotations

import gc

import torch
from torch import nn

from ..compiling import compile_model
from .distributed import DistInfo, cleanup, comm_failures_as_errors, init_distributed
from .faults import PreemptionHandler

__all__ = ["resolve_device", "launch", "to_channels_last", "wrap"]


def resolve_device(name: str | torch.device) -> torch.device:
    """"auto": CUDA when available, else CPU; other names as torch.device (CUDA must exist)."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r} asked for but no CUDA device is available")
    return dev


def launch(run_cfg, body):
    """Run ``body(device, dist, preempt)`` on the device ``run_cfg.device`` names, inside the process
    group torchrun describes (timeout ``run_cfg.dist_timeout_s``) and a preemption handler; failed
    collectives become ``DistributedError``; the group is torn down afterwards."""
    device = resolve_device(run_cfg.device)
    with PreemptionHandler() as preempt:
        dist = init_distributed(device.type, run_cfg.dist_timeout_s)
        if device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        try:
            with comm_failures_as_errors(dist, run_cfg.dist_timeout_s):
                return body(device, dist, preempt)
        finally:
            if dist.enabled:
                gc.collect()  # wrappers that still hold the group (cycles) go now, while the interpreter is whole
            cleanup(dist)


def wrap(model: nn.Module, dist: DistInfo, device, compile: bool = False, shapes: str = "static") -> nn.Module:
    """DDP when distributed, then ``torch.compile`` when asked: ``botnet.compiling.compile_model``
    with ``shapes`` ("static": a graph per input shape; "batch": the batch axis dynamic)."""
    net = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return compile_model(net, shapes) if compile else net


def _inputs_channels_last(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous(memory_format=torch.channels_last) if torch.is_tensor(a) and a.dim() == 4 else a
                 for a in args)


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model`` with its weights in channels_last memory format and a forward pre-hook that puts
    every 4-D input (B, C, H, W) in it too (training and evaluation alike, DDP, EMA copies and
    ``torch.compile`` included). Returns ``model``."""
    model.to(memory_format=torch.channels_last)
    model.register_forward_pre_hook(_inputs_channels_last)
    return model
