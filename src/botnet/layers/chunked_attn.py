"""Exact attention with split 2D position logits, computed a block of queries at a time.

The ``chunked`` kernel of ``MHSA2d``. For G = batch x heads attention problems over N = H*W
tokens it computes, for each block of c queries,

    S = q_c k^T + row[c, key row] + col[c, key column]     (G, c, N), one buffer
    P = softmax(S) over the keys, in float32                 (in place on the CPU)
    out_c = P v

so the largest temporary is (G, c, N) instead of (G, N, N). The position logits are added as the
``C`` operand of one ``baddbmm`` (the GEMM reads them; no separate pass over S). The backward
recomputes S and P block by block from q, k and the per-axis logits (flash-attention style) and
uses ``_softmax_backward_data`` for dS = P * (dP - sum(dP * P)). When the whole attention is small
(``save_bytes``), P is kept from the forward instead and nothing is recomputed.

q arrives as (G, d, N) and k, v as one tensor kv of shape (G, P, d, N) (P = 2 for [k, v], 1 for
[v] alone), channel-major as the 1x1 projection writes them; every matmul reads them through
strided views, so nothing is transposed into a copy. (q is separate because the position logits
are computed from it outside: autograd then adds two q-sized gradients instead of scattering into
a zero-filled copy of the whole projection.) The output is (G, d_v, N), which is (B, C, H, W) as
a view.

Exact: the same sums as the ``reference`` kernel in another order (tests/layers/test_mhsa.py
checks outputs and gradients against the brute-force reference, with blocks forced small).
Inputs in float16/bfloat16 are computed in float32 and the output cast back.
"""

from __future__ import annotations

import torch

__all__ = ["chunked_attention", "CHUNK_BYTES", "SAVE_BYTES"]

CHUNK_BYTES = 16 << 20  # one (G, c, N) block: fast on our 2-core CPU (8-32 MiB measured slower at 1x64^2)
SAVE_BYTES = 64 << 20  # keep P for the backward when the whole (G, N, N) attention is at most this


