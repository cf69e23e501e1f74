"""PyTorch eager vs ONNX Runtime float32 vs ONNX Runtime int8 on the CPU, side by side.

Each case is a classifier at one resolution: botnet_tiny at 64 (from --checkpoint, a model trained
on the built-in shapes, e.g. by `botnet train --config demo`; random weights without it) and
botnet50 at 256 (random weights; speed only). Both ONNX files come from ``botnet.export.export_onnx``
(the static MHSA form; int8: ``quantize="int8"``, QDQ, per-channel weights, float32 attention, calibrated on built-in
shapes training images through the model's eval transform). PyTorch runs with
``torch.set_num_threads(T)`` and ONNX Runtime with ``intra_op_num_threads=T`` (one inter-op thread)
in the same process; the three runtimes are timed in interleaved rounds (``suite.timing.interleaved``:
the order rotates every round, so a change of machine load hits them alike), median and min-max.

Agreement: top-1 class of ORT fp32 and ORT int8 against PyTorch on the whole shapes val split
(1000 images, none of them calibrated on), and each one's accuracy. The int8 graph's ops after ONNX
Runtime's fusions (what ran in int8 and what stayed float32) are counted from the optimized graph,
and ``op_profile`` splits a typical run's time by kind of op with ONNX Runtime's profiler (int8
kernels, Quantize/Dequantize, float32 ops, layout ops, time between ops): where int8 gains less
than 2x, it shows what the int8 kernels cannot speed up.

    python benchmarks/onnx_runtime.py --checkpoint runs/demo/last.pt   # writes its section of docs/benchmarks.md
    python benchmarks/onnx_runtime.py --quick --no-doc                 # a smoke run (tiny data, 2 rounds)
"""

from __future__ import annotations

import argparse
import bisect
import collections
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BLOCK = "onnx-runtime:cpu"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the suite package beside this script
from suite.report import machine_info, measured_on, publish, script_command  # noqa: E402
from suite.timing import interleaved, summarize  # noqa: E402

RUNTIMES = ("PyTorch eager", "ORT fp32", "ORT int8")
SAMPLE_S, MAX_CALLS = 0.02, 50  # time_case: a timed sample lasts at least 20 ms (at most 50 calls)
CLEAR_MARGIN = 0.1  # PyTorch top-1 minus top-2 logit: below it, an image is a near tie int8 rounding may flip
FP32_KERNELS = ("Conv", "FusedConv", "NchwcConv", "MatMul", "FusedMatMul", "Gemm")  # float32 compute if left
PROFILE_KINDS = ("int8 Conv/MatMul/Gemm", "int8 other (Add, Softmax, pooling)", "Quantize/Dequantize",
                 "float32 Conv/MatMul/Gemm", "other float32 (Softmax, Add, pooling, ...)",
                 "layout (Transpose/Reshape/Split/...)", "between ops")


def data_roots(quick: bool, cache: str | None) -> Path:
    """The built-in shapes data: the full set (1000 val images) or, for --quick, 8 + 4 per class."""
    from botnet.data import builtin_dataset_root

    if quick:
        return builtin_dataset_root(cache, per_class_train=8, per_class_val=4)
    return builtin_dataset_root(cache)


def calibration_folder(train: Path, out: Path, count: int) -> Path:
    """``count`` training images spread over the classes, linked into ``out`` (calibration input)."""
    files = sorted(p for p in train.rglob("*.png"))
    step = max(1, len(files) // count)
    for f in files[::step][:count]:
        dest = out / f.parent.name / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f, dest)
    return out


def load_case(name: str, checkpoint: str | None, img_size: int):
    """(model, eval card) of one case: the checkpoint's model, or ``name`` with random weights."""
    import botnet
    from botnet.models.weights import load_model

    if checkpoint:
        return load_model(checkpoint)
    torch.manual_seed(0)
    model = botnet.create_model(name, num_classes=10, img_size=img_size).eval()
    return model, {"crop_pct": 1.0}


def export_pair(model, card, tmp: Path, calib: Path, img_size: int) -> tuple[Path, Path, dict]:
    """(fp32 file, int8 file, the int8 export's result extra)."""
    from botnet.export import export_onnx

    fp32, int8 = tmp / "fp32.onnx", tmp / "int8.onnx"
    export_onnx(model, fp32, img_size=img_size)
    res = export_onnx(model, int8, img_size=img_size, quantize="int8", calibration=calib, eval_cfg=card,
                      min_agreement=0.0)  # this script measures the agreement itself, on the val split
    return fp32, int8, res.extra


