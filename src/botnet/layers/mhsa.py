"""Global multi-head self-attention over a 2D feature map: the MHSA layer of a BoT block.

BoTNet: "Bottleneck Transformers for Visual Recognition", Srinivas et al., arXiv:2101.11605, Fig. 4.

Shapes: x (B, C, H, W) -> (B, C, H, W), any H, W >= 1; C = num_heads * head_dim, N = H * W.

- q, k, v: one 1x1 convolution without bias (``qkv``), channels ordered [q | k | v], each split
  into ``num_heads`` contiguous groups of ``head_dim`` channels: (B, heads, N, head_dim);
- q is scaled by head_dim^-0.5 before both the content and the position logits (as the authors'
  reference code does);
- logits (B, heads, N, N) = q k^T (content, Table 4 "qk") + q r^T (position: relative, absolute
  or none);
- softmax over all N keys, accumulated in float32 whatever the input dtype;
- no output projection: the heads are concatenated back to (B, C, H, W).

The position logits of a query split into a row part (one value per key row, H) and a column
part (W), so they never need an N x N table of offsets. Four exact kernels compute the layer:

- ``reference``: logits = q k^T + row[.., k] + col[.., l] materialised, softmax in float32, @ v;
- ``chunked``: the same a block of queries at a time with a hand-written backward that recomputes
  the block (``botnet.layers.chunked_attn``); the largest temporary is one block;
- ``sdpa_bias``: ``scaled_dot_product_attention`` with the position logits as an additive mask;
- ``sdpa_fold``: the position terms folded into q and k, [q, row, col] . [k, onehot(k), onehot(l)],
  so ``scaled_dot_product_attention`` runs without a mask; q, k and v are zero-padded to one head
  size that is a multiple of 8, so its fused (flash / memory-efficient) kernels are eligible
  (``botnet.layers.fused_attn``).

A candidate fifth kernel, ``flex`` (``CANDIDATE_KERNELS``), runs ``flex_attention`` with a
``score_mod`` adding the row and column logits. It exists only where torch has FlexAttention
(torch >= 2.5, ``botnet.compat.HAS_FLEX``); on torch 2.4 ``CANDIDATE_KERNELS`` is empty and asking
for ``flex`` is a ValueError that says why. It has no backward on CPU (``kernel_handles``), and
``auto`` never picks it.

``kernel="auto"`` (the default) takes the first kernel of ``AUTO_ORDER[device type]`` that
``kernel_handles`` the call: ``chunked`` on CPU, and ``sdpa_fold`` on GPUs, where a mask-free SDPA
can use the fused kernels (docs/benchmarks.md, "Notes on the kernels", has the measurements behind
that order). ``kernel_handles`` is the contract
that tests/layers/test_kernel_grid.py checks against the brute-force reference on a grid of
degenerate and ordinary shapes; a kernel that does not handle a call is passed over.
``use_kernel(name)`` overrides every layer inside a ``with`` block (the counter uses ``reference``,
whose matmuls are the paper's M.Adds). A scripted layer (``torch.jit.script``) always runs
``reference``. All four match the brute-force reference (tests/layers/test_mhsa.py).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..compat import FLEX_MISSING, HAS_FLEX
from .chunked_attn import chunked_attention
from .fused_attn import axis_onehots, flex_attention_rel, fold_attention
from .pos_embed import AbsPosEmb2d, RelPosEmb2d

__all__ = ["MHSA2d", "POS_ENCODINGS", "KERNELS", "CANDIDATE_KERNELS", "AUTO_ORDER", "kernel_handles", "use_kernel"]

POS_ENCODINGS = ("relative", "absolute", "none")
KERNELS = ("auto", "reference", "chunked", "sdpa_bias", "sdpa_fold")
# accepted by MHSA2d and use_kernel, never picked by "auto": flex has no backward on CPU in torch 2.14;
# only where torch has FlexAttention (torch >= 2.5)
CANDIDATE_KERNELS = ("flex",) if HAS_FLEX else ()
_ALL_KERNELS = KERNELS + CANDIDATE_KERNELS
# the kernels "auto" tries, in order, by device type; "reference" handles every call
AUTO_ORDER = {"cpu": ("chunked", "sdpa_fold", "reference"), "cuda": ("sdpa_fold", "chunked", "reference")}
_forced_kernel: str | None = None


def _check_kernel(name: str) -> None:
    if name == "flex" and not HAS_FLEX:
        raise ValueError(FLEX_MISSING)
    if name not in _ALL_KERNELS:
        raise ValueError(f"kernel must be one of {_ALL_KERNELS}, got {name!r}")


def kernel_handles(kernel: str, size: tuple[int, int], device: torch.device, needs_grad: bool) -> bool:
    """Whether ``kernel`` computes MHSA2d exactly for an (H, W) map on ``device``, with a backward
    when ``needs_grad``: what tests/layers/test_kernel_grid.py checks against the brute-force
    reference (every map from 1x1, 1xN and Nx1 up to 64x64, forward and backward, float32 and
    float64). Every exact kernel handles every map; ``flex`` has no backward on CPU."""
    h, w = size
    if h < 1 or w < 1 or kernel not in _ALL_KERNELS or kernel == "auto":
        return False
    if kernel == "flex":
        return not (needs_grad and device.type == "cpu")
    return True


@contextlib.contextmanager
def use_kernel(name: str):
    """Run every MHSA2d inside the block with kernel ``name`` (one of KERNELS)."""
    global _forced_kernel
    _check_kernel(name)
    previous, _forced_kernel = _forced_kernel, name
    try:
        yield
    finally:
        _forced_kernel = previous


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
        kernel: "auto", "reference", "chunked", "sdpa_bias", "sdpa_fold" or the candidate "flex"
            (see the module docstring).

    Shapes: input (B, C, H, W) -> output (B, C, H, W).
    """

    # kernels this layer's layout rules out (a subclass with another q/k width sets it); asking for
    # one of them, or for "auto", runs the first of AUTO_ORDER that is left
    excluded_kernels: tuple[str, ...] = ()

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        feat_size: int | tuple[int, int] = 14,
        pos_enc: str = "relative",
        content: bool = True,
        qkv_bias: bool = False,
        kernel: str = "auto",
    ):
        super().__init__()
        _check_kernel(kernel)
        self.kernel = kernel
        if pos_enc not in POS_ENCODINGS:
            raise ValueError(f"pos_enc must be one of {POS_ENCODINGS}, got {pos_enc!r}")
        if num_heads < 1 or dim < num_heads:
            raise ValueError(f"MHSA2d needs 1 <= num_heads <= dim, got num_heads={num_heads}, dim={dim}")
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
        parts = qkv.transpose(-1, -2).unbind(1)  # P x (B, heads, N, d); unbind has a cheap backward
        q = parts[0] * self.scale
        k = parts[1] if self.content else None
        return q, k, parts[-1]

    def heads_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B * heads, P, head_dim, H*W): the projection with q scaled, computed
        with the weight rows reordered head-major so that batch x heads is one strided axis."""
        b, c, h, w = x.shape
        p, n, d = self.num_proj, self.num_heads, self.head_dim
        wt = self.qkv.weight.view(p, n, d, c)
        wt = torch.cat([wt[:1] * self.scale, wt[1:]], 0).transpose(0, 1).reshape(n * p * d, c, 1, 1)
        bias = self.qkv.bias
        if bias is not None:
            bias = bias.view(p, n, d)
            bias = torch.cat([bias[:1] * self.scale, bias[1:]], 0).transpose(0, 1).reshape(-1)
        return F.conv2d(x, wt, bias).reshape(b * n, p, d, h * w)  # a copy only for channels_last input

    def attention_logits(self, q: torch.Tensor, k: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        """Logits (B, heads, N, N) for queries (rows) over keys (columns)."""
        if self.pos is None:
            assert k is not None  # the constructor refuses content=False without a position encoding
            return q @ k.transpose(-1, -2)
        pos = self.pos(q, size)
        return pos if k is None else q @ k.transpose(-1, -2) + pos

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, heads, N, N), softmax over keys; N = H*W in row-major order."""
        q, k, _ = self.split_heads(x)
        logits = self.attention_logits(q, k, x.shape[-2:])
        return torch.softmax(logits, dim=-1, dtype=torch.float32)

    def resolved_kernel(self, device: torch.device, size: tuple[int, int] = (1, 1), needs_grad: bool = False) -> str:
        """The kernel that runs an (H, W) map on ``device``: the forced or chosen one, or for
        ``auto`` the first of ``AUTO_ORDER`` that ``kernel_handles`` the call."""
        k = _forced_kernel or self.kernel
        if k != "auto" and k not in self.excluded_kernels:
            return k
        order = AUTO_ORDER.get(device.type, AUTO_ORDER["cuda"])
        return next(c for c in order if c not in self.excluded_kernels and kernel_handles(c, size, device, needs_grad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.forward_reference(x)
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or self.qkv.weight.requires_grad)
        return self.forward_kernel(x, self.resolved_kernel(x.device, (x.shape[-2], x.shape[-1]), needs_grad))

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.split_heads(x)
        logits = self.attention_logits(q, k, (h, w))
        out = torch.softmax(logits, dim=-1, dtype=torch.float32).to(v.dtype) @ v
        return out.transpose(-1, -2).reshape(b, c, h, w)

    @torch.jit.unused
    def forward_kernel(self, x: torch.Tensor, kernel: str) -> torch.Tensor:
        if kernel == "reference":
            return self.forward_reference(x)
        b, c, h, w = x.shape
        if kernel == "chunked":
            q, kv = self.heads_qkv(x).split([1, self.num_proj - 1], 1)
            q = q.squeeze(1)  # (B * heads, d, N)
            row = col = None
            if self.pos is not None:
                q4 = q.view(b, self.num_heads, self.head_dim, h * w).transpose(-1, -2)
                row, col = self.pos.axis_logits(q4, (h, w))
                row, col = row.reshape(b * self.num_heads, h * w, h), col.reshape(b * self.num_heads, h * w, w)
            return chunked_attention(q, kv, row, col, has_k=self.content).view(b, c, h, w)
        q, k, v = self.split_heads(x)
        if kernel == "sdpa_bias" and k is not None:
            bias = self.pos(q, (h, w)) if self.pos is not None else None  # (B, heads, N, N), q's dtype
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        else:  # sdpa_fold and flex (and sdpa_bias without content logits: no q k^T to add a bias to)
            row, col = self.pos.axis_logits(q, (h, w)) if self.pos is not None else (None, None)
            if kernel == "flex":
                out = flex_attention_rel(q, k, v, row, col)
            else:
                out = fold_attention(q, k, v, row, col)
        return out.transpose(-1, -2).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, pos_enc={self.pos_enc!r}, content={self.content}"
