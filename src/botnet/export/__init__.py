"""Export to ONNX, TorchScript and safetensors, every file checked against PyTorch.

One package for every kind of model: ``export_model(model, path, fmt, kind)`` dispatches through the
registry of ``botnet.export.core`` to the classifier exporters (``botnet.export.classify``) or the
detector exporters (``botnet.export.detection``, imported when first asked for).
``botnet.export.detection.export_checkpoint`` exports a detection checkpoint (or detector
safetensors with their card); a classification checkpoint is exported by rebuilding its model with
``botnet.models.weights.load_model`` and passing it to ``export_model`` (what ``botnet export``
does). To add a format, decorate ``fn(model, path, **options) -> ExportResult`` with
``register_exporter(kind, fmt)``.
"""

from .classify import export_onnx, export_safetensors, export_torchscript
from .core import ATOL, DEFAULT_OPSET, EXPORTERS, RTOL, ExportError, ExportResult, export_model, register_exporter

__all__ = ["EXPORTERS", "ExportError", "ExportResult", "register_exporter", "export_model", "export_onnx",
           "export_torchscript", "export_safetensors", "DEFAULT_OPSET", "ATOL", "RTOL"]
