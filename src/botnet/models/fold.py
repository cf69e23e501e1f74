"""Conv + BatchNorm folding for inference and export.

In eval mode a BatchNorm after a convolution is an affine map per channel, y = (conv(x) - mean) *
gamma / sqrt(var + eps) + beta, so it folds into the convolution: weight * gamma / sqrt(var + eps)
per output channel and a bias (b - mean) * gamma / sqrt(var + eps) + beta. ``fold_batchnorm`` finds
every ``nn.Conv2d`` whose output feeds only an ``nn.BatchNorm2d`` (by tracing the model's forward with
``torch.fx``), puts the folded convolution in the convolution's place and an ``nn.Identity`` in the
BatchNorm's. The model keeps its class, attributes and module names; one BatchNorm pass (a read and a
write of the activation) less per pair, the same function up to float32 rounding
(tests/models/test_fold.py: every model of timm's family and the paper's, against the unfolded model).

A BatchNorm that does not follow a convolution directly (BoT blocks' ``bn2`` after the attention and
its pooling) stays. The folded model is for inference: its statistics are gone, so training it again
is not the same model.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "conv_bn_pairs", "optimize_for_inference", "replace_module"]


class _PairTracer(fx.Tracer):
    """Traces down to the modules that may hold a conv -> BN pair; any module without a BatchNorm
    inside (attention, SE, activations) stays a leaf, so its own control flow is never traced."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if not any(isinstance(s, nn.BatchNorm2d) for s in m.modules()):
            return True
        return super().is_leaf_module(m, qualname)


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """[(conv name, BatchNorm name)]: each ``nn.Conv2d`` of ``model`` whose output is used only by an
    ``nn.BatchNorm2d`` with running statistics, in the order of the forward."""
    graph = _PairTracer().trace(model)
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv, bn = modules.get(src.target), modules[node.target]
        if isinstance(conv, nn.Conv2d) and bn.track_running_stats and bn.running_mean is not None:
            pairs.append((src.target, node.target))
    return pairs


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` in eval mode with every BatchNorm that directly follows a convolution folded into it
    (see the module docstring); a copy unless ``inplace``. Shapes and outputs as ``model``'s:
    (B, C, H, W) -> the same logits or features, within float32 rounding."""
    model = (model if inplace else copy.deepcopy(model)).eval()
    for conv_name, bn_name in conv_bn_pairs(model):
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        with torch.no_grad():
            fused = fuse_conv_bn_eval(conv, bn)
        replace_module(model, conv_name, fused)
        replace_module(model, bn_name, nn.Identity())
    return model


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``name`` of ``model`` (``nn.Module.set_submodule`` came with
    torch 2.5; botnet supports 2.4)."""
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def optimize_for_inference(model: nn.Module, channels_last: bool = True, inplace: bool = False) -> nn.Module:
    """``fold_batchnorm(model)`` with its weights in ``torch.channels_last`` (NHWC) when
    ``channels_last``: every convolution then runs oneDNN's NHWC kernels without a layout reorder
    around it (the first convolution turns an NCHW input into NHWC). A copy unless ``inplace``.
    Input (B, C, H, W) in either memory format -> the same outputs as ``model`` in eval mode, within
    float32 rounding; on the 2-core CPU of docs/benchmarks.md this is what makes our inference of
    timm's BoTNet family faster than timm's ("Whole models against timm")."""
    model = fold_batchnorm(model, inplace)
    return model.to(memory_format=torch.channels_last) if channels_last else model
