"""The exporter registry and what every exporter shares: ``export_model(model, path, fmt, kind)``
looks the exporter up in ``EXPORTERS`` by (kind, format); ``register_exporter`` adds one. Every
exporter runs the exported file back and compares it with PyTorch (``compare_outputs``: at most
``ATOL + RTOL * max |PyTorch output|``), raising ``ExportError`` beyond it. Classifier exporters:
``botnet.export.classify``; detector exporters: ``botnet.export.detection`` (imported on first use).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

__all__ = ["EXPORTERS", "ExportError", "ExportResult", "register_exporter", "export_model", "compare_outputs",
           "quiet_export", "DEFAULT_OPSET", "ATOL", "RTOL"]

DEFAULT_OPSET = 17
ATOL = 1e-4
RTOL = 1e-4
EXPORTERS: dict[tuple[str, str], Callable[..., "ExportResult"]] = {}


class ExportError(RuntimeError):
    """The exported model does not reproduce the PyTorch model (or could not be run)."""


@dataclass
class ExportResult:
    path: str
    format: str
    input_shape: tuple[int, ...]
    max_abs_diff: float | None  # exported vs PyTorch on a random input; None when not verified
    tolerance: float | None  # the largest difference accepted: atol + rtol * max |PyTorch output|
    seconds: float
    extra: dict = field(default_factory=dict)  # e.g. {"opset": 17}

    def to_dict(self) -> dict:
        return asdict(self)


def register_exporter(kind: str, fmt: str):
    """Decorator: ``fn(model, path, **options) -> ExportResult`` exports models of ``kind`` to ``fmt``."""

    def deco(fn):
        key = (kind, fmt)
        if key in EXPORTERS:
            raise ValueError(f"an exporter for {kind} models to {fmt} is already registered")
        EXPORTERS[key] = fn
        return fn

    return deco


# modules that register the exporters of other kinds when imported
_EXPORTER_MODULES = {"classification": "botnet.export.classify", "detection": "botnet.export.detection"}


def export_model(model: nn.Module, path: str | os.PathLike, fmt: str, kind: str = "classification", **options) -> ExportResult:
    """Export ``model`` (a ``kind`` model) to ``path`` in format ``fmt``; see ``EXPORTERS``."""
    if kind in _EXPORTER_MODULES and not any(k == kind for k, _ in EXPORTERS):
        importlib.import_module(_EXPORTER_MODULES[kind])
    fn = EXPORTERS.get((kind, fmt))
    if fn is None:
        have = sorted(f for k, f in EXPORTERS if k == kind)
        raise ValueError(f"no exporter for {kind} models to {fmt!r}" + (f"; available: {', '.join(have)}" if have else ""))
    return fn(model, path, **options)


def compare_outputs(out, ref: torch.Tensor, atol: float, rtol: float, what: str) -> tuple[float, float]:
    """(max abs difference, tolerance); raises ExportError above the tolerance (or on NaN)."""
    out = torch.as_tensor(out)
    diff = float((out.double() - ref.double()).abs().max())
    tol = atol + rtol * float(ref.abs().max())
    if not diff <= tol:  # also catches NaN
        raise ExportError(f"{what} differs from PyTorch by {diff:.3g} (max abs), above the tolerance {tol:.3g} "
                          f"(atol {atol:g} + rtol {rtol:g} x max |output| {float(ref.abs().max()):.3g})")
    return diff, tol


@contextlib.contextmanager
def quiet_export():
    """Silence the tracer's and the deprecated exporters' warnings (expected: sizes are fixed at export)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.")
        warnings.filterwarnings("ignore", message=r".*(legacy TorchScript-based ONNX export|torch\.jit).*")
        yield
