"""Machine description, Markdown tables, the targets of issue 7, and the docs/benchmarks.md writer.

Each part owns one block of the document per device, between ``<!-- bench:PART:DEVICE:begin -->``
and ``<!-- bench:PART:DEVICE:end -->`` (DEVICE: cpu or cuda); ``write_doc`` replaces what is between
them and nothing else.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path

import torch

from .compiled import compile_targets, render_compile
from .vs_timm import render_vs_timm, vs_timm_targets

__all__ = ["machine_info", "measured_on", "render_part", "targets", "write_doc", "markers", "script_command", "publish",
           "DOC"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device = torch.device("cpu")) -> dict:
    """CPU model, cores, torch version and threads, device name, UTC date, 1-min load average now."""
    info = {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "device": "cpu", "device_name": "CPU (float32)",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load1": os.getloadavg()[0],
    }
    if device.type == "cuda":
        info.update(device="cuda", device_name=f"{torch.cuda.get_device_name(device)} (bf16 autocast)",
                    cuda=torch.version.cuda)
    return info


def measured_on(machine: dict, detail: str = "") -> str:
    """"Measured DATE on CPU (N cores[, detail]), torch V": the first words of a CPU table's header,
    from ``machine_info``'s dict."""
    return (f"Measured {machine['date']} on {machine['cpu']} ({machine['cores']} cores"
            + (f", {detail}" if detail else "") + f"), torch {machine['torch']}")


def _f(v, spec: str = ".1f", empty: str = "–") -> str:
    return empty if v is None else format(v, spec)


def _header(res: dict) -> list[str]:
    m = res["machine"]
    others = res.get("other_cores")
    load = (f"1-min load average {m['load1']:.2f} at the start, {res.get('load1_end', float('nan')):.2f} at the end "
            f"(this run's own threads count in it)")
    if others is not None:
        load += f"; other processes used {others:.2f} of the {m['cores']} cores on average meanwhile"
        if others >= 0.25:
            load += " — the machine was shared, so the timings are noisy"
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads), "
        f"{m['device_name']}, torch {m['torch']}; {load}.",
        f"At least {res['repeats']} timed runs after {res['warmup']} warm-up run(s), median with min–max"
        + (" (cheap cases repeat until they have taken 8 s, up to 4×; see runs)" if res["part"] == "mhsa" else "")
        + "; "
        f"{res['seconds']:.0f} s for this part." + (" **Quick run** (reduced cases)." if res.get("quick") else ""),
        "",
        f"Command: `{res['command']}`",
    ]
    if res.get("memory_method"):
        lines += ["", f"Peak memory: {res['memory_method']} (see the method above)."]
    return lines


