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
