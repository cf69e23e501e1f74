"""Static int8 quantization of an exported ONNX classifier with ONNX Runtime, calibrated on real
images, and the check that fits int8: top-1 agreement with PyTorch on images kept out of the
calibration.

``quantize_onnx(fp32_path, path, files, transform)`` runs ``onnxruntime.quantization.quantize_static``
in QDQ format (QuantizeLinear / DequantizeLinear pairs around every quantized op, which ONNX
Runtime fuses into its int8 kernels and TensorRT reads as explicit quantization), uint8
activations with int8 weights (ORT's U8S8, its fast path on x86 with VNNI), per-channel weight
scales (a scale per output channel of each Conv: the BN-folded convolutions of a ResNet have
channels of very different ranges, and one scale per tensor loses the small ones) and MinMax
calibration averaged over the calibration batches (``CalibMovingAverage``: a tensor's range is
the running mean of the batches' min and max, not the extremes of the whole set, so a few outlier
images do not widen every scale). The attention of the MHSA layers stays float32 (``float_nodes``):
only its q/k/v projection is int8.

Why (docs/benchmarks.md, "ONNX Runtime (CPU)", on the 30-epoch ``make demo`` botnet_tiny, 67 %
top-1): quantizing everything with plain MinMax agreed with PyTorch on 93.8 % of the 1000 shapes
val images; float32 attention with moving-average ranges on 97.1 % (99.0 % on the 200 held out
by ``split_images``), and the mean |logit error| halved (0.10 -> 0.056). The attention logits
add content and two position terms and feed a softmax, whose inputs and output uint8 rounds
coarsely; keeping only its MatMuls or only its Adds float32 did not help, the whole block did.
Percentile, entropy, symmetric activations, reduce_range, per-tensor weights and 800 instead of
256 calibration images were no better. The images still flipped are near ties: 99.5 % agree
among those whose PyTorch top-2 logits are 0.1 or more apart. At 64 px the float32 attention did
not slow the int8 model measurably (it was partly float32 before: ONNX Runtime's fusions left
the two position MatMuls of each layer, with their 3-D constant tables, as float32 MatMuls).

``ImageReader`` is the ``CalibrationDataReader`` that feeds it: image files decoded
with ``botnet.data.folder.load_rgb`` and turned into (B, 3, H, W) float32 batches by the model's
own eval transform (``botnet.data.transforms.build_eval_transform``, as ``botnet predict`` and
``botnet eval`` read images).

``split_images(folder)`` lists a folder's images and holds out every fifth (sorted order) for the
check; ``top1_agreement`` compares the int8 model's top-1 class with PyTorch's on them.
onnx and onnxruntime are optional dependencies (the ``export`` extra): import this module only
when quantizing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from ..data.folder import load_rgb

__all__ = ["IMAGE_SUFFIXES", "HOLDOUT_EVERY", "ImageReader", "split_images", "load_batch", "float_nodes",
           "quantize_onnx", "top1_agreement"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
HOLDOUT_EVERY = 5  # every fifth image of the calibration folder checks the int8 model and is not calibrated on


def split_images(folder: str | os.PathLike, max_calibration: int | None = None) -> tuple[list[Path], list[Path]]:
    """(calibration images, check images) of ``folder`` (searched recursively, sorted): every
    ``HOLDOUT_EVERY``-th image is a check image, the rest calibrate, at most ``max_calibration``
    of them (evenly spaced). FileNotFoundError for a missing folder, ValueError for fewer than two
    images."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"calibration folder {str(root)!r} not found")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < 2:
        raise ValueError(f"calibration folder {str(root)!r} has {len(files)} image(s); it needs at least 2 "
                         f"(every {HOLDOUT_EVERY}th is held out to check the int8 model; looked for "
                         f"{', '.join(IMAGE_SUFFIXES)})")
    check = files[HOLDOUT_EVERY - 1 :: HOLDOUT_EVERY] or files[-1:]
    held = set(check)
    calib = [f for f in files if f not in held]
    if max_calibration is not None and len(calib) > max_calibration:
        calib = [calib[i] for i in np.linspace(0, len(calib) - 1, max_calibration).round().astype(int)]
    return calib, check