def _mhsa_table(res: dict) -> list[str]:
    lines = ["| case | mode | implementation | kernel | median ms | min–max ms | runs | peak MiB | timm ÷ this | "
             "lucidrains ÷ this | matmul floor ÷ this | matmul+softmax floor ÷ this |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        if r["impl"].endswith("floor"):
            what = (f"*{r['impl']}* ({r['gmac']:.2f} GMAC, {r['gflops']:.0f} GFLOP/s)" if r["impl"] == "matmul floor"
                    else f"*{r['impl']}*")
            lines.append(f"| {r['case']} | {r['mode']} | {what} | | {r['median_ms']:.1f} | "
                         f"{r['min_ms']:.1f}–{r['max_ms']:.1f} | {r['runs']} | | | | | |")
            continue
        err = f" ({r['error']})" if r.get("error") else ""
        lines.append(
            f"| {r['case']} | {r['mode']} | {r['impl']} | {r['kernel'] or ''} | {r['median_ms']:.1f} | "
            f"{r['min_ms']:.1f}–{r['max_ms']:.1f} | {r['runs']} | {_f(r['peak_mib'], '.0f')}{err} | {r['speedup_vs_timm']:.2f}× | "
            f"{r['speedup_vs_lucidrains']:.2f}× | {100 * r['matmul_share']:.0f}% | {100 * r['softmax_floor_share']:.0f}% |")
    return lines


def _models_table(rows: list[dict]) -> list[str]:
    lines = ["| model | registry name | res | batch | precision | step median ms | min–max ms | images/s | "
             "GMAC/image | TFLOP/s | peak MiB | params (M) |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        err = f" ({r['error']})" if r.get("error") else ""
        lines.append(
            f"| {r['label']} | {r['source'] + ':' if r['source'] != 'botnet' else ''}{r['model']} | {r['img_size']} | "
            f"{r['batch']} | {r['dtype']} | {_f(r['median_ms'], '.0f')}{err} | "
            f"{_f(r['min_ms'], '.0f')}–{_f(r['max_ms'], '.0f')} | {_f(r['images_per_s'], '.2f')} | "
            f"{_f(r['gmac_per_image'], '.2f')} | {_f(r['tflops'], '.2f')} | {_f(r['peak_mib'], '.0f')} | "
            f"{_f(r['params_m'], '.1f')} |")
    return lines


def _row(res: dict, case: str, mode: str, impl: str) -> dict | None:
    return next((r for r in res["rows"] if r.get("case") == case and r["mode"] == mode and r["impl"] == impl), None)


def _best_kernel(res: dict, case: str, mode: str) -> dict | None:
    ours = [r for r in res["rows"] if r.get("case") == case and r["mode"] == mode
            and r["impl"].startswith("ours:") and r["impl"] != "ours:auto"]
    return min(ours, key=lambda r: r["median_ms"]) if ours else None


def _status(ok: bool | None) -> str:
    return {True: "**met**", False: "**not met**", None: "not measured"}[ok]


def targets(res: dict) -> list[dict]:
    """The issue's targets that this part's results decide: [{"target", "met", "detail"}]."""
    part, out = res["part"], []
    if part == "mhsa":
        big, small = "1×64²", "8×14²"
        a, t, lu, fl, fs = (_row(res, big, "train", n)
                            for n in ("ours:auto", "timm", "lucidrains", "matmul floor", "matmul+softmax floor"))
        if a is None:
            out.append({"target": f"MHSA fwd+bwd at {big} ≥1.5× faster than timm and lucidrains", "met": None,
                        "detail": f"{big} not run (quick run)"})
        else:
            best = _best_kernel(res, big, "train")
            ok = a["speedup_vs_timm"] >= 1.5 and a["speedup_vs_lucidrains"] >= 1.5
            detail = (f"ours (auto → {a['kernel']}) {a['median_ms']:.0f} ms, timm {t['median_ms']:.0f} ms "
                      f"({a['speedup_vs_timm']:.2f}×), lucidrains {lu['median_ms']:.0f} ms "
                      f"({a['speedup_vs_lucidrains']:.2f}×); fastest explicit kernel {best['impl']} "
                      f"{best['median_ms']:.0f} ms ({best['speedup_vs_timm']:.2f}× / {best['speedup_vs_lucidrains']:.2f}×)")
            if not ok:
                detail += (f". Limit: the six attention matmuls every exact implementation does (q·kᵀ and P·v forward, "
                           f"four of the same shapes backward: {fl['gmac']:.1f} GMAC) take {fl['median_ms']:.0f} ms "
                           f"as plain torch.matmul in the same run ({fl['gflops']:.0f} GFLOP/s), "
                           f"{100 * a['matmul_share']:.0f}% of ours, {100 * t['matmul_share']:.0f}% of timm's and "
                           f"{100 * lu['matmul_share']:.0f}% of lucidrains'. Even with everything else free, ours "
                           f"could be at most {t['median_ms'] / fl['median_ms']:.2f}× faster than timm and "
                           f"{lu['median_ms'] / fl['median_ms']:.2f}× faster than lucidrains at this matmul throughput. "
                           f"With the softmax and its backward over the N × N logits added (the least any exact "
                           f"kernel does) the floor is {fs['median_ms']:.0f} ms, "
                           f"{100 * a['softmax_floor_share']:.0f}% of ours, and the most ours could gain is "
                           f"{t['median_ms'] / fs['median_ms']:.2f}× over timm and {lu['median_ms'] / fs['median_ms']:.2f}× "
                           f"over lucidrains")
            out.append({"target": f"MHSA fwd+bwd at {big} ≥1.5× faster than timm and than lucidrains",
                        "met": ok, "detail": detail})
            if None in (a["peak_mib"], t["peak_mib"], lu["peak_mib"]):
                out.append({"target": f"MHSA fwd+bwd peak memory at {big} ≤ 1/3 of timm's and lucidrains'",
                            "met": None, "detail": "memory measurement failed"})
            else:
                ok = 3 * a["peak_mib"] <= t["peak_mib"] and 3 * a["peak_mib"] <= lu["peak_mib"]
                low = min((r for r in res["rows"] if r.get("case") == big and r["mode"] == "train"
                           and r["impl"].startswith("ours:") and r["impl"] != "ours:auto"
                           and r["peak_mib"] is not None), key=lambda r: r["peak_mib"])
                detail = (f"ours (auto → {a['kernel']}) {a['peak_mib']:.0f} MiB = {a['peak_mib'] / t['peak_mib']:.2f} of "
                          f"timm's {t['peak_mib']:.0f} MiB and {a['peak_mib'] / lu['peak_mib']:.2f} of lucidrains' "
                          f"{lu['peak_mib']:.0f} MiB; lowest explicit kernel {low['impl']} {low['peak_mib']:.0f} MiB "
                          f"({low['peak_mib'] / t['peak_mib']:.2f} / {low['peak_mib'] / lu['peak_mib']:.2f})")
                if not ok:
                    nn_mib = a["batch"] * a["heads"] * (a["side"] ** 4) * 4 / 2**20
                    detail += (f". Limit: one float32 attention-sized tensor (batch × heads × N × N) is {nn_mib:.0f} MiB "
                               f"here, and a third of timm's peak is {t['peak_mib'] / 3 / nn_mib:.1f} of them; a "
                               f"backward through an explicit softmax keeps P and builds dP and dS of that size, so only "
                               f"a kernel that never stores an N × N matrix (flash-style, recomputing P in the backward) "
                               f"can get there")
                cand = _row(res, big, "train", "candidate:fold_padv")
                if cand is not None and cand["peak_mib"] is not None:
                    detail += (f". The candidate kernel fold_padv (sdpa_fold with v zero-padded so that SDPA can take "
                               f"its flash kernel; exact, not in MHSA2d) peaks at {cand['peak_mib']:.0f} MiB "
                               f"({cand['peak_mib'] / t['peak_mib']:.2f} of timm's, "
                               f"{cand['peak_mib'] / lu['peak_mib']:.2f} of lucidrains') in {cand['median_ms']:.0f} ms")
                out.append({"target": f"MHSA fwd+bwd peak memory at {big} ≤ 1/3 of timm's and of lucidrains'",
                            "met": ok, "detail": detail})
        parts, ok = [], True
        for mode in ("train", "infer"):
            r = _row(res, small, mode, "ours:auto")
            if r is None:
                ok = None
                continue
            ok = ok and r["speedup_vs_timm"] >= 1.0 and r["speedup_vs_lucidrains"] >= 1.0
            parts.append(f"{mode}: ours {r['median_ms']:.1f} ms, {r['speedup_vs_timm']:.2f}× timm's speed, "
                         f"{r['speedup_vs_lucidrains']:.2f}× lucidrains'")
        out.append({"target": f"MHSA at {small} not slower than timm or lucidrains (train and inference)",
                    "met": ok, "detail": "; ".join(parts) or "not run"})
    elif part == "r50-vs-bot50-1024":
        res_size = res["rows"][0]["img_size"]
        ok = res["ratio"] <= 1.20 if res_size == 1024 else None
        detail = (f"BoT50 / R50 step time at {res_size}, batch {res['batch']}: {res['ratio']:.3f} "
                  f"(per-repetition ratios {res['ratio_per_rep'][0]:.3f}–{res['ratio_per_rep'][-1]:.3f}); "
                  f"paper (TPU-v3): 1.31")
        if res.get("madds_ratio"):
            detail += (f"; the forward multiply-adds alone are in ratio {res['madds_ratio']:.3f} "
                       f"(Table 1: 102.98 / 85.4 = 1.206)")
        if ok is False and res.get("madds_ratio"):
            detail += (". Limit: BoT50 does more arithmetic than R50 at 1024 (the 64×64 attention of its first c5 "
                       "block), so a ratio under the multiply-add ratio needs its extra work to run faster per "
                       "multiply-add than R50's convolutions")
        out.append({"target": "BoT50 / R50 train-step time at 1024 ≤ 1.20", "met": ok, "detail": detail})
    elif part == "vs-timm":
        out += vs_timm_targets(res)
    elif part == "compile":
        out += compile_targets(res)
    elif part == "models":
        rows = {r["label"]: r for r in res["rows"]}
        t7, b7 = rows.get("T7"), rows.get("B7")
        if t7 and b7 and t7["median_ms"] and b7["median_ms"]:
            ratio = b7["median_ms"] / t7["median_ms"]
            out.append({"target": "T7@384 train step ≥1.64× faster than EfficientNet-B7@600 (batch 32, GPU)",
                        "met": ratio >= 1.64 if t7["batch"] == 32 else None,
                        "detail": f"B7 {b7['median_ms']:.0f} ms / T7 {t7['median_ms']:.0f} ms = {ratio:.2f}× "
                                  f"at batch {t7['batch']}"})
        else:
            why = "needs a GPU (EfficientNets run on CUDA only)" if res["machine"]["device"] == "cpu" else "T7 or B7 failed"
            out.append({"target": "T7@384 train step ≥1.64× faster than EfficientNet-B7@600 (batch 32, GPU)",
                        "met": None, "detail": why})
    return out


def render_part(res: dict) -> str:
    """Markdown for one part's result (header, tables, targets)."""
    part = res["part"]
    lines = _header(res) + [""]
    if part == "mhsa":
        sm = res["same_math"]
        lines.append("Same math (float32, 16 channels, 2 heads, 3×5 map, matched weights), largest |difference| "
                     "from ours in output / input gradient: "
                     + "; ".join(f"{n} {d['out']:.1e} / {d['grad']:.1e}" for n, d in sm.items()) + ".")
        if res.get("case_agreement"):
            worst = {c: max(v for n, v in d.items()) for c, d in res["case_agreement"].items()}
            lines.append("At the benchmark sizes (512 channels, float32 forward) every implementation is within "
                         + ", ".join(f"{v:.1e} at {c}" for c, v in worst.items()) + " of ours:reference.")
        lines += ["", *_mhsa_table(res)]
    elif part == "models":
        lines += _models_table(res["rows"])
    elif part == "r50-vs-bot50-1024":
        lines += _models_table(res["rows"])
    elif part == "vs-timm":
        lines += render_vs_timm(res)
    elif part == "compile":
        lines += render_compile(res)
    tg = targets(res)
    if tg:
        lines += ["", "Targets:", ""]
        lines += [f"- {t['target']}: {_status(t['met'])}. {t['detail']}." for t in tg]
    return "\n".join(lines)


def markers(block: str) -> tuple[str, str]:
    """The begin and end markers of a block, e.g. ``markers("mhsa:cpu")``."""
    return f"<!-- bench:{block}:begin -->", f"<!-- bench:{block}:end -->"


def write_doc(path: str | Path, sections: dict[str, str]) -> Path:
    """Put each ``sections[block]`` between that block's markers in ``path``, leaving everything else
    as it is; a block without markers is appended at the end with new ones."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    for block, body in sections.items():
        begin, end = markers(block)
        i, j = text.find(begin), text.find(end)
        if i < 0 or j < i:
            text = text.rstrip("\n") + f"\n\n{begin}\n{body.strip()}\n{end}\n"
        else:
            text = text[: i + len(begin)] + "\n" + body.strip() + "\n" + text[j:]
    path.write_text(text)
    return path


def script_command(script: str, argv: list[str] | None) -> str:
    """How a benchmark script was run, for its section: "python benchmarks/SCRIPT ARGS..."."""
    return "python " + " ".join([f"benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])])


def publish(section: str, block: str, no_doc: bool, doc: str | Path = DOC) -> int:
    """Write ``section`` between ``block``'s markers in ``doc`` (unless ``no_doc``) and print it; 0."""
    if not no_doc:
        write_doc(doc, {block: section})
    print(section)
    return 0
