"""Part ``compile`` (issue 22): eager against ``torch.compile`` (inductor) inference, float32.

For botnet50 at 224 and botnet26t_256 at 256 (``botnet.models.create_model``, eval,
``torch.inference_mode``), at batch 1 and 16, timed interleaved in one process:

- ``eager``: the model as built (NCHW); ``eager, channels_last``: weights and input in channels_last;
- ``static``: ``botnet.compiling.compile_model(model, "static")`` (``dynamic=False``), channels_last,
  one graph per batch size;

Compile times are the wall time of the first call of each compiled model at each batch (the graph
is traced and compiled then), with inductor's caches off (``cold_caches``). Two more compiles of the first model run in a child process
(``suite.worker``, job kind "compile") with a time limit, so a compile that does not finish is
reported as such: ``dynamic=True`` at batch 2, and ``compile_model(model, "batch")`` (static shapes
with the batch axis marked dynamic, channels_last) at batch 16 and then 15, which must reuse the
graph. A torch.profiler pass over the eager channels_last model at batch 16 gives the
convolutions' share of its CPU time: inductor leaves convolutions to the same oneDNN kernels, so
only the rest (BatchNorm, activations, attention glue) can get faster.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import torch

from .timing import interleaved, summarize

__all__ = ["MODELS", "TARGET", "DYNAMIC_LIMIT_S", "bench_compile", "compile_job", "render_compile", "compile_targets"]

MODELS = (("botnet50", 224), ("botnet26t_256", 256))
QUICK_MODELS = (("botnet_tiny", 32),)
BATCHES = (1, 16)
QUICK_BATCHES = (1, 4)
TARGET = 1.3
DYNAMIC_LIMIT_S = 180.0  # the bound for dynamic=True of BoT50


def compile_job(job: dict) -> dict:
    """In a child process: seconds of the first call (eval, inference_mode) at (batch, 3, size, size)
    of ``torch.compile(model, dynamic=True)`` (``job["shapes"] == "dynamic"``) or of
    ``compile_model(model, "batch")`` in channels_last (``"batch"``; then also "again_s", the first
    call at batch - 1, which must reuse the graph)."""
    from botnet.compiling import compile_model
    from botnet.models import create_model

    cold_caches()
    torch.manual_seed(0)
    model = create_model(job["model"], img_size=job["size"]).eval()
    if job.get("shapes", "dynamic") == "dynamic":
        compiled = torch.compile(model, dynamic=True)
    else:
        compiled = compile_model(model.to(memory_format=torch.channels_last), "batch")
    out = {}
    for key, batch in (("seconds", job["batch"]), ("again_s", job["batch"] - 1)):
        x = torch.randn(batch, 3, job["size"], job["size"]).contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(x)
        out[key] = time.perf_counter() - t0
        if job.get("shapes", "dynamic") == "dynamic":
            break
    return out


def cold_caches() -> None:
    """Compile from scratch: inductor's on-disk FX-graph and autotuning caches off, and dynamo's
    in-memory cache cleared, so a compile time is what a first run on a fresh machine pays (with a
    warm cache, BoT50's static compile took 5 s instead of minutes)."""
    import torch._inductor.config as inductor_config

    inductor_config.force_disable_caches = True
    torch._dynamo.reset()


def _first_call(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _calls(impls: dict[str, torch.nn.Module], batch: int, size: int) -> dict[str, Callable[[], object]]:
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
    xcl = x.contiguous(memory_format=torch.channels_last)

    def call(m, inp):
        def run():
            with torch.inference_mode():
                return m(inp)
        return run
    return {n: call(m, x if n == "eager" else xcl) for n, m in impls.items()}


def _bench_model(name: str, size: int, batches: tuple[int, ...], repeats: int, warmup: int,
                 log: Callable[[str], None]) -> tuple[list[dict], list[dict], dict]:
    """Timing rows, compile rows and the eager profile of one model."""
    from botnet.compiling import compile_model
    from botnet.models import create_model

    from .vs_timm import conv_profile

    cold_caches()
    torch.manual_seed(0)
    eager = create_model(name, img_size=size).eval()
    cl = copy.deepcopy(eager).to(memory_format=torch.channels_last)
    static = compile_model(copy.deepcopy(cl), "static")
    rows, compiles, big = [], [], max(batches)
    for batch in batches:
        calls = _calls({"eager": eager, "eager, channels_last": cl, "static": static}, batch, size)
        log(f"compile: {name} static batch {batch}: first call (compiles)")
        compiles.append({"model": name, "what": f"static, batch {batch}", "seconds": _first_call(calls["static"])})
        ref = calls["eager"]()
        diff = {n: float((c() - ref).abs().max() / ref.abs().max()) for n, c in calls.items()}
        log(f"compile: {name} batch {batch}: {warmup} warm-up + {repeats} interleaved runs")
        samples = interleaved(calls, repeats, warmup, torch.device("cpu"))
        base = summarize(samples["eager"]).median_ms
        for n, s in samples.items():
            st = summarize(s)
            rows.append({"model": name, "size": size, "batch": batch, "impl": n, "median_ms": st.median_ms,
                         "min_ms": st.min_ms, "max_ms": st.max_ms, "runs": st.runs, "speedup": base / st.median_ms,
                         "max_rel_diff": diff[n]})
    prof = conv_profile(_calls({"cl": cl}, big, size)["cl"])
    return rows, compiles, {"model": name, "batch": big, **prof}


def bench_compile(device: torch.device, repeats: int = 5, warmup: int = 1, quick: bool = False,
                  log: Callable[[str], None] = print, dynamic_limit: float = DYNAMIC_LIMIT_S) -> dict:
    """Every model of the part: interleaved timings, compile times, eager profile, and the bounded
    ``dynamic=True`` attempt on the first model (at batch 1)."""
    from .spawn import run_in_subprocess

    if torch.device(device).type != "cpu":
        raise ValueError("the compile part runs on the CPU (gpu_check.py compiles on GPUs)")
    models, batches = (QUICK_MODELS, QUICK_BATCHES) if quick else (MODELS, BATCHES)
    dynamic_limit = min(dynamic_limit, 60.0) if quick else dynamic_limit
    rows, compiles, profiles = [], [], []
    for name, size in models:
        r, c, p = _bench_model(name, size, batches, repeats, warmup, log)
        rows += r
        compiles += c
        profiles.append(p)
    name, size = models[0]
    for shapes, batch, what in (("dynamic", 2, "dynamic=True, batch 2"),
                                ("batch", max(batches), f"batch dynamic, batch {max(batches)}")):
        log(f"compile: {name} {what}, in a child process, limit {dynamic_limit:.0f} s")
        t0 = time.perf_counter()
        (res,) = run_in_subprocess([{"kind": "compile", "model": name, "size": size, "batch": batch, "shapes": shapes}],
                                   timeout=dynamic_limit)
        compiles.append({"model": name, "what": what, "seconds": res.get("seconds"),
                         "error": None if "seconds" in res else res["error"], "wall_s": time.perf_counter() - t0})
        if "again_s" in res:
            compiles.append({"model": name, "what": f"batch dynamic, then batch {batch - 1}", "seconds": res["again_s"]})
    return {"part": "compile", "rows": rows, "compiles": compiles, "profiles": profiles, "repeats": repeats,
            "warmup": warmup, "quick": quick, "target": TARGET, "dynamic_limit_s": dynamic_limit}


def compile_targets(res: dict) -> list[dict]:
    """Per model, the best compiled row at the largest batch against eager (target ``TARGET``×), with the
    convolution bound where it is not met; and dynamic=True within the limit."""
    out = []
    for prof in res["profiles"]:
        name, batch = prof["model"], prof["batch"]
        rows = {r["impl"]: r for r in res["rows"] if r["model"] == name and r["batch"] == batch}
        best = max((r for n, r in rows.items() if not n.startswith("eager")), key=lambda r: r["speedup"])
        eager = min((rows["eager"], rows["eager, channels_last"]), key=lambda r: r["median_ms"])
        ratio = eager["median_ms"] / best["median_ms"]
        ok = ratio >= res["target"]
        detail = (f"{best['impl']}: {ratio:.2f}× the faster eager row ({eager['impl']}, {best['median_ms']:.0f} vs "
                  f"{eager['median_ms']:.0f} ms), {best['speedup']:.2f}× eager as built; convolutions are {100 * prof['conv_share']:.0f}% of eager channels_last's profiled "
                  f"CPU time ({prof['conv_ms']:.0f} of {prof['total_ms']:.0f} ms)")
        if not ok:
            detail += (f"; inductor runs the same oneDNN convolutions, so with everything else free the compiled model "
                       f"could be at most {prof['total_ms'] / prof['conv_ms']:.2f}× eager channels_last")
        out.append({"target": f"{name} batch {batch} compiled ≥ {res['target']:.1f}× eager (the faster of NCHW and "
                              f"channels_last)", "met": ok, "detail": detail})
    dyn = next(c for c in res["compiles"] if c["what"].startswith("dynamic=True"))
    ok = dyn["seconds"] is not None and dyn["seconds"] <= res["dynamic_limit_s"]
    detail = (f"{dyn['seconds']:.0f} s" if dyn["seconds"] is not None
              else f"did not finish in {res['dynamic_limit_s']:.0f} s ({dyn['error']})")
    out.append({"target": f"{dyn['model']} dynamic=True compiles in under {res['dynamic_limit_s']:.0f} s", "met": ok,
                "detail": detail + "; the cause: botnet.compiling's docstring; the recipe: static shapes "
                          "(model.compile_shapes: static, the default), batch axis dynamic for small models"})
    return out


def render_compile(res: dict) -> list[str]:
    """The timing table, the compile-time table and the profiles of the part."""
    lines = ["float32 inference (eval, torch.inference_mode). \"eager ÷ this\": eager's (NCHW) median over this row's. "
             "\"max rel. diff\": largest |output difference| from eager over eager's largest |output|.", "",
             "| model | size | batch | implementation | median ms | min–max ms | runs | eager ÷ this | max rel. diff |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['model']} | {r['size']} | {r['batch']} | {r['impl']} | {r['median_ms']:.1f} | "
                     f"{r['min_ms']:.1f}–{r['max_ms']:.1f} | {r['runs']} | {r['speedup']:.2f}× | {r['max_rel_diff']:.1e} |")
    lines += ["", "Compile time (wall time of the first call; later batch sizes of the batch-dynamic model reuse its graph):",
              "", "| model | compile | seconds |", "|---|---|---:|"]
    for c in res["compiles"]:
        secs = f"{c['seconds']:.1f}" if c.get("seconds") is not None else f"did not finish in {res['dynamic_limit_s']:.0f} s"
        lines.append(f"| {c['model']} | {c['what']} | {secs} |")
    for p in res["profiles"]:
        top = ", ".join(f"{k} {ms:.1f}" for k, ms in p["top"])
        lines += ["", f"Profile of {p['model']} eager channels_last at batch {p['batch']} (self CPU ms per call): "
                      f"convolutions {p['conv_ms']:.0f} of {p['total_ms']:.0f} ms ({100 * p['conv_share']:.0f}%); top: {top}."]
    return lines