def optimized_ops(path: Path, threads: int, tmp: Path) -> dict[str, int]:
    """Op counts of ``path`` after ONNX Runtime's extended graph optimizations (QDQ pairs fused into
    QLinearConv / QLinearMatMul ...; what is left as Conv / MatMul runs in float32)."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.intra_op_num_threads = threads
    opts.optimized_model_filepath = str(tmp / f"{path.stem}.optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return dict(collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node))


def op_profile(path: Path, threads: int, batch: int, img_size: int, runs: int, tmp: Path) -> dict[str, float]:
    """Microseconds of a typical run of ``path`` by kind of op (``op_kind``), from ONNX Runtime's
    profiler (``enable_profiling``: one event per node per run) over ``runs`` runs on a
    (batch, 3, S, S) input after 5 warm-up runs: the median over runs of each kind's time, so a run
    slowed by other work on the machine does not count. "between ops" is a run's wall time (the
    profiler's ``model_run``) minus its nodes' time: the executor's per-node dispatch, allocation and
    thread hand-offs. The profiler adds its own per-node cost, so the shares are the point, not the sum."""
    import json
    import statistics

    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.inter_op_num_threads, opts.intra_op_num_threads = 1, threads
    opts.enable_profiling, opts.profile_file_prefix = True, str(tmp / f"{path.stem}_b{batch}")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 3, img_size, img_size), dtype=np.float32)
    for _ in range(runs + 5):
        sess.run(None, {"images": x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e["name"] == "model_run")[5:]
    per_run = [collections.Counter() for _ in spans]
    starts = [a for a, _ in spans]
    for e in events:
        k = bisect.bisect_right(starts, e["ts"]) - 1
        if e["cat"] == "Node" and k >= 0 and e["ts"] <= spans[k][1]:
            per_run[k][op_kind(e["args"].get("op_name", ""))] += e["dur"]
    for (a, b), kinds in zip(spans, per_run):
        kinds["between ops"] = (b - a) - sum(kinds.values())
    return {k: statistics.median(r[k] for r in per_run) for k in PROFILE_KINDS}


def op_kind(op: str) -> str:
    """The kind an ONNX Runtime kernel counts under in ``op_profile``."""
    if op in ("QuantizeLinear", "DequantizeLinear"):
        return "Quantize/Dequantize"
    if op in ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger"):
        return "int8 Conv/MatMul/Gemm"
    if op.startswith("QLinear"):
        return "int8 other (Add, Softmax, pooling)"
    if op in FP32_KERNELS:
        return "float32 Conv/MatMul/Gemm"
    if op in ("Transpose", "Reshape", "Split", "Unsqueeze", "Flatten", "Squeeze", "ReorderInput", "ReorderOutput"):
        return "layout (Transpose/Reshape/Split/...)"
    return "other float32 (Softmax, Add, pooling, ...)"


def time_case(model, sessions: dict, img_size: int, batch: int, rounds: int, sample_s: float) -> dict[str, dict]:
    """{runtime: {median_ms, min_ms, max_ms, runs, calls}} for one batch size, interleaved rounds.
    A sample times ``calls`` calls in a row (per call in the result), enough for the fastest
    runtime's sample to last ``sample_s`` (``SAMPLE_S``; 0: one call): a sub-millisecond call
    timed alone measures the scheduler of a shared machine more than the call."""
    x = torch.randn(batch, 3, img_size, img_size)
    xn = x.numpy()

    def eager():
        with torch.no_grad():
            model(x)

    fns = {"PyTorch eager": eager}
    for name, sess in sessions.items():
        fns[name] = lambda s=sess: s.run(None, {"images": xn})
    once = interleaved(fns, repeats=3, warmup=1, device=torch.device("cpu"))
    calls = max(1, min(MAX_CALLS, math.ceil(sample_s / min(min(v) for v in once.values()))))
    loops = {k: (lambda f=f: [f() for _ in range(calls)]) for k, f in fns.items()}
    samples = interleaved(loops, repeats=rounds, warmup=0, device=torch.device("cpu"))
    return {k: {**vars(summarize([t / calls for t in v])), "calls": calls} for k, v in samples.items()}


def agreement(model, sessions: dict, val: Path, card: dict, img_size: int) -> dict:
    """Top-1 agreement of each session with PyTorch on every val image, and on those whose PyTorch
    top-2 logits are at least ``CLEAR_MARGIN`` apart (``clear``: not near ties), and every
    runtime's accuracy."""
    from botnet.data.folder import load_rgb
    from botnet.data.transforms import build_eval_transform

    tf = build_eval_transform({**card, "input_size": (3, img_size, img_size)})
    files = sorted(val.rglob("*.png"))
    classes = sorted({f.parent.name for f in files})
    names = card.get("classes") or classes
    correct, same, same_clear, n_clear = collections.Counter(), collections.Counter(), collections.Counter(), 0
    for i in range(0, len(files), 50):
        batch = files[i : i + 50]
        x = torch.stack([tf(load_rgb(f)) for f in batch])
        labels = torch.tensor([names.index(f.parent.name) if f.parent.name in names else -1 for f in batch])
        with torch.no_grad():
            logits = model(x)
        ref, top2 = logits.argmax(-1), logits.topk(2, -1).values
        clear = top2[:, 0] - top2[:, 1] >= CLEAR_MARGIN
        n_clear += int(clear.sum())
        correct["PyTorch eager"] += int((ref == labels).sum())
        for name, sess in sessions.items():
            top = torch.as_tensor(sess.run(None, {"images": x.numpy()})[0]).argmax(-1)
            same[name] += int((top == ref).sum())
            same_clear[name] += int(((top == ref) & clear).sum())
            correct[name] += int((top == labels).sum())
    n = len(files)
    return {"images": n, "agreement": {k: v / n for k, v in same.items()}, "clear_images": n_clear,
            "agreement_clear": {k: v / max(n_clear, 1) for k, v in same_clear.items()},
            "accuracy": {k: v / n for k, v in correct.items()}}


