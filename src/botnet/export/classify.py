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

MHSA exports in its static form (``botnet.export.static_attn``): q's scale folded into the
projection, the relative tables gathered by offset at export into constants, and constant reshape
shapes with -1 for the batch, so the ONNX graph has no Shape / Gather / ConstantOfShape on shapes
and no Pad-then-Reshape relative-to-absolute step (what TensorRT takes, and faster in ONNX Runtime
than the ``reference`` kernel's Einsums and index arithmetic). The ONNX graph is traced by the
TorchScript-based exporter (``torch.onnx.export(dynamo=False)``; the dynamo exporter needs the
``onnxscript`` package) at opset 17 by default. The batch axis is dynamic; height and width are
fixed at export, since the position tables are sized for one feature map (export again for another
resolution). TorchScript traces the ``reference`` kernel. ``torch.jit.trace`` and
``torch.onnx.export(dynamo=False)`` are deprecated upstream in torch 2.14 but work; their
deprecation warnings are silenced here.

``export_onnx(..., quantize="int8", calibration=DIR)`` also quantizes the checked float32 graph
statically with ONNX Runtime (``botnet.export.quantize``: QDQ, per-channel weights, the MHSA
attention kept float32, calibrated on the images of DIR through the model's eval transform) and
writes the int8 model to ``path``. Its
check is top-1 agreement with PyTorch on the images of DIR held out from calibration (every fifth),
at least ``min_agreement`` (0.98), not a max-abs-diff: int8 logits differ from float32 by far more
than 1e-4 by design.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ..layers import use_kernel
from ..data.transforms import build_eval_transform
from ..models.precision import bf16_classifier
from ..models.weights import load_model, save_weights
from .core import ATOL, DEFAULT_OPSET, RTOL, ExportError, ExportResult, compare_outputs, quiet_export, register_exporter
from .static_attn import attention_sizes, freeze_attention

__all__ = ["export_onnx", "export_torchscript", "export_safetensors", "onnx_session", "QUANTIZE", "MIN_AGREEMENT",
           "EXPORT_PRECISIONS", "BF16_ATOL", "BF16_RTOL"]

QUANTIZE = ("int8",)
EXPORT_PRECISIONS = ("fp32", "bf16")  # bf16: torchscript and safetensors (ONNX Runtime's CPU provider has no bf16 Conv)
BF16_ATOL = BF16_RTOL = 1e-2  # a bfloat16 export against the same bfloat16 model in PyTorch
MIN_AGREEMENT = 0.98  # int8 vs PyTorch top-1 agreement on the held-out calibration images


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


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session of ``path`` with every graph optimization, ``threads`` intra-op
    threads (None: ONNX Runtime's default) and one inter-op thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _write_onnx(model: nn.Module, x: torch.Tensor, path: Path, opset: int, dynamic_batch: bool) -> int:
    """Trace ``model`` with its MHSA layers frozen (``freeze_attention``) to ``path``, checked by
    ``onnx.checker``; returns how many MHSA layers were frozen."""
    static, frozen = freeze_attention(model, x)
    axes = {"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with quiet_export(), torch.no_grad():
        torch.onnx.export(static, (x,), str(path), input_names=["images"], output_names=["logits"],
                          opset_version=opset, dynamic_axes=axes, dynamo=False, do_constant_folding=True)
    import onnx

    onnx.checker.check_model(str(path))
    return frozen


@register_exporter("classification", "onnx")
def export_onnx(model: nn.Module, path: str | os.PathLike, img_size: int | tuple[int, int] | None = None,
                batch_size: int = 1, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True, verify: bool = True,
                atol: float = ATOL, rtol: float = RTOL, seed: int = 0, quantize: str | None = None,
                calibration: str | os.PathLike | None = None, eval_cfg: dict | None = None,
                max_calibration: int = 256, min_agreement: float = MIN_AGREEMENT) -> ExportResult:
    """Export a classifier to ONNX (input "images" (B, C, H, W) -> output "logits" (B, num_classes)),
    check the file with ``onnx.checker`` and, with ``verify``, run it in ONNX Runtime
    (CPUExecutionProvider) against PyTorch on a random input of ``batch_size`` images.

    ``quantize="int8"`` needs ``calibration`` (a folder of images, read through
    ``build_eval_transform(eval_cfg)``: the model card's input size, crop, interpolation, mean and
    std; default: the model's size, crop 0.875, ImageNet mean / std); ``path`` then holds the int8
    model and the result its top-1 agreement with PyTorch on the held-out images."""
    if quantize is not None and quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    if (quantize is None) != (calibration is None):
        raise ValueError("quantize='int8' and calibration (a folder of images) go together")
    t0 = time.perf_counter()
    model, x = _prepare(model, img_size, batch_size, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if quantize:
        return _export_int8(model, x, path, opset, dynamic_batch, calibration, eval_cfg, max_calibration,
                            min_agreement, t0)
    frozen = _write_onnx(model, x, path, opset, dynamic_batch)
    diff = tol = None
    if verify:
        diff, tol = _verify_onnx(model, x, path, atol, rtol)
    return ExportResult(str(path), "onnx", tuple(x.shape), diff, tol, time.perf_counter() - t0,
                        {"opset": opset, "dynamic_batch": dynamic_batch, "exporter": "torch.onnx.export(dynamo=False)",
                         "static_attention_layers": frozen})


def _verify_onnx(model: nn.Module, x: torch.Tensor, path: Path, atol: float, rtol: float) -> tuple[float, float]:
    """(max abs diff, tolerance) of the ONNX file against PyTorch on ``x``; ExportError beyond it."""
    with torch.no_grad():
        ref = model(x)
    try:
        sess = onnx_session(path)
        out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    except Exception as e:
        raise ExportError(f"ONNX Runtime could not run {path} ({type(e).__name__}: {e})") from e
    return compare_outputs(out, ref, atol, rtol, f"ONNX model {path}")


def _export_int8(model: nn.Module, x: torch.Tensor, path: Path, opset: int, dynamic_batch: bool, calibration,
                 eval_cfg: dict | None, max_calibration: int, min_agreement: float, t0: float) -> ExportResult:
    """The float32 graph (checked against PyTorch as always), quantized to int8 at ``path`` and checked
    by top-1 agreement on the calibration folder's held-out images."""
    from .quantize import quantize_onnx, split_images, top1_agreement

    calib, check = split_images(calibration, max_calibration)
    # the card's crop fraction, interpolation, mean and std at the size of the export
    transform = build_eval_transform({**(eval_cfg or {}), "input_size": tuple(x.shape[1:])})
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        frozen = _write_onnx(model, x, fp32, opset, dynamic_batch)
        diff32, tol32 = _verify_onnx(model, x, fp32, ATOL, RTOL)
        kept = quantize_onnx(fp32, path, calib, transform, float_modules=list(attention_sizes(model, x)))
    try:
        agree, diff = top1_agreement(onnx_session(path), model, check, transform)
    except Exception as e:
        raise ExportError(f"ONNX Runtime could not run {path} ({type(e).__name__}: {e})") from e
    if not agree >= min_agreement:
        raise ExportError(f"int8 model {path}: top-1 agreement with PyTorch {100 * agree:.1f}% on the {len(check)} "
                          f"held-out images, below {100 * min_agreement:.1f}%")
    return ExportResult(str(path), "onnx", tuple(x.shape), diff, None, time.perf_counter() - t0,
                        {"opset": opset, "dynamic_batch": dynamic_batch, "exporter": "torch.onnx.export(dynamo=False)",
                         "static_attention_layers": frozen, "quantize": "int8", "agreement": agree,
                         "min_agreement": min_agreement, "check_images": len(check), "calibration_images": len(calib),
                         "fp32_max_abs_diff": diff32, "fp32_tolerance": tol32, "float_nodes": len(kept)})


def _vs_float32(model32: nn.Module, out: torch.Tensor, x: torch.Tensor) -> float:
    """Relative L2 difference ||out - model32(x)|| / ||model32(x)|| of a bfloat16 export's logits."""
    with torch.no_grad():
        ref = model32(x).double()
    return float((torch.as_tensor(out).double() - ref).norm() / ref.norm().clamp_min(1e-12))


@register_exporter("classification", "torchscript")
def export_torchscript(model: nn.Module, path: str | os.PathLike, img_size: int | tuple[int, int] | None = None,
                       batch_size: int = 1, verify: bool = True, atol: float = ATOL, rtol: float = RTOL,
                       seed: int = 0, precision: str = "fp32") -> ExportResult:
    """Trace a classifier to TorchScript (``torch.jit.trace``), save it, load the file back and
    compare it with PyTorch on a random input. ``precision="bf16"`` traces
    ``botnet.models.precision.bf16_classifier`` (BatchNorms folded, bfloat16 weights in channels_last,
    float32 in and out: (B, C, H, W) -> (B, K)), checked against that model in PyTorch within
    ``BF16_ATOL + BF16_RTOL * max |output|``; ``extra["vs_fp32"]`` is its logits' relative L2
    difference from the float32 model."""
    t0 = time.perf_counter()
    model, x = _prepare(model, img_size, batch_size, seed)
    model32 = model
    if _check_precision(precision) == "bf16":
        model, atol, rtol = bf16_classifier(model), max(atol, BF16_ATOL), max(rtol, BF16_RTOL)
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
    extra = {"exporter": "torch.jit.trace", "precision": precision}
    if verify:
        diff, tol = compare_outputs(out, ref, atol, rtol, f"TorchScript model {path}")
        if precision == "bf16":
            extra["vs_fp32"] = _vs_float32(model32, out, x)
    return ExportResult(str(path), "torchscript", tuple(x.shape), diff, tol, time.perf_counter() - t0, extra)


@register_exporter("classification", "safetensors")
def export_safetensors(model: nn.Module, path: str | os.PathLike, img_size: int | tuple[int, int] | None = None,
                       batch_size: int = 1, verify: bool = True, atol: float = ATOL, rtol: float = RTOL,
                       seed: int = 0, card: dict | None = None, precision: str = "fp32") -> ExportResult:
    """Save the weights as safetensors with the model card beside them (``save_weights``), rebuild
    the model from the pair (``load_model``) and compare it with the original. ``precision="bf16"``
    stores every float tensor in bfloat16 (half the file; the card says ``"dtype": "bfloat16"``;
    ``load_model`` builds the float32 model from it): the check then compares with the original's
    weights rounded to bfloat16, and ``extra["vs_fp32"]`` is the logits' relative L2 difference
    from the float32 original."""

    t0 = time.perf_counter()
    model, x = _prepare(model, img_size, batch_size, seed)
    if Path(path).suffix != ".safetensors":
        raise ValueError(f"{path}: safetensors files end in .safetensors")
    model32 = model
    if _check_precision(precision) == "bf16":
        model, card = copy.deepcopy(model).to(torch.bfloat16), {**(card or {}), "dtype": "bfloat16"}
    card_file = save_weights(model, path, card=card)
    diff = tol = None
    extra = {"card": str(card_file), "precision": precision}
    if verify:
        loaded, _ = load_model(path)
        with torch.no_grad():
            out = loaded(x)
            diff, tol = compare_outputs(out, model.float()(x), atol, rtol, f"weights {path}")
        if precision == "bf16":
            extra["vs_fp32"] = _vs_float32(model32, out, x)
    return ExportResult(str(path), "safetensors", tuple(x.shape), diff, tol, time.perf_counter() - t0, extra)


def _check_precision(precision: str) -> str:
    """``precision`` if an exporter takes it ("fp32" or "bf16"); else a one-line ValueError."""
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {precision!r}")
    return precision
