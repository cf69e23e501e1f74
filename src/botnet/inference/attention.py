"""Attention maps of the MHSA layers of a BoTNet: where one query position looks, per head.

BoTNet (arXiv:2101.11605) replaces the 3x3 convolutions of c5 with all2all self-attention; every
position of the c5 map attends to every other one. ``attention_maps`` returns, for one query
position, the softmax weights over all key positions of one MHSA layer, one map per head (they
sum to 1 over the keys); ``draw_attention_grid`` draws them over the input image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..layers import BoTBlock, MHSA2d

__all__ = ["mhsa_layers", "resolve_layer", "attention_maps", "pixel_to_feature", "draw_attention_grid"]


def mhsa_layers(model: nn.Module) -> list[str]:
    """Names of the MHSA2d modules of ``model`` in forward order (e.g. layer4.0.attn, layer4.1.attn)."""
    return [name for name, m in model.named_modules() if isinstance(m, MHSA2d)]


def resolve_layer(model: nn.Module, layer: str | None = None) -> tuple[str, MHSA2d]:
    """(name, module) of the MHSA layer ``layer`` names (an MHSA layer or a BoT block; None: the last)."""
    names = mhsa_layers(model)
    if not names:
        raise ValueError(f"{getattr(model, 'model_name', type(model).__name__)} has no MHSA layer (no BoT block)")
    name = names[-1] if layer is None else layer
    module = dict(model.named_modules()).get(name)
    if isinstance(module, BoTBlock):  # a block's name stands for its MHSA
        name, module = f"{name}.attn", module.attn
    if not isinstance(module, MHSA2d):
        raise ValueError(f"layer {name!r} is not an MHSA layer of this model; choose one of {', '.join(names)}")
    return name, module


def pixel_to_feature(query_px: Sequence[float], image_size: Sequence[int], feat_size: Sequence[int]) -> tuple[int, int]:
    """(y, x) in input pixels -> (y, x) of the feature cell covering it on a (h, w) map."""
    (py, px), (H, W), (h, w) = query_px, image_size, feat_size
    if not (0 <= py < H and 0 <= px < W):
        raise ValueError(f"query {tuple(query_px)} lies outside the {H}x{W} input image")
    return min(int(py * h / H), h - 1), min(int(px * w / W), w - 1)


@torch.no_grad()
def attention_maps(model: nn.Module, image: torch.Tensor, layer: str | None = None,
                   query: Sequence[int] | None = None, *, query_px: Sequence[float] | None = None) -> torch.Tensor:
    """Attention weights of one query over all keys, per head.

    Args:
        model: a model with BoT blocks (run in eval mode; its mode is restored afterwards).
        image: the normalized input, (3, H, W) or (1, 3, H, W).
        layer: module name of an MHSA layer (``mhsa_layers(model)``) or of a BoT block; default the last.
        query: (y, x) on that layer's feature map (its input resolution: a stride-2 BoT block
            attends before pooling); default the center.
        query_px: (y, x) in input pixels instead, mapped to the feature cell covering it.

    Returns:
        (heads, h, w) float32 tensor; each head's map sums to 1 over the h*w key positions.
    """
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image, (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    if query is not None and query_px is not None:
        raise ValueError("give query (feature cells) or query_px (pixels), not both")
    name, module = resolve_layer(model, layer)
    captured = {}

    def grab(_module, args):
        captured["x"] = args[0]

    handle = module.register_forward_pre_hook(grab)
    was_training = model.training
    try:
        model.eval()
        model(image.to(next(model.parameters()).device))
    finally:
        handle.remove()
        model.train(was_training)
    x = captured["x"]
    h, w = x.shape[-2:]
    if query_px is not None:
        query = pixel_to_feature(query_px, image.shape[-2:], (h, w))
    elif query is None:
        query = (h // 2, w // 2)
    y, xq = int(query[0]), int(query[1])
    if not (0 <= y < h and 0 <= xq < w):
        raise ValueError(f"query {tuple(query)} lies outside the {h}x{w} feature map of {name}")
    attn = module.attention(x)  # (1, heads, N, N), rows are queries
    return attn[0, :, y * w + xq].reshape(-1, h, w).float().cpu()


def _as_hwc(image) -> "np.ndarray":  # noqa: F821

    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4:
            t = t[0]
        t = t.permute(1, 2, 0)
        return t.numpy() if t.dtype == torch.uint8 else t.float().clamp(0, 1).numpy()
    return np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)


def draw_attention_grid(image, maps: torch.Tensor, query: Sequence[int], path: str | os.PathLike, *,
                        title: str | None = None, alpha: float = 0.6) -> str:
    """Write a PNG: the image with the query cell marked, then one panel per head with its map over it.

    Args:
        image: what the model saw, unnormalized: a PIL image, an (H, W, 3) array, or a (3, H, W)
            tensor (uint8, or float in [0, 1]).
        maps: (heads, h, w) from ``attention_maps``.
        query: (y, x) of the query on the h x w map.
    Returns the path written.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    img = _as_hwc(image)
    H, W = img.shape[:2]
    heads, h, w = maps.shape
    cy, cx = H / h, W / w  # one feature cell in pixels
    qy, qx = int(query[0]), int(query[1])
    cols = min(heads + 1, 5)
    rows = -(-(heads + 1) // cols)
    fig = Figure(figsize=(2.6 * cols, 2.6 * rows + (0.4 if title else 0)), dpi=100)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()

    def mark(ax):
        ax.add_patch(Rectangle((qx * cx, qy * cy), cx, cy, fill=False, edgecolor="red", linewidth=1.5))
        ax.plot([(qx + 0.5) * cx], [(qy + 0.5) * cy], marker="x", color="red", markersize=8, mew=2)

    axes[0].imshow(img)
    mark(axes[0])
    axes[0].set_title(f"query (y={qy}, x={qx})", fontsize=9)
    for i in range(heads):
        ax = axes[i + 1]
        ax.imshow(img.mean(-1), cmap="gray")  # the image in gray under the colored map
        m = maps[i].numpy()
        ax.imshow(m, cmap="inferno", alpha=alpha, extent=(0, W, H, 0), interpolation="nearest", vmin=0, vmax=m.max())
        mark(ax)
        ax.set_title(f"head {i} (max {m.max():.2f})", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[heads + 1 :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return str(path)