def run_case(name: str, img_size: int, checkpoint: str | None, batches, rounds: int, threads: int, roots: Path,
             calib_count: int, val: bool, profile_runs: int, sample_s: float) -> dict:
    """One model: export both files, time the three runtimes at each batch size (samples of
    ``sample_s``: ``time_case``), profile both ONNX files there (``op_profile``, ``profile_runs``
    runs) and (``val``) agreement."""
    from botnet.export.classify import onnx_session

    model, card = load_case(name, checkpoint, img_size)
    with tempfile.TemporaryDirectory(prefix="onnx_runtime_") as tmp:
        tmp = Path(tmp)
        calib = calibration_folder(roots / "train", tmp / "calib", calib_count)
        fp32, int8, extra = export_pair(model, card, tmp, calib, img_size)
        sessions = {"ORT fp32": onnx_session(fp32, threads), "ORT int8": onnx_session(int8, threads)}
        case = {"model": getattr(model, "model_name", name), "img_size": img_size, "trained": bool(checkpoint),
                "calibration_images": extra["calibration_images"], "int8_ops": optimized_ops(int8, threads, tmp),
                "fp32_ops": optimized_ops(fp32, threads, tmp), "timings": {}}
        case["profile"] = {}
        for b in batches:
            case["timings"][b] = time_case(model, sessions, img_size, b, rounds, sample_s)
            for rt, path in (("ORT fp32", fp32), ("ORT int8", int8)):
                case["profile"][(b, rt)] = op_profile(path, threads, b, img_size, profile_runs, tmp)
        if val:
            case["val"] = agreement(model, sessions, roots / "val", card, img_size)
    return case


def _op_summary(ops: dict[str, int]) -> str:
    int8 = {k: v for k, v in ops.items() if k.startswith(("QLinear", "ConvInteger", "MatMulInteger", "QGemm",
                                                           "DynamicQuantize"))}
    fp = {k: v for k, v in ops.items() if k in FP32_KERNELS}
    q = {k: v for k, v in ops.items() if k in ("QuantizeLinear", "DequantizeLinear")}
    fmt = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"
    return f"int8 kernels: {fmt(int8)}; float32 Conv/MatMul/Gemm left: {fmt(fp)}; Q/DQ left: {fmt(q)}"


