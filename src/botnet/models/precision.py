"""Inference precision: float32, or bfloat16 where the hardware has it (``--precision`` of
``botnet eval``, ``botnet predict`` and ``botnet export``).

- ``"fp32"``: float32 throughout; classifiers run with their BatchNorms folded into the
  convolutions and their weights in channels_last (``botnet.models.fold.optimize_for_inference``).
- ``"bf16"``, classifiers: ``bf16_classifier(model)``. Every BatchNorm that follows a convolution
  is folded into it first, in float32 (``botnet.models.fold``), so folding adds no bfloat16
  rounding of its own; then the weights go to channels_last and bfloat16, and ``CastIO`` casts
  the input to bfloat16 on the way in and the logits back to float32 on the way out. The MHSA
  kernels compute their logits and softmax in float32 from bfloat16 q, k, v (``chunked_attn``:
  inputs upcast, output cast back). On a CPU with avx512_bf16 or AMX, oneDNN runs the
  convolutions and matmuls as bfloat16 dot products: docs/benchmarks.md ("bfloat16 inference")
  has the speed and the top-1 agreement with float32.
- ``"bf16"``, detectors: ``bf16_detector(model)``. The parts that hold the compute (the backbone
  with its FPN, the RPN head, the box and mask heads and predictors: ``DETECTOR_PARTS``) each run
  under ``torch.autocast`` to bfloat16 inside an ``AutocastPart``, whose outputs go back to
  float32. Everything between them stays float32: anchor and proposal decoding, NMS, RoIAlign's
  sampling, the score thresholds and mask pasting. Autocast around the whole detector would
  decode boxes in bfloat16 as well (its 8-bit mantissa moves a coordinate near 100 px by up to
  0.5 px, and by 4 px near 1000 px).
- ``"auto"``: what ``botnet eval`` did before the option existed: the recipe's ``run.amp`` on CUDA,
  float32 on the CPU.

``native_bf16(device)`` says whether the device computes in bfloat16 natively; elsewhere bfloat16
is emulated, correct but slower than float32, and the CLI says so.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from .fold import optimize_for_inference

__all__ = ["PRECISIONS", "AMP_DTYPES", "DETECTOR_PARTS", "check_precision", "native_bf16", "resolve_precision", "CastIO",
           "AutocastPart", "bf16_classifier", "bf16_detector", "precision_context", "prepare_inference"]

PRECISIONS = ("auto", "fp32", "bf16")
# the compute parts of a torchvision-style R-CNN, by attribute path
DETECTOR_PARTS = ("backbone", "rpn.head", "roi_heads.box_head", "roi_heads.box_predictor", "roi_heads.mask_head",
                  "roi_heads.mask_predictor")
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # a recipe's run.amp -> autocast dtype


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``PRECISIONS``; else a ValueError that lists them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU whose
    oneDNN has bfloat16 kernels (avx512_bf16, AMX, or arm's bf16 extension)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device | str, recipe_amp: str = "none") -> torch.dtype | None:
    """The compute dtype of ``precision`` on ``device``: None for float32, ``torch.bfloat16`` for
    "bf16"; "auto" is the recipe's ``run.amp`` ("bf16" / "fp16" / "none") on CUDA, None elsewhere."""
    check_precision(precision)
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and torch.device(device).type == "cuda":
        return AMP_DTYPES.get(recipe_amp)
    return None


class CastIO(nn.Module):
    """``model`` with its input cast to ``dtype`` and its output back to float32:
    (B, C, H, W) any float dtype -> (B, K) float32. ``model`` keeps its attribute names under
    ``.model``."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype)).float()


def bf16_classifier(model: nn.Module, channels_last: bool = True) -> CastIO:
    """A bfloat16 inference copy of the classifier ``model`` (see the module docstring): BatchNorms
    folded in float32, weights in ``channels_last`` and bfloat16, wrapped in ``CastIO``. Eval mode;
    (B, 3, H, W) float32 -> (B, K) float32 logits, within bfloat16 rounding of ``model``'s."""
    folded = optimize_for_inference(copy.deepcopy(model).float(), channels_last=channels_last, inplace=True)
    return CastIO(folded.to(torch.bfloat16))


def precision_context(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``'s type; a no-op context for None (float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def _to_float32(out):
    """``out`` with every floating tensor in it (nested in tuples, lists and dicts) cast to float32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return type(out)((k, _to_float32(v)) for k, v in out.items())
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float32(v) for v in out)
    return out


class AutocastPart(nn.Module):
    """``part`` run under ``torch.autocast(device type of its input, dtype)``, its floating outputs
    (tensors, or dicts / lists / tuples of them, e.g. an FPN's {level: (B, C, H, W)}) cast back to
    float32. ``part`` stays reachable as ``.part``."""

    def __init__(self, part: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.part = part
        self.dtype = dtype

    def forward(self, *args, **kwargs):
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if first is None:  # e.g. the RPN head takes a list of feature maps
            first = next(t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor))
        with torch.autocast(device_type=first.device.type, dtype=self.dtype):
            out = self.part(*args, **kwargs)
        return _to_float32(out)


def bf16_detector(model: nn.Module) -> nn.Module:
    """A copy of the R-CNN ``model`` in eval mode whose ``DETECTOR_PARTS`` (those it has) each run in
    bfloat16 inside an ``AutocastPart`` (see the module docstring). Takes and returns what ``model``
    does: a list of (3, H, W) images -> a list of {"boxes" (N, 4) float32, "labels" (N,), "scores"
    (N,) float32[, "masks" (N, 1, H, W) float32]}."""
    model = copy.deepcopy(model).float().eval()
    for path in DETECTOR_PARTS:
        parent_path, _, leaf = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        part = getattr(parent, leaf, None)
        if isinstance(part, nn.Module):
            setattr(parent, leaf, AutocastPart(part))
    return model


def prepare_inference(model: nn.Module, kind: str, precision: str, device: torch.device | str,
                      recipe_amp: str = "none") -> tuple[nn.Module, torch.dtype | None, str]:
    """(the model to run, the autocast dtype to run it under (None: none), the precision's name:
    "fp32" / "bf16" / "fp16") for a ``kind`` ("classification" or "detection") ``model`` already on
    ``device``. bfloat16 gives ``bf16_classifier`` / ``bf16_detector`` (no outer autocast). Otherwise
    a classifier runs as ``optimize_for_inference`` makes it (BatchNorms folded, channels_last: the
    same function within float32 rounding, faster), a detector as it is; "auto" with a recipe's fp16
    on CUDA adds autocast to float16."""
    dtype = resolve_precision(precision, device, recipe_amp)
    if dtype is torch.bfloat16:
        run = bf16_classifier(model) if kind == "classification" else bf16_detector(model)
        return run, None, "bf16"
    if kind == "classification":
        model = optimize_for_inference(model)
    return model, dtype, "fp32" if dtype is None else "fp16"
