"""The MHSA layer alone: ours (every kernel) against timm's ``BottleneckAttn`` and lucidrains'
``bottleneck_transformer_pytorch`` ``Attention``, with matched weights.

BoTNet: "Bottleneck Transformers for Visual Recognition", Srinivas et al., arXiv:2101.11605.

Same math. All three compute softmax(q k^T + q R_h[k - i] + q R_w[l - j]) v over a (H, W) map, with
one bias-free 1x1 conv giving [q | k | v] and each of them split into contiguous per-head groups, and
per-axis relative tables of shape (2L-1, head_dim) indexed by key - query + L - 1 (timm and lucidrains
both use the gist's ``rel_to_abs`` pad-and-reshape, which gives that index; rows are height, columns
width in all three). So ``qkv.weight`` and both tables copy across unchanged, with one difference in
scale:

- ours and lucidrains scale q by head_dim^-0.5 before both the content and the position logits;
- timm's ``BottleneckAttn(scale_pos_embed=True)`` computes (q k^T + q r^T) * head_dim^-0.5: the same;
- timm's default ``scale_pos_embed=False`` computes (q k^T) * head_dim^-0.5 + q r^T, the position
  logits from the unscaled q. That is our function with tables head_dim^-0.5 times ours; copied
  unscaled, it differs (``check_same_math`` reports by how much).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from botnet.layers import KERNELS, MHSA2d, use_kernel
from botnet.layers.fused_attn import axis_onehots  # the kernel's own one-hot helper, to time the same math
from .timing import MIB, interleaved, peak_memory, summarize
from .spawn import run_in_subprocess

__all__ = ["DIM", "HEADS", "CASES", "QUICK_CASES", "IMPLS", "MODES", "timm_like", "lucidrains_like",
           "build_impls", "check_same_math", "matmul_floor", "bench_mhsa", "memory_job"]

DIM, HEADS = 512, 4  # c5 of BoT50: 512 channels, 4 heads of 128
CASES = ((8, 14), (1, 32), (1, 64))  # (batch, side): BoT50 c5 at 224 (batch 8), at 512 and 1024 (batch 1)
QUICK_CASES = ((8, 14),)
OURS = tuple(f"ours:{k}" for k in KERNELS)  # ours:auto, ours:reference, ours:sdpa_bias, ours:sdpa_fold
PEERS = ("timm", "lucidrains")
CANDIDATES = ("candidate:fold_padv",)  # measured for the record, not a kernel of MHSA2d (see FoldPadV)
IMPLS = OURS + PEERS + CANDIDATES
MODES = ("train", "infer")  # train: forward + backward (input and weight gradients); infer: forward
FLOOR = "matmul floor"
SOFTMAX_FLOOR = "matmul+softmax floor"
FLOORS = (FLOOR, SOFTMAX_FLOOR)
MIN_SECONDS = 8.0  # cheap cases repeat (interleaved) until they have taken this long, up to 4 x repeats


def case_label(batch: int, side: int) -> str:
    return f"{batch}×{side}²"


def timm_like(ours: MHSA2d, scale_pos_embed: bool = True, adjust: bool = True) -> nn.Module:
    """timm's ``BottleneckAttn`` with ``ours``'s weights (relative encoding, content on).

    With ``scale_pos_embed=False`` (timm's default) and ``adjust``, the tables are multiplied by
    head_dim^-0.5 so that the layer still computes ours; ``adjust=False`` copies them as they are.
    """
    from timm.layers.bottleneck_attn import BottleneckAttn

    h, w = ours.pos.feat_size
    m = BottleneckAttn(ours.dim, feat_size=(h, w), num_heads=ours.num_heads, dim_head=ours.head_dim,
                       scale_pos_embed=scale_pos_embed)
    s = ours.scale if (adjust and not scale_pos_embed) else 1.0
    with torch.no_grad():
        m.qkv.weight.copy_(ours.qkv.weight)
        m.pos_embed.height_rel.copy_(ours.pos.rel_height * s)
        m.pos_embed.width_rel.copy_(ours.pos.rel_width * s)
    return m


def lucidrains_like(ours: MHSA2d) -> nn.Module:
    """lucidrains' ``Attention(rel_pos_emb=True)`` with ``ours``'s weights (copied unchanged)."""
    from bottleneck_transformer_pytorch.bottleneck_transformer_pytorch import Attention

    h, w = ours.pos.feat_size
    m = Attention(dim=ours.dim, fmap_size=(h, w), heads=ours.num_heads, dim_head=ours.head_dim, rel_pos_emb=True)
    with torch.no_grad():
        m.to_qkv.weight.copy_(ours.qkv.weight)
        m.pos_emb.rel_height.copy_(ours.pos.rel_height)
        m.pos_emb.rel_width.copy_(ours.pos.rel_width)
    return m


class KernelPinned(nn.Module):
    """``MHSA2d`` run with one kernel (``use_kernel``) whatever its own setting."""

    def __init__(self, mhsa: MHSA2d, kernel: str):
        super().__init__()
        self.mhsa, self.kernel = mhsa, kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with use_kernel(self.kernel):
            return self.mhsa(x)


class FoldPadV(nn.Module):
    """A candidate kernel, not part of ``MHSA2d``: ``sdpa_fold`` with v zero-padded to the width of
    the folded q and k (head_dim + H + W), and the padding sliced off the output.

    torch's flash-attention kernels need q, k and v of one head size. ``sdpa_fold`` gives q and k
    head_dim + H + W columns and v head_dim, so on CPU ``scaled_dot_product_attention`` falls back
    to its math path, which stores the N x N attention like ``reference`` does. Zero columns of v
    add nothing to the kept columns of the output, so this is exact; it lets SDPA take the flash
    kernel (O(N) memory) at the price of P v on the wider v.
    """

    def __init__(self, mhsa: MHSA2d):
        super().__init__()
        if mhsa.pos_enc != "relative" or not mhsa.content:
            raise ValueError("FoldPadV covers the paper's setting only (relative positions, content on)")
        self.mhsa = mhsa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mhsa
        b, c, h, w = x.shape
        q, k, v = m.split_heads(x)
        row, col = m.pos.axis_logits(q, (h, w))
        oh_h, oh_w = axis_onehots(h, w, q.device, q.dtype)
        qs = torch.cat([q, row, col], -1)
        ks = torch.cat([k, oh_h.expand(b, m.num_heads, -1, -1), oh_w.expand(b, m.num_heads, -1, -1)], -1)
        vp = F.pad(v, (0, qs.shape[-1] - v.shape[-1]))
        out = F.scaled_dot_product_attention(qs, ks, vp, scale=1.0)[..., : v.shape[-1]]
        return out.transpose(-1, -2).reshape(b, c, h, w)


def build_impls(names: tuple[str, ...], size: tuple[int, int], dim: int = DIM, heads: int = HEADS,
                seed: int = 0) -> dict[str, nn.Module]:
    """The implementations ``names`` (from IMPLS) with one set of weights (ours, seeded)."""
    torch.manual_seed(seed)
    ours = MHSA2d(dim, heads, feat_size=size)
    out = {}
    for name in names:
        if name.startswith("ours:"):
            out[name] = KernelPinned(ours, name.split(":", 1)[1])
        elif name == "timm":
            out[name] = timm_like(ours)
        elif name == "lucidrains":
            out[name] = lucidrains_like(ours)
        elif name == "candidate:fold_padv":
            out[name] = FoldPadV(ours)
        else:
            raise ValueError(f"unknown MHSA implementation {name!r}; expected one of {IMPLS}")
    return out


def _out_and_grad(m: nn.Module, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xi = x.clone().requires_grad_(True)
    out = m(xi)
    out.backward(g)
    return out.detach(), xi.grad


def check_same_math(dim: int = 16, heads: int = 2, size: tuple[int, int] = (3, 5), batch: int = 2,
                    seed: int = 0, tol: float = 1e-4) -> dict[str, dict[str, float]]:
    """Ours against the two peers with matched weights, float32 on CPU.

    Returns the largest absolute difference of the outputs and of the input gradients,
    {peer: {"out": ..., "grad": ...}}, for "timm" (scale_pos_embed=True, tables copied),
    "timm default adjusted" (scale_pos_embed=False, tables x head_dim^-0.5), "lucidrains",
    "timm default unadjusted" (tables copied as they are: a different function, not asserted) and
    "candidate fold_padv" (``FoldPadV``). Raises AssertionError when one of them but the unadjusted
    timm differs by more than ``tol``.
    """
    torch.manual_seed(seed)
    ours = MHSA2d(dim, heads, feat_size=size, kernel="reference")
    x = torch.randn(batch, dim, *size)
    g = torch.randn(batch, dim, *size)
    peers = {
        "timm": timm_like(ours),
        "timm default adjusted": timm_like(ours, scale_pos_embed=False),
        "lucidrains": lucidrains_like(ours),
        "timm default unadjusted": timm_like(ours, scale_pos_embed=False, adjust=False),
        "candidate fold_padv": FoldPadV(ours),
    }
    ref_out, ref_grad = _out_and_grad(ours, x, g)
    diffs = {}
    for name, m in peers.items():
        out, grad = _out_and_grad(m, x, g)
        diffs[name] = {"out": (out - ref_out).abs().max().item(), "grad": (grad - ref_grad).abs().max().item()}
    bad = {n: d for n, d in diffs.items() if "unadjusted" not in n and max(d.values()) > tol}
    if bad:
        raise AssertionError(f"MHSA implementations disagree beyond {tol}: {bad}")
    return diffs


def _resolved(m: nn.Module, device: torch.device) -> str | None:
    """The kernel an ``ours:*`` implementation runs on ``device`` (auto resolved); None for peers."""
    if not isinstance(m, KernelPinned):
        return None
    with use_kernel(m.kernel):
        return m.mhsa.resolved_kernel(device)


def _amp(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def make_calls(m: nn.Module, x: torch.Tensor, g: torch.Tensor, device: torch.device) -> dict[str, Callable[[], None]]:
    """{"train": forward + backward, "infer": forward under inference_mode}; bf16 autocast on CUDA.
    Gradients are dropped after each call, so every call allocates them afresh."""

    def train():
        with _amp(device):
            out = m(x)
        out.backward(g.to(out.dtype))
        m.zero_grad(set_to_none=True)
        x.grad = None

    def infer():
        with torch.inference_mode(), _amp(device):
            m(x)

    return {"train": train, "infer": infer}


def _inputs(batch: int, side: int, dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, dim, side, side, generator=gen).to(device).requires_grad_(True)
    g = torch.randn(batch, dim, side, side, generator=gen).to(device)
    return x, g


def matmul_floor(batch: int, side: int, dim: int = DIM, heads: int = HEADS, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> tuple[dict[str, dict[str, Callable[[], None]]], dict[str, float]]:
    """Bare attention work of the shapes every exact implementation computes, two floors:

    - "matmul floor": the matrix products alone, as plain ``torch.matmul`` calls. Forward: q k^T
      and P v; backward adds dO v^T, P^T dO, dS k and dS^T q (N = side^2 tokens, batch * heads
      products of N x d by d x N or N x N by N x d);
    - "matmul+softmax floor": the same plus the softmax and its backward over the N x N logits,
      the least a kernel that stores the attention matrix does (no position terms, no reshapes).

    Returns ({floor: {mode: call}}, {mode: GMAC of the products}).
    """
    n, d, bh = side * side, dim // heads, batch * heads
    gen = torch.Generator().manual_seed(2)
    q, k, v, do = (torch.randn(bh, n, d, generator=gen).to(device, dtype) for _ in range(4))
    p = torch.randn(bh, n, n, generator=gen).to(device, dtype)  # stands for P and dS alike

    def mm_infer():
        q @ k.mT
        p @ v

    def mm_train():
        q @ k.mT
        p @ v
        do @ v.mT
        p.mT @ do
        p @ k
        p.mT @ q

    def sm_infer():
        torch.softmax(q @ k.mT, -1) @ v

    def sm_train():
        pr = torch.softmax(q @ k.mT, -1)
        pr @ v
        dp = do @ v.mT
        pr.mT @ do
        ds = torch._softmax_backward_data(dp, pr, -1, pr.dtype)
        ds @ k
        ds.mT @ q

    unit = bh * n * n * d / 1e9
    calls = {FLOOR: {"train": mm_train, "infer": mm_infer}, SOFTMAX_FLOOR: {"train": sm_train, "infer": sm_infer}}
    return calls, {"train": 6 * unit, "infer": 2 * unit}


def memory_job(job: dict) -> dict:
    """Peak memory of one implementation at one case, in this (fresh) process: {mode: bytes}."""
    device = torch.device(job.get("device", "cpu"))
    dim, heads, batch, side = job.get("dim", DIM), job.get("heads", HEADS), job["batch"], job["side"]
    m = build_impls((job["impl"],), (side, side), dim, heads)[job["impl"]].to(device)
    x, g = _inputs(batch, side, dim, device)
    calls = make_calls(m, x, g, device)
    modes = job.get("modes", MODES)
    for mode in modes:
        calls[mode]()  # warm-up: one-time allocations go into the baseline
    out, method = {}, None
    for mode in modes:
        out[mode], method = peak_memory(calls[mode], device)
    return {"peak_bytes": out, "method": method}


def bench_mhsa(device: torch.device, repeats: int = 5, warmup: int = 2, quick: bool = False,
               log: Callable[[str], None] = print) -> dict:
    """Time and measure every implementation at every case; returns {"rows", "same_math", ...}."""
    device = torch.device(device)
    cases = QUICK_CASES if quick else CASES
    same = check_same_math()
    log(f"same-math check (16 channels, 2 heads, 3x5 map): {same}")
    rows, agreement, memory_method = [], {}, None
    mem: dict[tuple[str, str], dict] = {}
    for batch, side in cases:
        label = case_label(batch, side)
        impls = {n: m.to(device) for n, m in build_impls(IMPLS, (side, side)).items()}
        x, g = _inputs(batch, side, DIM, device)
        if device.type == "cpu":  # the timed modules themselves compute the same function
            with torch.no_grad():
                ref = impls["ours:reference"](x)
                agreement[label] = {n: (m(x) - ref).abs().max().item() for n, m in impls.items()}
            bad = {n: v for n, v in agreement[label].items() if v > 1e-4 * max(1.0, ref.abs().max().item())}
            if bad:
                raise AssertionError(f"at {label} the implementations disagree: {bad}")
        calls = {n: make_calls(m, x, g, device) for n, m in impls.items()}
        floor, gmac = matmul_floor(batch, side, DIM, HEADS, device,
                                   torch.bfloat16 if device.type == "cuda" else torch.float32)
        for mode in MODES:
            log(f"mhsa {label} {mode}: timing {len(calls)} implementations + {len(FLOORS)} floors, "
                f"{warmup} warm-up + at least {repeats} interleaved runs")
            fns = {n: c[mode] for n, c in calls.items()}
            fns.update({f: floor[f][mode] for f in FLOORS})
            samples = interleaved(fns, repeats, warmup, device, min_seconds=0.0 if quick else MIN_SECONDS)
            stats = {n: summarize(s) for n, s in samples.items()}
            if device.type == "cuda":
                for n, c in calls.items():
                    mem[(label, n)] = mem.get((label, n), {"peak_bytes": {}})
                    mem[(label, n)]["peak_bytes"][mode], memory_method = peak_memory(c[mode], device)
            fl, fs = stats[FLOOR].median_ms, stats[SOFTMAX_FLOOR].median_ms
            for n in IMPLS:
                st = stats[n]
                rows.append({
                    "part": "mhsa", "case": label, "batch": batch, "side": side, "channels": DIM, "heads": HEADS,
                    "mode": mode, "impl": n,
                    "kernel": _resolved(impls[n], device),
                    "median_ms": st.median_ms, "min_ms": st.min_ms, "max_ms": st.max_ms, "runs": st.runs,
                    "speedup_vs_timm": stats["timm"].median_ms / st.median_ms,
                    "speedup_vs_lucidrains": stats["lucidrains"].median_ms / st.median_ms,
                    "matmul_share": fl / st.median_ms, "softmax_floor_share": fs / st.median_ms, "peak_mib": None,
                })
            for f in FLOORS:
                st = stats[f]
                rows.append({"part": "mhsa", "case": label, "batch": batch, "side": side, "channels": DIM,
                             "heads": HEADS, "mode": mode, "impl": f, "kernel": None, "median_ms": st.median_ms,
                             "min_ms": st.min_ms, "max_ms": st.max_ms, "runs": st.runs, "gmac": gmac[mode],
                             "gflops": 2 * gmac[mode] / (st.median_ms / 1e3), "peak_mib": None})
        del impls, calls, floor, x, g
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if device.type == "cpu":
        jobs = [{"kind": "mhsa", "impl": n, "batch": b, "side": s, "device": "cpu", "modes": list(MODES)}
                for b, s in cases for n in IMPLS]
        log(f"mhsa: peak memory, {len(jobs)} (implementation, case) pairs, "
            f"{'one process' if quick else 'a fresh process each'}")
        for job, res in zip(jobs, run_in_subprocess(jobs, fresh=not quick)):
            mem[(case_label(job["batch"], job["side"]), job["impl"])] = res
            memory_method = res.get("method", memory_method)
    for r in rows:
        res = mem.get((r["case"], r["impl"]))
        if res is not None and "peak_bytes" in res:
            r["peak_mib"] = res["peak_bytes"][r["mode"]] / MIB
        elif res is not None:
            r["error"] = res.get("error")
    return {"part": "mhsa", "rows": rows, "same_math": same, "case_agreement": agreement,
            "memory_method": memory_method, "repeats": repeats, "warmup": warmup, "quick": quick}
