"""Whole models against timm on the same weights: timm's BoTNet family (``timm/models/byoanet.py``)
built by timm and by us (``botnet.models.timm_botnets``), ours loaded from timm's state dict.

Part ``vs-timm`` (issue 22): for ``botnet26t_256``, ``sebotnet33ts_256`` and ``eca_botnext26ts_256``
at 256, inference (``torch.inference_mode``, eval) at batch 1 and 16, and a training step
(forward + cross-entropy + backward + SGD step, train mode) at batch 8, in float32 eager on CPU
(bf16 autocast on CUDA, where ``gpu_check.py`` also compiles them). Every weight of timm's model,
BatchNorm statistics included, is perturbed before ours loads it, so the agreement check compares
two non-trivial functions. Rows, timed interleaved in one process (suite.timing.interleaved):

- ``timm``: ``timm.create_model(name)``; ``timm, channels_last``: its weights in channels_last;
- ``ours``: ``botnet.models.create_model(name)`` with ``kernel="auto"``;
- ``ours, BN folded + channels_last`` (inference only): ``botnet.models.fold.optimize_for_inference``,
  every convolution followed by its BatchNorm merged into one convolution with a bias, the weights
  in channels_last (NHWC);
- ``timm, channels_last`` and ``ours, channels_last`` (training): the same models with their
  weights in channels_last, so what the layout alone gives either model is on the table too. The
  targets compare ours with timm as timm builds it (NCHW).

Each mode also gets a torch.profiler pass (a few calls of timm and of ours, after the timing):
the share of CPU time in convolutions (forward and backward), which bounds what a change outside
the convolutions can gain when both models run the same convolutions.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .timing import interleaved, summarize

__all__ = ["MODELS", "MODES", "TARGET", "perturbed_state_dict", "load_pair", "agreement", "make_call",
           "conv_profile", "bench_vs_timm", "render_vs_timm", "vs_timm_targets", "bench_compiled"]

MODELS = ("botnet26t_256", "sebotnet33ts_256", "eca_botnext26ts_256")
MODES = (("infer", 1), ("infer", 16), ("train", 8))
QUICK_MODES = (("infer", 1), ("train", 2))
TARGET = 1.15
CONV_OPS = ("conv",)  # profiler op names containing this: aten::conv2d, mkldnn_convolution, convolution_backward, ...


def perturbed_state_dict(model: nn.Module, seed: int = 0, scale: float = 0.1) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every float tensor moved by Gaussian noise of ``scale`` times its
    standard deviation (at least 0.1 of it): weights, biases, position tables and BatchNorm's running
    mean; running variances are made positive (|v| + 0.5). Integer buffers are copied."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            out[k] = v.clone()
            continue
        spread = v.float().std() if v.numel() > 1 else v.float().abs()
        noise = torch.randn(v.shape, generator=gen) * scale * float(spread.clamp_min(0.1))
        w = v + noise.to(v.dtype)
        out[k] = w.abs() + 0.5 if k.endswith("running_var") else w
    return out


def load_pair(name: str, seed: int = 0, size: int = 256) -> tuple[nn.Module, nn.Module]:
    """(timm's model, ours) of ``name`` built for ``size``×``size`` inputs, both holding timm's randomly built weights perturbed by
    ``perturbed_state_dict`` (ours through ``botnet.models.convert``, strict)."""
    import timm

    from botnet.models import create_model
    from botnet.models.convert import convert_timm_state_dict

    torch.manual_seed(seed)
    theirs = timm.create_model(name, pretrained=False, img_size=size)
    sd = perturbed_state_dict(theirs, seed)
    theirs.load_state_dict(sd)
    ours = create_model(name, img_size=size)
    ours.load_state_dict(convert_timm_state_dict(sd), strict=True)
    return theirs, ours


def agreement(models: dict[str, nn.Module], size: int = 256, batch: int = 2, seed: int = 0,
              device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Largest |logit difference| of each model from the first, relative to the largest |logit|
    of the first (float32, eval mode, inference)."""
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(device)
    outs = {}
    with torch.inference_mode():
        for n, m in models.items():
            outs[n] = m.eval()(x).float()
    first = next(iter(outs.values()))
    scale = float(first.abs().max())
    return {n: float((o - first).abs().max()) / scale for n, o in list(outs.items())[1:]}


def make_call(model: nn.Module, mode: str, batch: int, device: torch.device, size: int = 256,
              amp: bool = False) -> Callable[[], None]:
    """One inference call (eval, inference_mode) or one training step (train mode, forward +
    cross-entropy + backward + SGD(momentum 0.9) step) of ``model`` on a fixed random batch
    (batch, 3, size, size); bf16 autocast when ``amp``."""
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    if mode == "infer":
        def infer():
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                model.eval()(x)
        return infer
    y = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)

    def train():
        model.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return train