def load_batch(files: Sequence[Path], transform: Callable) -> torch.Tensor:
    """Images -> (B, 3, H, W) float32 through ``transform`` (PIL RGB -> (3, H, W))."""
    return torch.stack([transform(load_rgb(f)) for f in files])


class ImageReader(CalibrationDataReader):
    """Calibration batches {input_name: (B, 3, H, W) float32 array} of ``files`` through ``transform``."""

    def __init__(self, files: Sequence[Path], transform: Callable, input_name: str = "images", batch_size: int = 8):
        self.files, self.transform, self.input_name, self.batch_size = list(files), transform, input_name, batch_size
        self.pos = 0

    def __len__(self) -> int:
        return -(-len(self.files) // self.batch_size)

    def get_next(self) -> dict | None:
        if self.pos >= len(self.files):
            return None
        batch = self.files[self.pos : self.pos + self.batch_size]
        self.pos += len(batch)
        return {self.input_name: load_batch(batch, self.transform).numpy()}

    def rewind(self) -> None:
        self.pos = 0


def float_nodes(graph, modules: Sequence[str]) -> list[str]:
    """Names of the nodes of the ONNX ``graph`` that compute the attention of the ``StaticMHSA``
    modules named ``modules`` (e.g. "layer4.0.attn"), all but their q/k/v projection Conv.

    A module's nodes are found by the scope the exporter writes into node names: the Conv that takes
    the module's projection weight (initializer "<module>.weight") is "<scope>/Conv", and every other
    node named "<scope>/..." belongs to the same module (its Reshape / Split / Transpose, the content
    and position MatMuls, their Adds, the Softmax and the MatMul with v). ValueError if a module's
    projection is not in the graph."""
    names = []
    for module in modules:
        conv = next((n for n in graph.node if n.op_type == "Conv" and f"{module}.weight" in n.input), None)
        if conv is None:
            raise ValueError(f"no Conv takes {module}.weight in the graph: cannot find attention module {module!r}")
        scope = conv.name.rpartition("/")[0] + "/"
        names += [n.name for n in graph.node if n.name.startswith(scope) and n is not conv]
    return names


def quantize_onnx(fp32_path: str | os.PathLike, path: str | os.PathLike, files: Sequence[Path], transform: Callable,
                  per_channel: bool = True, float_modules: Sequence[str] = ()) -> list[str]:
    """Write the static int8 (QDQ, U8S8, moving-average MinMax) form of the float32 ONNX model
    ``fp32_path`` to ``path``, calibrated on ``files`` read through ``transform``; the attention of the
    ``StaticMHSA`` modules named in ``float_modules`` stays float32 (``float_nodes``: their q/k/v
    projection is int8, the logits, softmax and weighted sum of v are not). Returns the names of the
    nodes kept float32. The float32 graph is first pre-processed (``quant_pre_process``: ONNX
    Runtime's basic graph optimizations fold the exporter's Identity / Constant nodes into
    initializers, so every Conv bias is quantized with its conv, then shape inference), written
    beside ``path`` and removed after."""
    import onnx

    pre = Path(path).with_name(Path(path).stem + ".preprocessed.onnx")
    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        keep = float_nodes(onnx.load(str(pre)).graph, float_modules)
        quantize_static(str(pre), str(path), ImageReader(files, transform), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep,
                        extra_options={"CalibMovingAverage": True})
    finally:
        pre.unlink(missing_ok=True)
    return keep


def top1_agreement(session, model: torch.nn.Module, files: Sequence[Path], transform: Callable,
                   batch_size: int = 32) -> tuple[float, float]:
    """(fraction of ``files`` whose top-1 class from the ONNX Runtime ``session`` equals PyTorch's,
    max |logit difference|)."""
    name = session.get_inputs()[0].name
    same, diff = 0, 0.0
    for i in range(0, len(files), batch_size):
        x = load_batch(files[i : i + batch_size], transform)
        with torch.no_grad():
            ref = model(x)
        out = torch.as_tensor(session.run(None, {name: x.numpy()})[0])
        same += int((out.argmax(-1) == ref.argmax(-1)).sum())
        diff = max(diff, float((out - ref).abs().max()))
    return same / len(files), diff
