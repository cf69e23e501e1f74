"""The export-only form of MHSA: fixed shapes and constant position tables, for ONNX graphs that
ONNX Runtime runs fast and TensorRT takes as they are.

BoTNet: "Bottleneck Transformers for Visual Recognition", Srinivas et al., arXiv:2101.11605, Fig. 4.
``StaticMHSA`` computes what ``botnet.layers.MHSA2d`` computes (the same q, k, v projection, the
same logits q k^T + row[i, key row] + col[i, key column], softmax in float32) for one (H, W) map,
with everything that depends only on the weights and the map size made a constant at export:

- the 1x1 q/k/v projection with q's scale folded into its weight rows;
- the relative tables gathered by offset once (``RelPosEmb2d.tables``): (H, d, H) and (W, d, W)
  constants, so the graph has no relative-to-absolute step (no Pad-then-Reshape, no Gather) and
  the per-axis logits are two broadcasting MatMuls, (B, n, H, W, d) @ (H, d, H) and the same over
  columns; absolute tables are (d, H) and (d, W);
- every Reshape takes a constant shape with -1 for the batch, so the graph has no Shape, Gather,
  Unsqueeze/Concat on shapes or ConstantOfShape: the batch axis stays dynamic without them.

``freeze_attention(model, example)`` returns a copy of ``model`` whose ``MHSA2d`` layers (and
subclasses, such as ``MHSA2dQK``) are replaced by ``StaticMHSA`` modules for the map sizes they
see on ``example``. The training kernels (``botnet.layers``) are untouched.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..layers import MHSA2d, RelPosEmb2d, resize_pos_table

__all__ = ["StaticMHSA", "attention_sizes", "freeze_attention"]


class StaticMHSA(nn.Module):
    """``MHSA2d`` for one (H, W) map with constant shapes; inference only.

    Args:
        mhsa: the layer to copy (its weights are copied, not shared).
        size: (H, W) of the map it runs on.

    Shapes: input (B, C, H, W) -> output (B, C, H, W), B dynamic.
    """

    def __init__(self, mhsa: MHSA2d, size: tuple[int, int]):
        super().__init__()
        h, w = int(size[0]), int(size[1])
        self.size, self.dim, self.num_heads = (h, w), mhsa.dim, mhsa.num_heads
        self.qk_dim = getattr(mhsa, "qk_head_dim", mhsa.head_dim)  # per head; v heads are dim // heads wide
        self.v_dim = mhsa.head_dim
        self.content = mhsa.content
        n = self.num_heads
        self.splits = [n * self.qk_dim] * (mhsa.num_proj - 1) + [n * self.v_dim]
        with torch.no_grad():
            weight = mhsa.qkv.weight.detach().clone().float()  # (sum(splits), C, 1, 1)
            weight[: self.splits[0]] *= mhsa.scale
            self.register_buffer("weight", weight)
            bias = mhsa.qkv.bias
            if bias is not None:
                bias = bias.detach().clone().float()
                bias[: self.splits[0]] *= mhsa.scale
            self.register_buffer("bias", bias)
            self.relative = isinstance(mhsa.pos, RelPosEmb2d)
            rows = cols = None
            if self.relative:
                th, tw = mhsa.pos.tables((h, w))  # (H, H, d) [query row, key row], (W, W, d)
                rows, cols = th.transpose(1, 2).float(), tw.transpose(1, 2).float()  # (H, d, H), (W, d, W)
            elif mhsa.pos is not None:
                rows = resize_pos_table(mhsa.pos.emb_height.detach(), h).t().float()  # (d, H)
                cols = resize_pos_table(mhsa.pos.emb_width.detach(), w).t().float()  # (d, W)
            self.register_buffer("rows", None if rows is None else rows.detach().clone().contiguous())
            self.register_buffer("cols", None if cols is None else cols.detach().clone().contiguous())

    def position_logits(self, q: torch.Tensor) -> torch.Tensor:
        """q: (B, heads, N, d), scaled -> position logits (B, heads, N, N), N = H*W row-major."""
        h, w = self.size
        n, d, hw = self.num_heads, self.qk_dim, h * w
        q5 = q.reshape(-1, n, h, w, d)
        if self.relative:
            row = q5 @ self.rows  # (B, n, H, W, H): batched over the query row
            col = (q5.transpose(2, 3) @ self.cols).transpose(2, 3)  # (B, n, H, W, W): over the query column
        else:
            row, col = q5 @ self.rows, q5 @ self.cols
        return (row.unsqueeze(-1) + col.unsqueeze(-2)).reshape(-1, n, hw, hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        h, w = self.size
        n, hw = self.num_heads, h * w
        qkv = nn.functional.conv2d(x, self.weight, self.bias).reshape(-1, sum(self.splits), hw)
        parts = qkv.split(self.splits, 1)
        q = parts[0].reshape(-1, n, self.qk_dim, hw).transpose(-1, -2)  # (B, n, N, d)
        v = parts[-1].reshape(-1, n, self.v_dim, hw).transpose(-1, -2)  # (B, n, N, dv)
        logits = None
        if self.content:
            logits = q @ parts[1].reshape(-1, n, self.qk_dim, hw)  # (B, n, N, N): k is (B, n, d, N) as projected
        if self.rows is not None:
            pos = self.position_logits(q)
            logits = pos if logits is None else logits + pos
        out = torch.softmax(logits, dim=-1) @ v  # (B, n, N, dv); float32 throughout
        return out.transpose(-1, -2).reshape(-1, self.dim, h, w)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, size={self.size}, relative={self.relative}"


def attention_sizes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, int]]:
    """{name: (H, W)} of the map every ``MHSA2d`` of ``model`` sees on ``example`` (B, C, H, W)."""
    sizes, hooks = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, MHSA2d):
            hooks.append(mod.register_forward_pre_hook(
                lambda m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:]))))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def freeze_attention(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """A copy of ``model`` (eval mode) with every ``MHSA2d`` that runs on ``example`` (B, C, H, W)
    replaced by a ``StaticMHSA`` for its map size; and how many were replaced."""
    model = copy.deepcopy(model).eval()
    sizes = attention_sizes(model, example)
    for name, size in sizes.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, StaticMHSA(getattr(parent, attr), size))
    return model, len(sizes)