def conv_profile(call: Callable[[], None], calls: int = 1, top: int = 4) -> dict:
    """torch.profiler over ``calls`` calls: total self CPU ms per call, the convolutions' share of it,
    and the ``top`` ops by self CPU time [(name, ms per call)]."""
    from torch.profiler import ProfilerActivity, profile

    call()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            call()
    ops = [(e.key, e.self_cpu_time_total / 1e3 / calls) for e in prof.key_averages()]
    total = sum(ms for _, ms in ops)
    conv = sum(ms for k, ms in ops if any(c in k.lower() for c in CONV_OPS))
    ops.sort(key=lambda o: -o[1])
    return {"total_ms": total, "conv_ms": conv, "conv_share": conv / total if total else None, "top": ops[:top]}


def _impls(name: str, mode: str, size: int) -> dict[str, nn.Module]:
    """The rows of one (model, mode): timm and ours as built, each also in channels_last; for
    inference ours through ``optimize_for_inference`` (BN folded, channels_last)."""
    from botnet.models.fold import optimize_for_inference

    theirs, ours = load_pair(name, size=size)
    cl = torch.channels_last
    impls = {"timm": theirs, "timm, channels_last": copy.deepcopy(theirs).to(memory_format=cl), "ours": ours}
    if mode == "infer":
        impls["ours, BN folded + channels_last"] = optimize_for_inference(ours)
    else:
        impls["ours, channels_last"] = copy.deepcopy(ours).to(memory_format=cl)
    return impls


def bench_vs_timm(device: torch.device, repeats: int = 5, warmup: int = 1, quick: bool = False,
                  log: Callable[[str], None] = print, models: tuple[str, ...] = MODELS) -> dict:
    """Every (model, mode): agreement, interleaved timings, timm ÷ ours, and a conv profile of timm and ours."""
    device = torch.device(device)
    amp = device.type == "cuda"
    modes = QUICK_MODES if quick else MODES
    size = 128 if quick else 256
    rows = []
    for name in models[:1] if quick else models:
        for mode, batch in modes:
            impls = {n: m.to(device) for n, m in _impls(name, mode, size).items()}
            agree = agreement(impls, size, device=device)
            log(f"vs-timm: {name} {mode} batch {batch}: {warmup} warm-up + {repeats} interleaved runs")
            calls = {n: make_call(m, mode, batch, device, size, amp) for n, m in impls.items()}
            samples = interleaved(calls, repeats, max(warmup, 1), device)
            prof = {n: conv_profile(calls[n]) for n in ("timm", "ours")} if device.type == "cpu" else {}
            timm_ms = summarize(samples["timm"]).median_ms
            for n, s in samples.items():
                st = summarize(s)
                rows.append({"model": name, "mode": mode, "batch": batch, "impl": n, "median_ms": st.median_ms,
                             "min_ms": st.min_ms, "max_ms": st.max_ms, "runs": st.runs,
                             "speedup": timm_ms / st.median_ms, "max_rel_diff": agree.get(n, 0.0),
                             "profile": prof.get(n)})
    return {"part": "vs-timm", "rows": rows, "size": size, "repeats": repeats, "warmup": warmup, "quick": quick,
            "target": TARGET}


def _best_ours(res: dict, name: str, mode: str, batch: int) -> dict | None:
    ours = [r for r in res["rows"] if r["model"] == name and r["mode"] == mode and r["batch"] == batch
            and r["impl"].startswith("ours")]
    return max(ours, key=lambda r: r["speedup"]) if ours else None


