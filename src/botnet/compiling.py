"""``torch.compile`` for BoTNet models: static shapes, optionally with the batch axis dynamic.

``compile_model(model, shapes)`` is what ``model.compile: true`` runs (``engine.launch.wrap``), with
``model.compile_shapes`` ("static" by default: one graph per input shape). ``shapes="batch"``
compiles with ``dynamic=False`` and marks axis 0 (the batch) of every tensor argument dynamic
before each call (``torch._dynamo.maybe_mark_dynamic``), so one graph serves every batch size: the
last, partial batch of an epoch and the evaluation batches do not recompile. Only the batch is
symbolic; the image and feature-map sizes stay static, so the graph is the one a static compile
makes. Train and eval mode are two graphs (BatchNorm differs), and a batch of exactly 1 gets its
own graph (torch specialises sizes 0 and 1).

Why not ``dynamic=True``: it makes H and W symbolic too. Every stage's map size is then a nested
floor division of the input size (each stride-2 convolution and pool adds one level), and every
reshape of an attention layer ((B, C, H, W) <-> (B * heads, d, H * W), the (H, H) / (W, W) relative
tables, the per-axis logits) asks the symbolic-shape engine to prove products of these expressions
equal. Each such proof is a sympy simplification over the whole nest; on our 2-core CPU the
fake-tensor pass of dynamo alone spent 164 of 200 s in ``ShapeEnv.evaluate_expr`` for botnet_tiny at
64 px (67 reshapes: 85 s; slices of the chunked kernel's query blocks: 20 s), and BoT50 did not
finish in 18 minutes. ``resnet50`` (no attention) passes dynamo but did not finish in 150 s either,
inside inductor's C++ code generation (symbolic strides in ``select_tiling``). The MHSA layer alone
compiles with ``dynamic=True`` in about 14 s: the cost comes from the depth of the size expressions,
not from one op (docs/benchmarks.md, "torch.compile (CPU)").

Images of several sizes (inference, detection): compile once per size bucket. With ``shapes="batch"``
each distinct (H, W) compiles its own graph (torch keeps up to ``torch._dynamo.config.cache_size_limit``,
8 by default, per function); resize or pad inputs to a short list of sizes (e.g. 224, 256, 320) so
the graphs stay few.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["COMPILE_SHAPES", "compile_model", "mark_batch_dynamic"]

# "batch": static shapes with axis 0 dynamic; "static": every new shape compiles its own graph
COMPILE_SHAPES = ("batch", "static")


def mark_batch_dynamic(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook: mark axis 0 (the batch, B of (B, C, H, W)) of each tensor argument dynamic."""
    for a in args:
        if torch.is_tensor(a) and a.dim() > 0:
            torch._dynamo.maybe_mark_dynamic(a, 0)


def compile_model(model: nn.Module, shapes: str = "static", **kwargs) -> nn.Module:
    """``torch.compile(model, dynamic=False, **kwargs)``; with ``shapes="batch"`` the batch axis of
    its tensor inputs is marked dynamic before every call, so batch sizes share one graph.

    Args:
        model: any module taking tensors (B, ...) as positional arguments.
        shapes: one of ``COMPILE_SHAPES``.
        kwargs: more ``torch.compile`` options (``backend``, ``mode``).
    Returns:
        the compiled module (its ``_orig_mod`` is ``model``).
    """
    if shapes not in COMPILE_SHAPES:
        raise ValueError(f"compile shapes must be one of {', '.join(COMPILE_SHAPES)}, got {shapes!r}")
    compiled = torch.compile(model, dynamic=False, **kwargs)
    if shapes == "batch":
        compiled.register_forward_pre_hook(mark_batch_dynamic)
    return compiled