def render(cases: list[dict], args, machine: dict, seconds: float, cmd: str) -> str:
    """The section's Markdown: header, one table for every case and batch, agreement and op counts."""
    calls = ", ".join(f"{c['model']} batch {b}: {t['ORT fp32']['calls']}"
                      for c in cases for b, t in c["timings"].items())
    lines = [f"{measured_on(machine, f'{args.threads} threads: torch.set_num_threads and ORT intra_op_num_threads')}"
             f", onnxruntime {_ort_version()}; 1-min load average {machine['load1']:.2f} at the start "
             f"({os.getloadavg()[0]:.2f} at the end; the machine was shared when above {os.cpu_count()})."
             f" {args.rounds} interleaved rounds after 4 untimed calls each, median with min–max of the time per "
             f"call of a sample of N calls in a row (N: {calls}); {seconds:.0f} s in all."
             + (" **Quick run** (tiny data, reduced rounds)." if args.quick else ""),
             "", f"Command: `{cmd}`", "",
             "| model | res | batch | runtime | median ms | min–max ms | images/s | eager ÷ this | ORT fp32 ÷ this |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for c in cases:
        for b, t in c["timings"].items():
            for rt in RUNTIMES:
                s = t[rt]
                lines.append(f"| {c['model']} | {c['img_size']} | {b} | {rt} | {s['median_ms']:.1f} | "
                             f"{s['min_ms']:.1f}–{s['max_ms']:.1f} | {1e3 * b / s['median_ms']:.1f} | "
                             f"{t['PyTorch eager']['median_ms'] / s['median_ms']:.2f} | "
                             f"{t['ORT fp32']['median_ms'] / s['median_ms']:.2f} |")
    lines += ["", "Where ONNX Runtime's time goes (`op_profile`: its profiler, share of each run's wall time by kind "
              "of op; µs per run with the profiler on):", "",
              "| model | batch | runtime | " + " | ".join(PROFILE_KINDS) + " | µs per run |",
              "|---|---:|---|" + "---:|" * (len(PROFILE_KINDS) + 1)]
    for c in cases:
        for (b, rt), prof in c["profile"].items():
            total = sum(prof.values())
            shares = " | ".join(f"{100 * prof.get(k, 0.0) / total:.0f}%" for k in PROFILE_KINDS)
            lines.append(f"| {c['model']} | {b} | {rt} | {shares} | {total:.0f} |")
    lines.append("")
    for c in cases:
        weights = "trained on the shapes" if c["trained"] else "random weights"
        lines.append(f"- {c['model']} at {c['img_size']} ({weights}; int8 calibrated on {c['calibration_images']} "
                     f"shapes training images): {_op_summary(c['int8_ops'])}.")
        if "val" in c:
            v = c["val"]
            agree = ", ".join(f"{k} {100 * x:.1f}%" for k, x in v["agreement"].items())
            acc = ", ".join(f"{k} {100 * x:.1f}%" for k, x in v["accuracy"].items())
            clear = ", ".join(f"{k} {100 * x:.1f}%" for k, x in v["agreement_clear"].items())
            lines.append(f"  Top-1 agreement with PyTorch on the {v['images']} shapes val images (none calibrated "
                         f"on): {agree}; on the {v['clear_images']} of them whose PyTorch top-2 logits are at least "
                         f"{CLEAR_MARGIN} apart: {clear}. Accuracy: {acc}.")
    return "\n".join(lines)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a botnet_tiny classification checkpoint trained on the built-in shapes")
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads (default 2)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds (default 7)")
    p.add_argument("--calibration-images", type=int, default=200, help="shapes training images to calibrate on")
    p.add_argument("--no-big", action="store_true", help="skip botnet50 at 256")
    p.add_argument("--quick", action="store_true", help="smoke run: botnet_tiny only, tiny data, 2 rounds")
    p.add_argument("--no-doc", action="store_true", help="print the section without writing docs/benchmarks.md")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.threads < 1 or args.calibration_images < 2:
        print("onnx_runtime: --rounds and --threads must be >= 1, --calibration-images >= 2", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO / "src"))
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs through the root logger
    torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.calibration_images = min(args.rounds, 2), min(args.calibration_images, 20)
    t0, machine = time.perf_counter(), machine_info()
    roots = data_roots(args.quick, os.environ.get("BOTNET_CACHE"))
    cases = [run_case("botnet_tiny", 64, args.checkpoint, (1, 2) if args.quick else (1, 16), args.rounds,
                      args.threads, roots, args.calibration_images, True, 3 if args.quick else 50,
                      0.0 if args.quick else SAMPLE_S)]
    if not (args.quick or args.no_big):
        cases.append(run_case("botnet50", 256, None, (1, 16), args.rounds, args.threads, roots,
                              min(args.calibration_images, 32), False, 3, SAMPLE_S))
    section = render(cases, args, machine, time.perf_counter() - t0, script_command("onnx_runtime.py", argv))
    return publish(section, BLOCK, args.no_doc)

if __name__ == "__main__":
    sys.exit(main())
