"""Part ``compile`` (issue 22): eager against ``torch.compile`` (inductor) inference, float32.

For botnet50 at 224 and botnet26t_256 at 256 (``botnet.models.create_model``, eval,
``torch.inference_mode``), at batch 1 and 16, timed interleaved in one process:

- ``eager``: the model as built (NCHW); ``eager, channels_last``: weights and input in channels_last;
- ``static``: ``botnet.compiling.compile_model(model, "static")`` (``dynamic=False``), channels_last,
  one graph per batch size;
- ``batch dynamic`` (batch 16 only): ``compile_model(model, "batch")``, what ``model.compile: true``
  runs: static shapes with the batch axis marked dynamic, channels_last.

Compile times are the wall time of the first call of each compiled model at each batch (the graph
is traced and compiled then); the batch-dynamic model is also called at batch 15 once, which must
not compile again. ``dynamic=True`` of the first model is tried in a child process
(``suite.worker``, job kind "compile") with a time limit, so a compile that does not finish is
reported as such. A torch.profiler pass over the eager channels_last model at batch 16 gives the
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
    """In a child process: seconds of the first call of ``torch.compile(model, dynamic=True)``
    (eval, inference_mode) at (batch, 3, size, size)."""
    from botnet.models import create_model

    torch.manual_seed(0)
    model = create_model(job["model"], img_size=job["size"]).eval()
    compiled = torch.compile(model, dynamic=True)
    x = torch.randn(job["batch"], 3, job["size"], job["size"])
    t0 = time.perf_counter()
    with torch.inference_mode():
        compiled(x)
    return {"seconds": time.perf_counter() - t0}


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

    torch.manual_seed(0)
    eager = create_model(name, img_size=size).eval()
    cl = copy.deepcopy(eager).to(memory_format=torch.channels_last)
    static = compile_model(copy.deepcopy(cl), "static")
    dyn = compile_model(copy.deepcopy(cl), "batch")
    rows, compiles, big = [], [], max(batches)
    for batch in batches:
        impls = {"eager": eager, "eager, channels_last": cl, "static": static}
        if batch == big:
            impls["batch dynamic"] = dyn
        calls = _calls(impls, batch, size)
        for n in ("static", "batch dynamic"):
            if n in calls:
                log(f"compile: {name} {n} batch {batch}: first call (compiles)")
                compiles.append({"model": name, "what": f"{n}, batch {batch}", "seconds": _first_call(calls[n])})
        if batch == big:
            again = _calls({"batch dynamic": dyn}, big - 1, size)["batch dynamic"]
            compiles.append({"model": name, "what": f"batch dynamic, then batch {big - 1}", "seconds": _first_call(again)})
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
    log(f"compile: {name} dynamic=True, in a child process, limit {dynamic_limit:.0f} s")
    t0 = time.perf_counter()
    (res,) = run_in_subprocess([{"kind": "compile", "model": name, "size": size, "batch": 2}], timeout=dynamic_limit)
    compiles.append({"model": name, "what": "dynamic=True, batch 2", "seconds": res.get("seconds"),
                     "error": None if "seconds" in res else res["error"], "wall_s": time.perf_counter() - t0})
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
                "detail": detail + "; the cause and the recipe: botnet.compiling (static shapes, batch axis dynamic)"})
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
