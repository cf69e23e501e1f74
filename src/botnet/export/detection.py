"""Export detectors (Mask R-CNN / Faster R-CNN) to ONNX, TorchScript or safetensors, checked against PyTorch.

The exporters register in ``botnet.export.EXPORTERS`` under kind "detection", so
``export_model(model, path, fmt, kind="detection")`` reaches them; ``export_checkpoint(path, output, fmt)``
exports a detection checkpoint (``botnet export`` uses it).

- **ONNX** (``torch.onnx.export(dynamo=False)``, the TorchScript-based exporter torchvision's own
  tests use, opset 17 by default, 11 at least): input ``image``, one (3, S, S) float RGB image in
  [0, 1] at the detector's size S (normalisation is inside the graph); outputs ``boxes`` (N, 4)
  xyxy pixels, ``labels`` (N,) int64, ``scores`` (N,) and, for Mask R-CNN, ``masks`` (N, 1, S, S)
  probabilities, with N dynamic (0 included).
- **TorchScript** (``torch.jit.script`` of the whole detector): the torchvision API, a list of
  (3, H, W) images of any size up to S x S; a scripted detector returns ``(losses, detections)``.
- **safetensors**: the weights plus a card (``<stem>.json``) holding the ``det-train`` config,
  classes and category ids; ``botnet.detection.load_detector`` (so ``botnet predict`` and
  ``det-eval``) rebuilds the detector from the pair.

Every export is run back (ONNX Runtime on CPU, ``torch.jit.load``, or the rebuilt model) on the
``check_images``: a built-in scene with objects and an empty built-in scene (background only: a
trained detector finds nothing or little there). On each, the exported model must give the same
detections with the same labels, in PyTorch's order, and boxes, scores and masks within
``botnet.export``'s tolerance, ``1e-4 + 1e-4 x max |PyTorch output|`` per output (boxes: ~1e-2 px at
S = 128; scores and mask probabilities, both in [0, 1]: at most 2e-4). Float rounding may only swap
detections whose scores are within the tolerance of each other, or drop one that sits on the
score threshold or the detections-per-image cut (``botnet.export.checks.check_detections``). Anything else raises
``ExportError``. A uniform image is not a check image: its feature maps are equal at every
location, so many anchors tie exactly in the RPN's top-k and NMS, and ONNX Runtime and PyTorch may
break the ties differently (different but equally valid proposals).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import Checkpoint, open_checkpoint
from .checks import check_detections, export_result
from .core import ATOL, DEFAULT_OPSET, RTOL, ExportError, ExportResult, export_model, quiet_export, register_exporter
from ..layers import use_kernel
from ..data.builtin import SEED
from ..data.builtin_coco import draw_scene
from .. import __version__
from ..detection.loading import load_detector
from ..checkpoint import card_path, file_sha256, write_atomic

__all__ = ["check_images", "detector_outputs", "export_detector_onnx", "export_detector_torchscript",
           "export_detector_safetensors", "export_checkpoint", "describe_checks", "FORMATS", "MIN_OPSET"]

FORMATS = ("onnx", "torchscript", "safetensors")
MIN_OPSET = 11  # RoIAlign, NonMaxSuppression and the mask-pasting loop need opset 11
DET_CARD_FIELDS = ("config", "classes", "cat_ids", "metrics", "step", "epoch")


def detector_outputs(model: nn.Module) -> tuple[str, ...]:
    """The per-image outputs of a detector, in the order of the ONNX graph's outputs."""
    has_mask = model.roi_heads.has_mask()
    return ("boxes", "labels", "scores", "masks") if has_mask else ("boxes", "labels", "scores")


