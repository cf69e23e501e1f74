"""Brute-force O(N^2) reference of MHSA2d: an explicit loop over every query, every key and every
relative offset, written from the paper's definition (Fig. 4), not from the implementation.

    logit(q=(i, j), k=(k, l)) = [q_ij . k_kl] + q_ij . (R_h[k - i] + R_w[l - j])     (relative)
                                               + q_ij . (E_h[k] + E_w[l])           (absolute)
    out_ij = sum_kl softmax_kl(logit) v_kl,   q = x W_q * head_dim^-0.5,  k = x W_k,  v = x W_v
"""

from __future__ import annotations

import torch

from botnet.layers import MHSA2d, resize_pos_table


def mhsa_reference(m: MHSA2d, x: torch.Tensor) -> torch.Tensor:
    """x: (B, C, H, W) -> (B, C, H, W), differentiable w.r.t. x and the parameters of ``m``."""
    b, c, h, w = x.shape
    nh, d = m.num_heads, m.head_dim
    weight = m.qkv.weight[:, :, 0, 0]  # (P*C, C) rows: [q | k | v] or [q | v]
    wq = weight[:c]
    wk = weight[c : 2 * c] if m.content else None
    wv = weight[-c:]
    tables = None
    if m.pos_enc == "relative":
        tables = (resize_pos_table(m.pos.rel_height, 2 * h - 1), resize_pos_table(m.pos.rel_width, 2 * w - 1))
    elif m.pos_enc == "absolute":
        tables = (resize_pos_table(m.pos.emb_height, h), resize_pos_table(m.pos.emb_width, w))

    out_b = []
    for bi in range(b):
        feats = x[bi]  # (C, H, W)
        heads_out = []
        for n in range(nh):
            sl = slice(n * d, (n + 1) * d)
            rows = []
            for i in range(h):
                cols = []
                for j in range(w):
                    q = (wq[sl] @ feats[:, i, j]) * d**-0.5
                    logits = []
                    values = []
                    for kk in range(h):
                        for ll in range(w):
                            logit = torch.zeros((), dtype=x.dtype)
                            if wk is not None:
                                logit = logit + q @ (wk[sl] @ feats[:, kk, ll])
                            if m.pos_enc == "relative":
                                logit = logit + q @ tables[0][kk - i + h - 1] + q @ tables[1][ll - j + w - 1]
                            elif m.pos_enc == "absolute":
                                logit = logit + q @ (tables[0][kk] + tables[1][ll])
                            logits.append(logit)
                            values.append(wv[sl] @ feats[:, kk, ll])
                    a = torch.softmax(torch.stack(logits), 0)
                    cols.append((a[:, None] * torch.stack(values)).sum(0))  # (d,)
                rows.append(torch.stack(cols, -1))  # (d, W)
            heads_out.append(torch.stack(rows, -2))  # (d, H, W)
        out_b.append(torch.cat(heads_out, 0))
    return torch.stack(out_b)


def mhsa_dense_reference(m: MHSA2d, x: torch.Tensor, block: int = 256) -> torch.Tensor:
    """The same definition as ``mhsa_reference``, vectorised for maps too large for its loops.

    For a block of queries at a time, the (c, N, d) table of R_h[k - i] + R_w[l - j] (or
    E_h[k] + E_w[l]) is gathered by explicit offsets from the paper's formula and dotted with q; no
    per-axis decomposition as in the layer. x: (B, C, H, W) -> (B, C, H, W), differentiable.
    """
    b, c, h, w = x.shape
    nh, d, n = m.num_heads, m.head_dim, h * w
    weight = m.qkv.weight[:, :, 0, 0]
    feats = x.flatten(2)  # (B, C, N)
    split = lambda wt: (wt @ feats).view(b, nh, d, n).transpose(-1, -2)  # (B, heads, N, d)
    q = split(weight[:c]) * d**-0.5
    k = split(weight[c : 2 * c]) if m.content else None
    v = split(weight[-c:])
    ii, jj = torch.div(torch.arange(n), w, rounding_mode="floor"), torch.arange(n) % w  # (row, col) of each token
    if m.pos_enc == "relative":
        th, tw = resize_pos_table(m.pos.rel_height, 2 * h - 1), resize_pos_table(m.pos.rel_width, 2 * w - 1)
    elif m.pos_enc == "absolute":
        th, tw = resize_pos_table(m.pos.emb_height, h), resize_pos_table(m.pos.emb_width, w)
    outs = []
    for s in range(0, n, block):
        e = min(s + block, n)
        logits = torch.zeros(b, nh, e - s, n, dtype=x.dtype)
        if k is not None:
            logits = logits + q[:, :, s:e] @ k.transpose(-1, -2)
        if m.pos_enc == "relative":  # table rows of the offsets (k - i, l - j) for queries s:e, keys 0:N
            table = th[ii[None, :] - ii[s:e, None] + h - 1] + tw[jj[None, :] - jj[s:e, None] + w - 1]
        elif m.pos_enc == "absolute":
            table = (th[ii] + tw[jj])[None].expand(e - s, n, d)
        if m.pos_enc != "none":
            logits = logits + torch.einsum("bhqd,qkd->bhqk", q[:, :, s:e], table)
        outs.append(torch.softmax(logits, -1) @ v)
    out = torch.cat(outs, 2)  # (B, heads, N, d)
    return out.transpose(-1, -2).reshape(b, c, h, w)
