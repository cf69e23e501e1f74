"""Fused-kernel forms of BoTNet's attention: the position logits folded into SDPA, or added by a
FlexAttention ``score_mod``.

BoTNet: "Bottleneck Transformers for Visual Recognition", Srinivas et al., arXiv:2101.11605, Fig. 4.
The logit of query i over key (k, l) is q_i . k_kl + row[i, k] + col[i, l] (row/col: the split
position logits of ``botnet.layers.pos_embed``). Two exact ways to hand that to a fused kernel:

- ``fold_attention`` (kernel ``sdpa_fold``): q' = [q, row, col, 0...], k' = [k, onehot(k),
  onehot(l), 0...], v' = [v, 0...], so q' . k' is the full logit and
  ``scaled_dot_product_attention`` runs without a mask. q', k' and v' are zero-padded to one
  common width that is a multiple of 8 (``fold_width``): torch's flash kernel needs equal head
  sizes (q/k are d + H + W wide, v is d: 128 + 14 + 14 = 156 against 128 at BoT50 c5 at 224) and
  its memory-efficient kernel multiples of 8, else SDPA takes the math path that stores the N x N
  matrix. Zero columns add 0 to every dot product and only produce output columns that are sliced
  off, so the result is the same function (also in its gradients).
- ``flex_attention_rel`` (kernel ``flex``): ``torch.nn.attention.flex_attention`` with a
  ``score_mod`` that adds row[b, h, i, key // W] + col[b, h, i, key % W] to each score; fused when
  run under ``torch.compile``. In torch 2.14 FlexAttention has no backward on CPU, so there the
  kernel is inference-only (the CUDA check in benchmarks/gpu_check.sh covers its gradients).
  torch 2.4 has no public FlexAttention: there the kernel is refused (``botnet.compat.HAS_FLEX``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..compat import flex_attention

__all__ = ["axis_onehots", "fold_width", "fold_attention", "flex_attention_rel"]


def fold_width(*widths: int, multiple: int = 8) -> int:
    """The common head size the folded q, k and v are padded to: the largest of ``widths``
    rounded up to ``multiple``."""
    top = max(widths)
    return -(-top // multiple) * multiple


def axis_onehots(h: int, w: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column one-hots of the H*W keys in row-major order: (N, H), (N, W)."""
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return F.one_hot(rows, h).to(dtype), F.one_hot(cols, w).to(dtype)


def fold_attention(q: torch.Tensor, k: torch.Tensor | None, v: torch.Tensor,
                   row: torch.Tensor | None, col: torch.Tensor | None, pad: bool = True) -> torch.Tensor:
    """softmax(q k^T + row + col) v through one mask-free ``scaled_dot_product_attention``.

    Args:
        q: (B, heads, N, d), already scaled; N = H*W row-major.
        k: (B, heads, N, d), or None (position logits only).
        v: (B, heads, N, d_v).
        row: (B, heads, N, H) logits over key rows, or None (no position logits; then ``k`` is needed).
        col: (B, heads, N, W) logits over key columns (None with ``row``).
        pad: zero-pad q, k, v to ``fold_width`` (False: the unpadded fold, for comparison).
    Returns:
        (B, heads, N, d_v).
    """
    b, nh, n, _ = q.shape
    qs, ks = ([q], [k]) if k is not None else ([], [])
    if row is not None:
        oh_h, oh_w = axis_onehots(row.shape[-1], col.shape[-1], q.device, q.dtype)
        qs += [row, col]
        ks += [oh_h.expand(b, nh, -1, -1), oh_w.expand(b, nh, -1, -1)]
    width = sum(t.shape[-1] for t in qs)
    dv = v.shape[-1]
    if pad:
        full = fold_width(width, dv)
        if full > width:
            zeros = q.new_zeros(1, 1, 1, 1).expand(b, nh, n, full - width)
            qs.append(zeros)
            ks.append(zeros)
        if full > dv:
            v = F.pad(v, (0, full - dv))
    qf = qs[0] if len(qs) == 1 else torch.cat(qs, -1)
    kf = ks[0] if len(ks) == 1 else torch.cat(ks, -1)
    out = F.scaled_dot_product_attention(qf, kf, v, scale=1.0)
    return out[..., :dv] if out.shape[-1] != dv else out


@functools.cache
def _compiled_flex():
    return torch.compile(flex_attention(), dynamic=False)


def flex_attention_rel(q: torch.Tensor, k: torch.Tensor | None, v: torch.Tensor,
                       row: torch.Tensor | None, col: torch.Tensor | None, compile: bool = True) -> torch.Tensor:
    """softmax(q k^T + row + col) v with FlexAttention; same shapes as ``fold_attention``.

    Without content (``k`` None) the keys are zeros, so q . k adds 0. ``compile``: run the fused
    kernel (``torch.compile(flex_attention)``, compiled once per shape); inside a compiled model
    FlexAttention is traced into the model's graph either way. Raises RuntimeError for a backward
    on CPU, which torch 2.14's FlexAttention does not have, and where this torch has no
    FlexAttention (torch 2.4: ``botnet.compat.FLEX_MISSING``).
    """
    eager = flex_attention()
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (q, k, v, row, col)):
        raise RuntimeError("the flex MHSA kernel has no backward on CPU in this torch (FlexAttention "
                           "supports training on CUDA); use kernel 'chunked' on CPU")
    if k is None:
        k = torch.zeros_like(q)
    score_mod = None
    if row is not None:
        width = col.shape[-1]

        def score_mod(score, bi, hi, qi, ki):
            return score + row[bi, hi, qi, ki // width] + col[bi, hi, qi, ki % width]

    fn = eager if (not compile or torch.compiler.is_compiling()) else _compiled_flex()
    return fn(q, k, v, score_mod=score_mod, scale=1.0)
