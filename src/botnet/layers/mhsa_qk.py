"""MHSA2d with narrower query/key heads than value heads.

timm's ``eca_botnext26ts_256`` (BoTNet family, arXiv:2101.11605, Fig. 4 with ``dim_head=16``) uses
q and k of ``qk_head_dim`` channels per head while v keeps ``dim // num_heads``: the projection is
``qkv`` = [q (heads x qk_head_dim) | k (heads x qk_head_dim) | v (dim)], q is scaled by
qk_head_dim^-0.5 and the relative tables have qk_head_dim columns. Everything else is ``MHSA2d``
(the same logits, position encodings, softmax in float32 and kernels); the ``chunked`` kernel
assumes equal widths, so it is excluded here and ``auto`` (or a forced ``chunked``) runs
``sdpa_fold`` on every device.
"""

from __future__ import annotations

import torch
from torch import nn

from .mhsa import MHSA2d
from .pos_embed import AbsPosEmb2d, RelPosEmb2d

__all__ = ["MHSA2dQK"]


class MHSA2dQK(MHSA2d):
    """``MHSA2d`` whose q/k heads have ``qk_head_dim`` channels (v heads: ``dim // num_heads``).

    Args: as ``MHSA2d``, plus ``qk_head_dim`` (>= 1).
    Shapes: (B, dim, H, W) -> (B, dim, H, W).
    """

    excluded_kernels = ("chunked",)

    def __init__(self, dim: int, num_heads: int = 4, feat_size: int | tuple[int, int] = 14, pos_enc: str = "relative",
                 content: bool = True, qkv_bias: bool = False, kernel: str = "auto", qk_head_dim: int = 16):
        super().__init__(dim, num_heads, feat_size, pos_enc, content, qkv_bias, kernel)
        if qk_head_dim < 1:
            raise ValueError(f"qk_head_dim must be >= 1, got {qk_head_dim}")
        self.qk_head_dim = qk_head_dim
        self.scale = qk_head_dim**-0.5
        self.splits = [num_heads * qk_head_dim] * (self.num_proj - 1) + [dim]  # [q | k | v] or [q | v]
        self.qkv = nn.Conv2d(dim, sum(self.splits), kernel_size=1, bias=qkv_bias)
        if pos_enc == "relative":
            self.pos = RelPosEmb2d(feat_size, qk_head_dim)
        elif pos_enc == "absolute":
            self.pos = AbsPosEmb2d(feat_size, qk_head_dim)
        self.reset_parameters()

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """x: (B, C, H, W) -> q (B, heads, H*W, qk_head_dim) scaled, k (same) or None, v (B, heads, H*W, C/heads)."""
        b, _, h, w = x.shape
        parts = self.qkv(x).flatten(2).split(self.splits, 1)
        q = parts[0].reshape(b, self.num_heads, self.qk_head_dim, h * w).transpose(-1, -2) * self.scale
        k = parts[1].reshape(b, self.num_heads, self.qk_head_dim, h * w).transpose(-1, -2) if self.content else None
        v = parts[-1].reshape(b, self.num_heads, self.head_dim, h * w).transpose(-1, -2)
        return q, k, v

    def extra_repr(self) -> str:
        return super().extra_repr() + f", qk_head_dim={self.qk_head_dim}"
