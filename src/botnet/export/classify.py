"""Export models to ONNX and TorchScript, and check the exported file against PyTorch.

``export_model(model, path, "onnx" | "torchscript" | "safetensors", kind="classification")`` looks
the exporter up in ``EXPORTERS`` by (kind, format); ``register_exporter`` adds one (the detection
exporters register there). Every exporter runs the exported file on a seeded random input and
compares it with the PyTorch model: the result carries the max absolute difference, and a
difference above ``atol + rtol * max|PyTorch output|`` (1e-4 + 1e-4 x the largest logit) raises
``ExportError``. The relative part matters for large outputs only: on random full-size models
built without zero-initialised residual branches (logits up to ~130), float32 PyTorch itself is
off its float64 result by 3e-4 to 5e-4 and ONNX Runtime by 2e-4 to 1.2e-3; any real export error
(a wrong position offset, a missing term) moves the logits by far more. For comparison,
``torch.onnx.verification`` uses rtol 1e-3 per element.

MHSA exports with the ``reference`` kernel (plain matmuls, einsum, a gather of the relative
position tables and a float32 softmax). The ONNX graph is traced by the TorchScript-based exporter
(``torch.onnx.export(dynamo=False)``; the dynamo exporter needs the ``onnxscript`` package) at
opset 17 by default. The batch axis is dynamic; height and width are fixed at export, since the
position tables are sized for one feature map (export again for another resolution).
``torch.jit.trace`` and ``torch.onnx.export(dynamo=False)`` are deprecated upstream in torch 2.14
but work; their deprecation warnings are silenced here.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import torch
from torch import nn

from ..layers import use_kernel
from .core import ATOL, DEFAULT_OPSET, RTOL, ExportResult, compare_outputs, quiet_export, register_exporter
from ..models.weights import load_model, save_weights

__all__ = ["export_onnx", "export_torchscript", "export_safetensors"]


def _prepare(model: nn.Module, img_size, batch_size: int, seed: int):
    """A CPU float32 eval copy of the model and a seeded random input (B, C, H, W)."""
    model = copy.deepcopy(model).float().cpu().eval()
    if img_size is None:
        img_size = getattr(model, "img_size", 224)
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if hasattr(model, "check_input_size"):
        model.check_input_size((h, w))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, getattr(model, "in_chans", 3), h, w, generator=g)
    return model, x


@register_exporter("classification", "onnx")
def export_onnx(model: nn.Module, path: str | os.PathLike, img_size: int | tuple[int, int] | None = None,
                batch_size: int = 1, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True, verify: bool = True,
                atol: float = ATOL, rtol: float = RTOL, seed: int = 0) -> ExportResult:
    """Export a classifier to ONNX (input "images" (B, C, H, W) -> output "logits" (B, num_classes)),
    check the file with ``onnx.checker`` and, with ``verify``, run it in ONNX Runtime
    (CPUExecutionProvider) against PyTorch on a random input of ``batch_size`` images."""
    t0 = time.perf_counter()
    model, x = _prepare(model, img_size, batch_size, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with quiet_export(), use_kernel("reference"), torch.no_grad():
        torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["logits"],
                          opset_version=opset, dynamic_axes=axes, dynamo=False, do_constant_folding=True)
    import onnx

    onnx.checker.check_model(str(path))
    diff = tol = None
    if verify:
        import onnxruntime as ort

        with torch.no_grad():
            ref = model(x)
        try:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        except Exception as e:
            raise ExportError(f"ONNX Runtime could not run {path} ({type(e).__name__}: {e})") from e
        diff, tol = compare_outputs(out, ref, atol, rtol, f"ONNX model {path}")
    return ExportResult(str(path), "onnx", tuple(x.shape), diff, tol, time.perf_counter() - t0,
                        {"opset": opset, "dynamic_batch": dynamic_batch, "exporter": "torch.onnx.export(dynamo=False)"})


@register_exporter("classification", "torchscript")
def export_torchscript(model: nn.Module, path: str | os.PathLike, img_size: int | tuple[int, int] | None = None,
                       batch_size: int = 1, verify: bool = True, atol: float = ATOL, rtol: float = RTOL,
                       seed: int = 0) -> ExportResult:
    """Trace a classifier to TorchScript (``torch.jit.trace``), save it, load the file back and
    compare it with PyTorch on a random input."""
    t0 = time.perf_counter()
    model, x = _prepare(model, img_size, batch_size, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    diff = tol = None
    with quiet_export():
        with use_kernel("reference"), torch.no_grad():
            traced = torch.jit.trace(model, x, check_trace=False)
        traced.save(str(path))
        if verify:
            loaded = torch.jit.load(str(path), map_location="cpu")
            with torch.no_grad():
                out, ref = loaded(x), model(x)
    if verify:
        diff, tol = compare_outputs(out, ref, atol, rtol, f"TorchScript model {path}")
    return ExportResult(str(path), "torchscript", tuple(x.shape), diff, tol, time.perf_counter() - t0,
                        {"exporter": "torch.jit.trace"})


@register_exporter("classification", "safetensors")
def export_safetensors(model: nn.Module, path: str | os.PathLike, img_size: int | tuple[int, int] | None = None,
                       batch_size: int = 1, verify: bool = True, atol: float = ATOL, rtol: float = RTOL,
                       seed: int = 0, card: dict | None = None) -> ExportResult:
    """Save the weights as safetensors with the model card beside them (``save_weights``), rebuild
    the model from the pair (``load_model``) and compare it with the original."""

    t0 = time.perf_counter()
    model, x = _prepare(model, img_size, batch_size, seed)
    if Path(path).suffix != ".safetensors":
        raise ValueError(f"{path}: safetensors files end in .safetensors")
    card_file = save_weights(model, path, card=card)
    diff = tol = None
    if verify:
        loaded, _ = load_model(path)
        with torch.no_grad():
            diff, tol = compare_outputs(loaded(x), model(x), atol, rtol, f"weights {path}")
    return ExportResult(str(path), "safetensors", tuple(x.shape), diff, tol, time.perf_counter() - t0, {"card": str(card_file)})
