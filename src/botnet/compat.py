"""One place for the torch / torchvision APIs newer than the oldest pair botnet supports.

botnet declares ``torch>=2.4,<2.15`` and ``torchvision>=0.19,<0.30`` (pyproject.toml), and the whole
suite runs on both ends: the exact pair of constraints.txt (``make test``) and the floor pair,
torch 2.4.1 + torchvision 0.19.1 of constraints-floor.txt (``make test-floor``).

The rule: **new torch / torchvision APIs go through this module.** When code needs an API that the
floor pair lacks, add one function (or flag) here that uses the new API where it exists and an
equivalent fallback otherwise, and call that; no version checks scattered through the package. A
feature the floor cannot provide at all gets a ``HAS_*`` flag and a ``*_MISSING`` reason, for the
error message and for the tests' ``skipif``. This module sits at the bottom of the stack: it imports
only torch and torchvision, so every botnet module may import it. It imports torchvision only when a
torchvision function here is used (``V2Transform`` is built on first access): ``import torchvision``
costs about 1 s (it imports ``torch._dynamo``), and the layers and models that import this module
need torch alone.

What is here (the newest API, and the release it appeared in):

- ``total_norm``: ``torch.nn.utils.get_total_norm`` (torch 2.6);
- ``query_size``: ``torchvision.transforms.v2.query_size`` (torchvision 0.20);
- ``V2Transform``: ``torchvision.transforms.v2.Transform`` with the public hooks for custom
  transforms, ``make_params`` / ``transform`` (torchvision 0.21; 0.19 calls ``_get_params`` /
  ``_transform``);
- ``HAS_FLEX`` / ``FLEX_MISSING`` / ``flex_attention``: ``torch.nn.attention.flex_attention``
  (torch 2.5): the ``flex`` MHSA kernel is accepted only where it exists;
- ``restore_ieee_denormals``: torch 2.4's inductor builds its CPU kernels with ``-ffast-math``,
  and loading them (the first call of a ``torch.compile``d model) turns on flush-to-zero for the
  whole thread; this turns it back off (newer torch does not set it);
- ``draw_labelled_boxes``: ``torchvision.utils.draw_bounding_boxes`` with ``fill_labels`` /
  ``label_colors`` (torchvision 0.20; before, the filled label backgrounds are drawn with PIL);
- ``TORCH_VERSION`` / ``TORCHVISION_VERSION``: (major, minor) of the installed pair.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
from collections.abc import Iterable

import torch

__all__ = ["TORCH_VERSION", "TORCHVISION_VERSION", "HAS_FLEX", "FLEX_MISSING", "flex_attention",
           "total_norm", "query_size", "V2Transform", "restore_ieee_denormals", "draw_labelled_boxes"]


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


TORCH_VERSION = _major_minor(torch.__version__)
TORCHVISION_VERSION = _major_minor(importlib.metadata.version("torchvision"))  # without importing it

# torch.nn.attention.flex_attention is public from torch 2.5 (2.4 has only a private prototype);
# find_spec imports the small torch.nn.attention package, not flex_attention and its compiler stack.
HAS_FLEX = importlib.util.find_spec("torch.nn.attention.flex_attention") is not None
FLEX_MISSING = ("" if HAS_FLEX else
                f"kernel 'flex' needs torch.nn.attention.flex_attention (torch >= 2.5); this is torch {torch.__version__}")


def flex_attention():
    """``torch.nn.attention.flex_attention.flex_attention``; RuntimeError (``FLEX_MISSING``) where
    this torch has none (torch 2.4)."""
    if not HAS_FLEX:
        raise RuntimeError(FLEX_MISSING)
    from torch.nn.attention.flex_attention import flex_attention as fn

    return fn


def total_norm(tensors: torch.Tensor | Iterable[torch.Tensor], norm_type: float = 2.0) -> torch.Tensor:
    """The ``norm_type``-norm of all ``tensors`` together, as if concatenated into one vector (a
    0-d tensor on the first tensor's device; 0 for none): ``torch.nn.utils.get_total_norm`` where
    it exists (torch >= 2.6), else the same two-level norm (the norm of the per-tensor norms, which
    ``clip_grad_norm_`` has always computed). NaN and Inf propagate in both."""
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is not None:
        return get_total_norm(tensors, norm_type=norm_type)
    tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
    if not tensors:
        return torch.tensor(0.0)
    device = tensors[0].device
    norms = torch.stack([torch.linalg.vector_norm(t, float(norm_type)).to(device) for t in tensors])
    return torch.linalg.vector_norm(norms, float(norm_type))


def query_size(flat_inputs: list) -> tuple[int, int]:
    """(H, W) shared by the image-like entries of a v2 transform's flattened inputs (images, videos,
    masks, bounding boxes' canvas, PIL images, a plain tensor image); ValueError when they differ.
    ``torchvision.transforms.v2.query_size`` where it is public (torchvision >= 0.20), else the same
    function from where torchvision 0.19 keeps it (``torchvision.transforms.v2._utils``)."""
    from torchvision.transforms import v2

    public = getattr(v2, "query_size", None)
    if public is not None:
        return tuple(public(flat_inputs))
    from torchvision.transforms.v2 import _utils  # torchvision 0.19: same function, not yet exported

    return tuple(_utils.query_size(flat_inputs))


def _v2_transform() -> type:
    from torchvision.transforms import v2

    class V2Transform(v2.Transform):
        """Base of botnet's custom v2 transforms: subclasses define ``make_params(flat_inputs) -> dict``
        and ``transform(inpt, params)``, the hooks torchvision >= 0.21 calls; on older torchvision,
        whose ``forward`` calls ``_get_params`` / ``_transform`` instead, those two call them."""

        if not hasattr(v2.Transform, "make_params"):

            def _get_params(self, flat_inputs: list) -> dict:
                return self.make_params(flat_inputs)

            def _transform(self, inpt, params: dict):
                return self.transform(inpt, params)

    V2Transform.__module__, V2Transform.__qualname__ = __name__, "V2Transform"
    return V2Transform


def __getattr__(name: str):
    """``V2Transform``, built (importing torchvision) on first use and then kept."""
    if name == "V2Transform":
        globals()[name] = cls = _v2_transform()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def restore_ieee_denormals() -> None:
    """Turn flush-to-zero / denormals-are-zero off again on this thread (``torch.set_flush_denormal(
    False)``; a no-op when they are off). torch 2.4's inductor compiles its CPU kernels with
    ``-ffast-math``, and with GCC < 13 loading such a library sets both for the process's thread:
    every later float operation (torch, NumPy, Python) then flushes subnormals to zero."""
    torch.set_flush_denormal(False)


def draw_labelled_boxes(image: torch.Tensor, boxes: torch.Tensor, labels: list[str], colors: list, width: int) -> torch.Tensor:
    """``image`` (3, H, W) uint8 with ``boxes`` (N, 4) xyxy drawn in ``colors`` and each label in black
    on a background filled with its box's colour. torchvision's ``draw_bounding_boxes(...,
    fill_labels=True, label_colors=black)`` where it has them (torchvision >= 0.20); otherwise the
    boxes by torchvision and the labels by PIL, the same layout (text at the box's top-left corner).
    Returns (3, H, W) uint8."""
    from torchvision.utils import draw_bounding_boxes

    if "fill_labels" in inspect.signature(draw_bounding_boxes).parameters:
        return draw_bounding_boxes(image, boxes, labels=labels, colors=colors, width=width,
                                   fill_labels=True, label_colors=(0, 0, 0))
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    drawn = draw_bounding_boxes(image, boxes, colors=colors, width=width)
    pil = Image.fromarray(drawn.permute(1, 2, 0).numpy())
    canvas, font = ImageDraw.Draw(pil), ImageFont.load_default()
    for box, text, color in zip(boxes.tolist(), labels, colors):
        x, y = box[0] + width, box[1] + width
        left, top, right, bottom = canvas.textbbox((x, y), text, font=font)
        canvas.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=color)
        canvas.text((x, y), text, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).contiguous()