def check_images(size: int) -> list[tuple[str, torch.Tensor]]:
    """The images exports are checked on: ("scene", the first built-in validation scene with at
    least two objects) and ("empty", a built-in background without objects), as (3, size, size)
    float32 in [0, 1]. Deterministic (seeded by the built-in data's seed)."""
    from torchvision.transforms.v2 import functional as F


    def tensor(img) -> torch.Tensor:
        return F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True)

    scene = None
    for i in range(50):  # val split (index 1) of the built-in data
        img, anns = draw_scene(np.random.default_rng([SEED, 1, i]), size)
        if len(anns) >= 2:
            scene = img
            break
    empty, _ = draw_scene(np.random.default_rng([SEED, 2, 0]), size, empty=True)
    return [("scene", tensor(scene if scene is not None else img)), ("empty", tensor(empty))]


def _prepare(model: nn.Module, img_size: int | None) -> tuple[nn.Module, int]:
    """A CPU float32 eval copy of the detector and its input size S."""
    if not hasattr(model, "roi_heads") or not hasattr(model, "transform"):
        raise ValueError(f"{type(model).__name__} is not a torchvision detector (no roi_heads / transform)")
    size = getattr(model, "img_size", None) or getattr(model.transform, "size", None)
    if size is None:
        raise ValueError("the detector has no fixed input size (img_size); build it with botnet.detection.create_detector")
    if img_size is not None and (img_size if isinstance(img_size, int) else tuple(img_size)) not in (size, (size, size)):
        raise ValueError(f"this detector takes {size}x{size} inputs (its BoT layers' relative tables are sized for "
                         f"{size // 32}x{size // 32}); export it at that size (drop --img-size)")
    return copy.deepcopy(model).float().cpu().eval(), int(size)


@contextlib.contextmanager
def quiet_detector_export():
    """``quiet_export`` plus torch's and torchvision's UserWarnings while tracing / scripting a detector
    (torchvision's ONNX paths build tensors from traced sizes; the exporter notes that its
    advanced-indexing export assumes non-negative indices, which nonzero / topk indices are)."""
    with quiet_export(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|torchvision)(\.|$)")
        yield


def _name(model: nn.Module) -> str:
    return getattr(model, "detector_name", None) or type(model).__name__


def _limits(model: nn.Module) -> tuple[float, int]:
    """(box score threshold, detections per image) of a torchvision detector."""
    return float(model.roi_heads.score_thresh), int(model.roi_heads.detections_per_img)


class _SingleImage(nn.Module):
    """image (3, S, S) -> (boxes, labels, scores[, masks]) of ``detector([image])[0]``: the traced ONNX graph."""

    def __init__(self, detector: nn.Module, keys: tuple[str, ...]):
        super().__init__()
        self.detector = detector
        self.keys = keys

    def forward(self, image: torch.Tensor):
        out = self.detector([image])[0]
        return tuple(out[k] for k in self.keys)


def _pytorch_reference(model: nn.Module, images) -> list[dict]:
    with use_kernel("reference"), torch.no_grad():
        return [model([img])[0] for _, img in images]


