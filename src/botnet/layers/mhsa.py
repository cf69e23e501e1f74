"""Global multi-head self-attention over a 2D feature map: the MHSA layer of a BoT block.

BoTNet: "Bottleneck Transformers for Visual Recognition", Srinivas et al., arXiv:2101.11605, Fig. 4.

- q, k, v: one 1x1 convolution without bias (``qkv``), channels ordered [q | k | v], each split
  into ``num_heads`` contiguous groups of ``head_dim`` channels;
- q is scaled by head_dim^-0.5 before both the content and the position logits (as the authors'
  reference code does);
- logits = q k^T (content, Table 4 "qk") + q r^T (position: relative, absolute or none);
- softmax over all H*W keys, in float32 whatever the input dtype;
- no output projection: the heads are concatenated back to (B, C, H, W).
"""

from __future__ import annotations

import torch
from torch import nn

from .pos_embed import AbsPosEmb2d, RelPosEmb2d

__all__ = ["MHSA2d", "POS_ENCODINGS"]

POS_ENCODINGS = ("relative", "absolute", "none")


class MHSA2d(nn.Module):
    """All2all multi-head self-attention with split 2D position encodings.

    Args:
        dim: channels C of the input and output.
        num_heads: number of heads (the paper uses 4); C must be divisible by it.
        feat_size: (H, W) the position tables are built for. The layer runs at any other size by
            resizing them (see ``botnet.layers.pos_embed``).
        pos_enc: "relative" (the paper), "absolute" or "none".
        content: include the content logits q k^T. ``content=False`` with ``pos_enc="relative"`` is
            Table 4's "qr only" ablation; the key projection is then not built at all.
        qkv_bias: bias in the q/k/v projection (False in the paper).

    Shapes: input (B, C, H, W) -> output (B, C, H, W).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        feat_size: int | tuple[int, int] = 14,
        pos_enc: str = "relative",
        content: bool = True,
        qkv_bias: bool = False,
    ):
        super().__init__()
        if pos_enc not in POS_ENCODINGS:
            raise ValueError(f"pos_enc must be one of {POS_ENCODINGS}, got {pos_enc!r}")
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if not content and pos_enc == "none":
            raise ValueError("MHSA2d needs content logits (content=True) or a position encoding")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.content = content
        self.pos_enc = pos_enc
        self.num_proj = 3 if content else 2  # [q | k | v] or [q | v]
        self.qkv = nn.Conv2d(dim, dim * self.num_proj, kernel_size=1, bias=qkv_bias)
        if pos_enc == "relative":
            self.pos = RelPosEmb2d(feat_size, self.head_dim)
        elif pos_enc == "absolute":
            self.pos = AbsPosEmb2d(feat_size, self.head_dim)
        else:
            self.pos = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # unit-variance projections (fan-in), as timm's BottleneckAttn
        nn.init.normal_(self.qkv.weight, std=self.dim**-0.5)
        if self.qkv.bias is not None:
            nn.init.zeros_(self.qkv.bias)
        if self.pos is not None:
            self.pos.reset_parameters()

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """x: (B, C, H, W) -> q (scaled), k, v, each (B, heads, H*W, head_dim); k is None without content."""
        b, _, h, w = x.shape
        qkv = self.qkv(x).reshape(b, self.num_proj, self.num_heads, self.head_dim, h * w)
        qkv = qkv.transpose(-1, -2)  # (B, P, heads, N, d)
        q = qkv[:, 0] * self.scale
        k = qkv[:, 1] if self.content else None
        return q, k, qkv[:, -1]

    def attention_logits(self, q: torch.Tensor, k: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        """Logits (B, heads, N, N) for queries (rows) over keys (columns)."""
        logits = q @ k.transpose(-1, -2) if k is not None else None
        if self.pos is not None:
            pos = self.pos(q, size)
            logits = pos if logits is None else logits + pos
        return logits

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, heads, N, N), softmax over keys; N = H*W in row-major order."""
        q, k, _ = self.split_heads(x)
        logits = self.attention_logits(q, k, x.shape[-2:])
        return torch.softmax(logits, dim=-1, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.split_heads(x)
        logits = self.attention_logits(q, k, (h, w))
        attn = torch.softmax(logits, dim=-1, dtype=torch.float32).to(v.dtype)
        out = attn @ v  # (B, heads, N, d)
        return out.transpose(-1, -2).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, pos_enc={self.pos_enc!r}, content={self.content}"
