"""Position encodings for 2D all2all self-attention.

BoTNet: "Bottleneck Transformers for Visual Recognition", Srinivas et al., arXiv:2101.11605, Fig. 4.
The split 2D relative encoding follows Bello et al. (arXiv:1904.09925) and Ramachandran et al.
(arXiv:1906.05909): the logit between a query at (i, j) and a key at (k, l) gets

    q_ij . R_h[k - i]  +  q_ij . R_w[l - j]

with one table per axis holding the 2L-1 possible offsets, shared by all heads.

Resolution: a table built for L positions is resized to another L' by linear interpolation along
its offset axis with the end points fixed (``align_corners=True``): offset r' at the new size reads
offset r' (L-1)/(L'-1) of the old table, so the encoding of "the far edge" stays the far edge. A
state dict saved at one size loads into a module built for another through the same resize.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RelPosEmb2d", "AbsPosEmb2d", "resize_pos_table", "rel_index"]


def resize_pos_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """Resize a position table along its first axis.

    Args:
        table: (L, D) table; for relative tables L = 2S-1 for a map of S positions.
        length: the new number of rows (>= 1).
    Returns:
        (length, D) table; ``table`` itself when no resize is needed.
    """
    if length < 1:
        raise ValueError(f"position table length must be >= 1, got {length}")
    old = table.shape[0]
    if old == length:
        return table
    if length == 1:
        # A single row stands for offset 0 (or the single position): the middle of the old table.
        mid = (old - 1) / 2
        lo, hi = int(mid), min(int(mid) + 1, old - 1)
        frac = mid - lo
        return (table[lo] * (1 - frac) + table[hi] * frac)[None]
    out = F.interpolate(table.t()[None].float(), size=length, mode="linear", align_corners=True)
    return out[0].t().to(table.dtype)


def rel_index(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(size, size) long tensor: entry [i, k] = k - i + size - 1, the table row of offset k - i."""
    pos = torch.arange(size, device=device)
    return pos[None, :] - pos[:, None] + (size - 1)


def _as_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class _PosEmb2d(nn.Module):
    """Shared parts: two per-axis tables that are resized when loaded from another size."""

    table_names: tuple[str, str]

    def __init__(self, feat_size: int | tuple[int, int], head_dim: int):
        super().__init__()
        self.feat_size = _as_pair(feat_size)
        if min(self.feat_size) < 1:
            raise ValueError(f"feat_size must be positive, got {self.feat_size}")
        if head_dim < 1:
            raise ValueError(f"head_dim must be positive, got {head_dim}")
        self.head_dim = head_dim

    def _table_len(self, size: int) -> int:
        raise NotImplementedError

    def axis_logits(self, q: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, q: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """q: (B, heads, H*W, d), already scaled. Returns logits (B, heads, H*W, H*W): the logit of
        query i and key (k, l) is axis_h[i, k] + axis_w[i, l]."""
        b, n, _, _ = q.shape
        h, w = size
        lh, lw = self.axis_logits(q, size)
        logits = lh.reshape(b, n, h * w, h, 1) + lw.reshape(b, n, h * w, 1, w)
        return logits.reshape(b, n, h * w, h * w)

    def reset_parameters(self) -> None:
        for name in self.table_names:
            nn.init.normal_(getattr(self, name), std=self.head_dim**-0.5)

    def set_feat_size(self, feat_size: int | tuple[int, int]) -> None:
        """Resize the tables in place to a (H, W) map (the resize a state dict saved at the old size
        gets when loaded into a module built at the new one); the parameters are new tensors."""
        size = _as_pair(feat_size)
        if min(size) < 1:
            raise ValueError(f"feat_size must be positive, got {size}")
        for name, s in zip(self.table_names, size):
            old = getattr(self, name)
            with torch.no_grad():
                new = resize_pos_table(old.detach(), self._table_len(s))
            if new.shape != old.shape:
                setattr(self, name, nn.Parameter(new.clone(), requires_grad=old.requires_grad))
        self.feat_size = size

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Accept tables saved for another feature size: resize them to this module's size.
        for name, size in zip(self.table_names, self.feat_size):
            key = prefix + name
            t = state_dict.get(key)
            if t is not None and t.dim() == 2 and t.shape[0] != self._table_len(size):
                state_dict[key] = resize_pos_table(t, self._table_len(size))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"feat_size={self.feat_size}, head_dim={self.head_dim}"


class RelPosEmb2d(_PosEmb2d):
    """Split 2D relative position logits, computed in decomposed form.

    Parameters ``rel_height`` (2H-1, d) and ``rel_width`` (2W-1, d); initialised N(0, d^-0.5).
    The logits are formed per axis, q . R_h gathered to (H, H, d) and q . R_w to (W, W, d),
    so the work is O(N (H + W) d) instead of O(N^2 d).
    """

    table_names = ("rel_height", "rel_width")

    def __init__(self, feat_size: int | tuple[int, int], head_dim: int):
        super().__init__(feat_size, head_dim)
        h, w = self.feat_size
        self.rel_height = nn.Parameter(torch.empty(2 * h - 1, head_dim))
        self.rel_width = nn.Parameter(torch.empty(2 * w - 1, head_dim))
        self.reset_parameters()

    def _table_len(self, size: int) -> int:
        return 2 * size - 1

    def tables(self, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables for a (H, W) map, gathered by offset: ((H, H, d), (W, W, d))."""
        h, w = size
        rh = resize_pos_table(self.rel_height, 2 * h - 1)
        rw = resize_pos_table(self.rel_width, 2 * w - 1)
        return rh[rel_index(h, rh.device)], rw[rel_index(w, rw.device)]

    def axis_logits(self, q: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (B, heads, H*W, d), already scaled. Returns the per-axis logits of every query,
        (B, heads, H*W, H) over key rows and (B, heads, H*W, W) over key columns."""
        b, n, _, d = q.shape
        h, w = size
        rh, rw = self.tables(size)
        q = q.reshape(b, n, h, w, d)
        logits_h = torch.einsum("bnhwd,hkd->bnhwk", q, rh.to(q.dtype))  # key row k
        logits_w = torch.einsum("bnhwd,wld->bnhwl", q, rw.to(q.dtype))  # key column l
        return logits_h.reshape(b, n, h * w, h), logits_w.reshape(b, n, h * w, w)


class AbsPosEmb2d(_PosEmb2d):
    """Split 2D absolute position logits: q_ij . (E_h[k] + E_w[l]) for a key at (k, l).

    Parameters ``emb_height`` (H, d) and ``emb_width`` (W, d); initialised N(0, d^-0.5).
    """

    table_names = ("emb_height", "emb_width")

    def __init__(self, feat_size: int | tuple[int, int], head_dim: int):
        super().__init__(feat_size, head_dim)
        h, w = self.feat_size
        self.emb_height = nn.Parameter(torch.empty(h, head_dim))
        self.emb_width = nn.Parameter(torch.empty(w, head_dim))
        self.reset_parameters()

    def _table_len(self, size: int) -> int:
        return size

    def axis_logits(self, q: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (B, heads, H*W, d), already scaled -> (B, heads, H*W, H) and (B, heads, H*W, W)."""
        h, w = size
        eh = resize_pos_table(self.emb_height, h).to(q.dtype)
        ew = resize_pos_table(self.emb_width, w).to(q.dtype)
        return q @ eh.t(), q @ ew.t()