@register_exporter("detection", "onnx")
def export_detector_onnx(model: nn.Module, path: str | os.PathLike, img_size: int | None = None, batch_size: int = 1,
                         opset: int = DEFAULT_OPSET, verify: bool = True, atol: float = ATOL, rtol: float = RTOL,
                         images: list[tuple[str, torch.Tensor]] | None = None) -> ExportResult:
    """Export a detector to ONNX: input "image" (3, S, S) in [0, 1] -> "boxes", "labels", "scores"
    (and "masks"), N detections (dynamic, 0 included). Traced on the first check image, checked with
    ``onnx.checker`` and, with ``verify``, run in ONNX Runtime (CPUExecutionProvider) on every check
    image (default ``check_images(S)``; ``images``: other (name, (3, S, S)) pairs) against PyTorch."""
    t0 = time.perf_counter()
    if batch_size != 1:
        raise ValueError(f"an ONNX detector takes one image per run; batch_size must be 1, got {batch_size}")
    if opset < MIN_OPSET:
        raise ValueError(f"detector export needs ONNX opset >= {MIN_OPSET} (RoIAlign, NonMaxSuppression), got {opset}")
    model, size = _prepare(model, img_size)
    images = images if images is not None else check_images(size)
    for name, img in images:
        if tuple(img.shape) != (3, size, size):
            raise ValueError(f"check image {name!r} is {tuple(img.shape)}; the ONNX graph takes (3, {size}, {size})")
    keys = detector_outputs(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _SingleImage(model, keys).eval()
    axes = {k: {0: "detections"} for k in keys}
    try:
        with quiet_detector_export(), use_kernel("reference"), torch.no_grad():
            torch.onnx.export(wrapper, (images[0][1],), str(path), input_names=["image"], output_names=list(keys),
                              opset_version=opset, dynamic_axes=axes, dynamo=False, do_constant_folding=True)
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed for {_name(model)} ({type(e).__name__}: {_first_line(e)})") from e
    import onnx

    onnx.checker.check_model(str(path))
    checks = []
    if verify:
        import onnxruntime as ort

        refs = _pytorch_reference(model, images)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # the exporter's value_info ranks of some empty intermediates are wrong: warnings only
        try:
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            outs = [sess.run(None, {"image": img.numpy()}) for _, img in images]
        except Exception as e:
            raise ExportError(f"ONNX Runtime could not run {path} ({type(e).__name__}: {_first_line(e)})") from e
        for (name, _), out, ref in zip(images, outs, refs):
            rec = check_detections(dict(zip(keys, out)), ref, keys, _limits(model), atol, rtol,
                                    f"ONNX model {path} on the {name} image")
            checks.append({"image": name, **rec})
    return export_result(path, "onnx", size, checks, t0, {"opset": opset, "outputs": list(keys),
                                                    "exporter": "torch.onnx.export(dynamo=False)"})


@register_exporter("detection", "torchscript")
def export_detector_torchscript(model: nn.Module, path: str | os.PathLike, img_size: int | None = None,
                                batch_size: int = 1, verify: bool = True, atol: float = ATOL, rtol: float = RTOL,
                                images: list[tuple[str, torch.Tensor]] | None = None) -> ExportResult:
    """Script a detector (``torch.jit.script``), save it, load the file back and compare it with
    PyTorch on every check image, one at a time and all in one batch. The scripted model keeps the
    torchvision API: ``loaded(list of (3, H, W) images)`` returns ``(losses, detections)``."""
    t0 = time.perf_counter()
    if batch_size != 1:
        raise ValueError(f"batch_size must be 1 for detectors (a scripted detector takes a list of images), got {batch_size}")
    model, size = _prepare(model, img_size)
    images = images if images is not None else check_images(size)
    keys = detector_outputs(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with quiet_detector_export():
            scripted = torch.jit.script(model)
    except Exception as e:
        raise ExportError(f"torch.jit.script failed for {_name(model)} ({type(e).__name__}: {_first_line(e)})") from e
    scripted.save(str(path))
    checks = []
    if verify:
        refs = _pytorch_reference(model, images)
        with quiet_detector_export(), torch.no_grad():
            warnings.filterwarnings("ignore", message=r"RCNN always returns a \(Losses, Detections\) tuple in scripting")
            loaded = torch.jit.load(str(path), map_location="cpu").eval()
            single = [loaded([img])[1][0] for _, img in images]
            batched = loaded([img for _, img in images])[1]
        for (name, _), out, ref in zip(images, single, refs):
            checks.append({"image": name, **check_detections(out, ref, keys, _limits(model), atol, rtol,
                                                              f"TorchScript model {path} on the {name} image")})
        for (name, _), out, ref in zip(images, batched, refs):
            rec = check_detections(out, ref, keys, _limits(model), atol, rtol,
                                    f"TorchScript model {path} on the {name} image (in a batch)")
            checks.append({"image": f"{name} (batch)", **rec})
    return export_result(path, "torchscript", size, checks, t0, {"outputs": list(keys), "exporter": "torch.jit.script"})


@register_exporter("detection", "safetensors")
def export_detector_safetensors(model: nn.Module, path: str | os.PathLike, img_size: int | None = None,
                                batch_size: int = 1, verify: bool = True, atol: float = ATOL, rtol: float = RTOL,
                                card: dict | None = None, images: list[tuple[str, torch.Tensor]] | None = None) -> ExportResult:
    """Save the weights as safetensors and a card beside them (``<stem>.json``: kind "detection",
    the ``det-train`` config, classes, category ids), rebuild the detector from the pair with
    ``load_detector`` and compare it with the original on the check images. ``card`` must hold
    the checkpoint's "config" and "classes" (``export_checkpoint`` passes them)."""
    from safetensors.torch import save_file


    t0 = time.perf_counter()
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: safetensors files end in .safetensors")
    card = dict(card or {})
    if not card.get("config") or not card.get("classes"):
        raise ValueError("a detector's safetensors card needs the det-train config and classes it was built from: "
                         "export a det-train checkpoint (botnet export --checkpoint CKPT)")
    model, size = _prepare(model, img_size)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "model_name": _name(model), "botnet_version": __version__}
    write_atomic(path, lambda tmp: save_file(sd, tmp, metadata=meta))
    info = {"card_version": 1, "kind": "detection", "model_name": _name(model), "img_size": size,
            "input_size": [3, size, size], "num_classes": len(card["classes"]) + 1,
            "num_params": sum(p.numel() for p in model.parameters()), "botnet_version": __version__,
            **{k: card[k] for k in DET_CARD_FIELDS if k in card},
            "weights_file": path.name, "weights_format": "safetensors", "sha256": file_sha256(path)}
    card_file = card_path(path)
    write_atomic(card_file, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2, default=str) + "\n"))
    checks = []
    if verify:
        images = images if images is not None else check_images(size)
        loaded, _ = load_detector(path)
        refs = _pytorch_reference(model, images)
        outs = _pytorch_reference(loaded, images)
        for (name, _), out, ref in zip(images, outs, refs):
            checks.append({"image": name, **check_detections(out, ref, detector_outputs(model), _limits(model),
                                                              atol, rtol, f"weights {path} on the {name} image")})
    return export_result(path, "safetensors", size, checks, t0, {"card": str(card_file)})


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def export_checkpoint(path: str | os.PathLike | Checkpoint, output: str | os.PathLike, fmt: str, *,
                      img_size: int | None = None, batch_size: int = 1, opset: int = DEFAULT_OPSET,
                      use_ema: bool = False) -> tuple[str, ExportResult]:
    """Export the detector of a detection checkpoint (or safetensors weights with their card; a path
    or its ``open_checkpoint``) to ``output`` in ``fmt``: (detector name, result). Raises ValueError
    on bad input and ExportError when the export does not reproduce PyTorch."""

    if fmt not in FORMATS:
        raise ValueError(f"detection checkpoints export to {', '.join(FORMATS)}; got {fmt!r}")
    if use_ema:
        raise ValueError("detection checkpoints hold no EMA weights: drop --ema")
    if batch_size not in (None, 1):
        raise ValueError("--batch-size is for classifiers: an ONNX detector takes one (3, S, S) image per run, "
                         "a TorchScript one a list of images")
    ckpt = path if isinstance(path, Checkpoint) else open_checkpoint(path, strict=False)
    model, _ = load_detector(ckpt)
    options = {"img_size": img_size}
    if fmt == "onnx":
        options["opset"] = opset
    if fmt == "safetensors":
        options["card"] = {k: ckpt.get(k) for k in DET_CARD_FIELDS if ckpt.get(k) is not None}
    return _name(model), export_model(model, output, fmt, kind="detection", **options)


def describe_checks(res: ExportResult) -> str:
    """The verdict part of the command's result line: detections per check image and the largest difference."""
    checks = res.extra.get("checks", [])
    counts = ", ".join(f"{c['image']} {c['detections']}" for c in checks if "(batch)" not in c["image"])
    if res.max_abs_diff is None:
        return "not checked"
    if res.extra.get("worst") is None:
        return f"no detections on the check images ({counts}): only the counts were compared"
    return (f"detections {counts}; max abs diff vs PyTorch {res.max_abs_diff:.3g} (tolerance {res.tolerance:.3g}, "
            f"{res.extra['worst']})")