def _softmax_(s: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis, in place on the CPU (the kernel reads each row before writing it).

    Only a contiguous buffer is overwritten: the out= kernel assumes its rows are dense, and on a
    permuted buffer it wrote rows over rows it had not read yet (wrong numbers on H x 1 maps)."""
    if s.device.type == "cpu" and s.is_contiguous():
        return torch.ops.aten._softmax.out(s, -1, False, out=s)
    return torch.softmax(s, -1)


def _softmax_backward_(dp: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """dS = P * (dP - sum(dP * P)), written over dP on the CPU (dense buffers only, as ``_softmax_``)."""
    if dp.device.type == "cpu" and dp.is_contiguous() and p.is_contiguous():
        return torch.ops.aten._softmax_backward_data.out(dp, p, -1, p.dtype, grad_input=dp)
    return torch._softmax_backward_data(dp, p, -1, p.dtype)


def _logits(q, kv, lh, lw, has_k: bool, s: int, e: int) -> torch.Tensor:
    """Logits of queries s:e over all keys: (G, e - s, N), a contiguous buffer."""
    g, _, n = q.shape
    qc = q[:, :, s:e].transpose(1, 2)  # (G, c, d), a strided view
    if lh is not None:
        # Written into a buffer allocated row-major: a plain broadcast add takes its layout from
        # its inputs, and with W = 1 (lw of shape (G, N, 1)) that layout came out permuted.
        logits = q.new_empty((g, e - s, lh.shape[-1], lw.shape[-1]))
        torch.add(lh[:, s:e, :, None], lw[:, s:e, None, :], out=logits)
        logits = logits.view(g, e - s, n)
        return logits.baddbmm_(qc, kv[:, 0]) if has_k else logits
    return torch.bmm(qc, kv[:, 0])


def _block_rows(g: int, n: int, elem: int, chunk_bytes: int) -> int:
    return max(1, min(n, chunk_bytes // max(1, g * n * elem)))


class _ChunkedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, kv, lh, lw, has_k: bool, chunk_bytes: int, save_bytes: int):
        g, _, n = q.shape
        elem = q.element_size()
        rows = _block_rows(g, n, elem, chunk_bytes)
        outs, p = [], None
        v = kv[:, -1]  # (G, dv, N)
        # no_grad: what eager autograd.Function.forward runs under anyway; torch 2.4's dynamo traced
        # this body with grad enabled, where the out= writes below are refused for inputs needing grad
        with torch.no_grad():
            for s in range(0, n, rows):
                e = min(s + rows, n)
                p = _softmax_(_logits(q, kv, lh, lw, has_k, s, e))
                outs.append(torch.bmm(v, p.transpose(1, 2)))  # (G, dv, c)
            out = outs[0] if len(outs) == 1 else torch.cat(outs, 2)
        keep_p = rows >= n and g * n * n * elem <= save_bytes
        ctx.has_k, ctx.rows = has_k, rows
        ctx.has_pos = lh is not None
        if keep_p:
            ctx.save_for_backward(q, kv, lh, lw, p)
        else:
            ctx.save_for_backward(q, kv, lh, lw)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        saved = ctx.saved_tensors
        q, kv, lh, lw = saved[:4]
        kept = saved[4] if len(saved) == 5 else None
        has_k, rows = ctx.has_k, ctx.rows
        g, d, n = q.shape
        grad_out = grad_out.contiguous()  # (G, dv, N)
        v = kv[:, -1]
        dv = torch.zeros_like(v)
        dk = torch.zeros_like(kv[:, 0]) if has_k else None
        dqs, dhs, dws = [], [], []
        for s in range(0, n, rows):
            e = min(s + rows, n)
            p = kept if kept is not None else _softmax_(_logits(q, kv, lh, lw, has_k, s, e))  # (G, c, N)
            go = grad_out[:, :, s:e]  # (G, dv, c)
            dv.baddbmm_(go, p)
            ds = _softmax_backward_(torch.bmm(go.transpose(1, 2), v), p)  # (G, c, N)
            if ctx.has_pos:
                d4 = ds.view(g, e - s, lh.shape[-1], lw.shape[-1])
                dhs.append(d4.sum(-1))
                dws.append(d4.sum(-2))
            if has_k:
                dqs.append(torch.bmm(kv[:, 0], ds.transpose(1, 2)))  # (G, d, c)
                dk.baddbmm_(q[:, :, s:e], ds)
        dq = None
        if has_k:
            dq = dqs[0] if len(dqs) == 1 else torch.cat(dqs, 2)
        dkv = torch.stack([dk, dv], 1) if has_k else dv[:, None]
        dlh = dlw = None
        if ctx.has_pos:
            dlh = dhs[0] if len(dhs) == 1 else torch.cat(dhs, 1)
            dlw = dws[0] if len(dws) == 1 else torch.cat(dws, 1)
        return dq, dkv, dlh, dlw, None, None, None


def chunked_attention(q: torch.Tensor, kv: torch.Tensor, row: torch.Tensor | None, col: torch.Tensor | None,
                      has_k: bool = True,
                      chunk_bytes: int | None = None, save_bytes: int | None = None) -> torch.Tensor:
    """softmax(q k^T + row + col) v, a block of queries at a time.

    Args:
        q: (G, d, N), already scaled. G = batch x heads, N = H*W row-major.
        kv: (G, 2, d, N) k and v, or (G, 1, d_v, N) v alone with ``has_k=False`` (position
            logits only).
        row: (G, N, H) logits of each query over the key rows, or None (no position logits).
        col: (G, N, W) logits over the key columns (None with ``row``).
        chunk_bytes: size of one (G, c, N) block of logits, c = chunk_bytes // (G * N * 4) queries
            (default: the module's CHUNK_BYTES).
        save_bytes: keep P for the backward when the whole (G, N, N) attention fits in this
            (default: SAVE_BYTES).
    Returns:
        (G, d_v, N), in q's dtype.
    """
    if (row is None) != (col is None):
        raise ValueError("chunked_attention takes both position logits (row and col) or neither")
    if row is None and not has_k:
        raise ValueError("chunked_attention needs content logits (has_k) or position logits")
    if row is not None and row.shape[-1] * col.shape[-1] != q.shape[-1]:
        raise ValueError(f"row ({row.shape[-1]}) x col ({col.shape[-1]}) logits must cover the {q.shape[-1]} keys")
    if kv.shape[1] != (2 if has_k else 1):
        raise ValueError(f"kv must hold {'k and v' if has_k else 'v'} on axis 1, got {kv.shape[1]} tensors")
    dtype = q.dtype
    work = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(q.device.type, enabled=False):
        args = [t if t is None else t.to(work) for t in (q, kv, row, col)]
        out = _ChunkedAttention.apply(*args, has_k, CHUNK_BYTES if chunk_bytes is None else chunk_bytes,
                                      SAVE_BYTES if save_bytes is None else save_bytes)
    return out.to(dtype)