def vs_timm_targets(res: dict) -> list[dict]:
    """One target per (model, mode): the faster of ours' rows at least TARGET x timm's speed; where it
    is not met, the bound the convolutions set (timm's time over ours' convolution time)."""
    out = []
    for key in dict.fromkeys((r["model"], r["mode"], r["batch"]) for r in res["rows"]):
        best = _best_ours(res, *key)
        ok = best["speedup"] >= res["target"]
        rows = {r["impl"]: r for r in res["rows"] if (r["model"], r["mode"], r["batch"]) == key}
        detail = f"{best['impl']}: {best['speedup']:.2f}× timm ({best['median_ms']:.0f} vs {rows['timm']['median_ms']:.0f} ms)"
        tcl = rows.get("timm, channels_last")
        if tcl:
            detail += f", {tcl['median_ms'] / best['median_ms']:.2f}× timm in channels_last"
        prof = {n: r["profile"] for n, r in rows.items()}
        p_t, p_o = prof.get("timm"), prof.get("ours")
        if p_t and p_o:
            detail += (f"; convolutions are {100 * p_t['conv_share']:.0f}% of timm's profiled CPU time and "
                       f"{100 * p_o['conv_share']:.0f}% of ours ({p_o['conv_ms']:.0f} of {p_o['total_ms']:.0f} ms)")
            if not ok:
                detail += (f"; with everything but the convolutions free, ours could be at most "
                           f"{p_t['total_ms'] / p_o['conv_ms']:.2f}× timm")
        out.append({"target": f"{key[0]} {key[1]} batch {key[2]} ≥ {res['target']:.2f}× timm", "met": ok,
                    "detail": detail})
    return out


def render_vs_timm(res: dict) -> list[str]:
    """The table of the part: one row per (model, mode, implementation)."""
    lines = [f"Same weights: timm's randomly built model, every float tensor perturbed (BatchNorm statistics "
             f"included), loaded by ours; inputs {res['size']}×{res['size']}. \"timm ÷ this\" is timm's median "
             f"over this row's (above 1× this row is faster). \"conv share\": convolutions' share of the self CPU "
             f"time in a torch.profiler pass of one call after one warm-up (forward and backward convolutions).", "",
             "| model | mode | batch | implementation | median ms | min–max ms | runs | timm ÷ this | "
             "max rel. diff from timm | conv share | top ops (self ms per call) |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in res["rows"]:
        p = r.get("profile")
        share = f"{100 * p['conv_share']:.0f}%" if p else ""
        top = ", ".join(f"{k} {ms:.1f}" for k, ms in p["top"]) if p else ""
        diff = "" if r["impl"] == "timm" else f"{r['max_rel_diff']:.1e}"
        lines.append(f"| {r['model']} | {r['mode']} | {r['batch']} | {r['impl']} | {r['median_ms']:.1f} | "
                     f"{r['min_ms']:.1f}–{r['max_ms']:.1f} | {r['runs']} | {r['speedup']:.2f}× | {diff} | {share} | {top} |")
    return lines


def bench_compiled(name: str, modes: tuple[tuple[str, int], ...], device: torch.device, size: int = 256,
                   repeats: int = 5, warmup: int = 2, backend: str = "inductor") -> list[dict]:
    """GPU rows of ``gpu_check.py vs-timm``: timm and ours on the same weights under bf16 autocast,
    eager and ``torch.compile(backend=backend)``, the four timed interleaved per (mode, batch).
    Each row: implementation, median / min / max ms, timm eager ÷ this, and timm ÷ ours in the same
    execution (eager or compiled); ``max_rel_diff``: ours' float32 logits against timm's."""
    theirs, ours = (m.to(device) for m in load_pair(name, size=size))
    diff = agreement({"timm": theirs, "ours": ours}, size, device=device)["ours"]
    rows = []
    for mode, batch in modes:
        calls = {}
        for label, m in (("timm", theirs), ("ours", ours)):
            calls[f"{label} eager"] = make_call(m, mode, batch, device, size, amp=True)
            calls[f"{label} compiled"] = make_call(torch.compile(m, backend=backend), mode, batch, device, size, amp=True)
        stats = {n: summarize(s) for n, s in interleaved(calls, repeats, warmup, device).items()}
        for n, st in stats.items():
            same = stats["timm " + n.split()[1]].median_ms
            rows.append({"model": name, "mode": mode, "batch": batch, "impl": n, "median_ms": st.median_ms,
                         "min_ms": st.min_ms, "max_ms": st.max_ms, "vs_timm_eager": stats["timm eager"].median_ms / st.median_ms,
                         "vs_timm_same": same / st.median_ms, "max_rel_diff": diff})
    return rows
