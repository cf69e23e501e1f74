"""bfloat16 against float32 on the CPU: inference speed, agreement, a detector's AP, training.

What it measures (``botnet.models.precision``; every timing in interleaved rounds in one process,
``suite.timing.interleaved``, median and min-max):

- **Inference** of botnet50 at 224 and botnet26t_256 at 256 (random weights; speed only) and of
  --checkpoint's classifier, at batch 1 and 16, ``torch.inference_mode``, four ways:
  ``fp32`` (the model as built, NCHW), ``fp32 folded+CL`` (``optimize_for_inference``: BatchNorms
  folded, channels_last: our fastest float32), ``bf16 autocast`` (that model under
  ``torch.autocast``) and ``bf16`` (``bf16_classifier``: the same with bfloat16 weights, what
  ``--precision bf16`` runs). The target: ``bf16`` at least 1.6x our fastest float32.
- **Agreement**: top-1 of ``bf16`` against float32 on every image of the built-in shapes val split
  (1000 images) with --checkpoint (a classifier trained on them, e.g. ``make demo``'s), and both
  accuracies. Target: at least 99 %.
- **A detector's boxes**: ``evaluate_detection_checkpoint`` of --det-checkpoint (e.g. ``make
  det-demo``'s) with ``precision="fp32"`` and ``"bf16"`` (``bf16_detector``) on its val split: COCO
  AP and AP50 of boxes and masks, and the eval's wall time. Target: AP within 0.5.
- **A training step** (forward, cross-entropy, backward, SGD step; train mode) of botnet_tiny at 64
  (batch 64, the demo's) and botnet50 at 224 (batch 8), float32 against ``torch.autocast`` bf16.
- **Loss curves**: --fp32-run and --bf16-run are two ``botnet train --config demo`` runs (``run.amp``
  none and bf16); their per-epoch train loss and val top-1 are tabled and drawn into
  docs/bf16_demo_curves.png.

    python benchmarks/bf16.py --checkpoint runs/demo/last.pt --det-checkpoint runs/det_demo/last.pt \\
        --fp32-run runs/demo --bf16-run runs/demo_bf16
    python benchmarks/bf16.py --quick --no-doc      # a smoke run (botnet_tiny, random weights, 2 rounds)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
CURVES = REPO / "docs" / "bf16_demo_curves.png"
BLOCK = "bf16:cpu"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the suite package beside this script
from suite.report import machine_info, measured_on, publish, script_command  # noqa: E402
from suite.timing import interleaved, summarize  # noqa: E402

WAYS = ("fp32", "fp32 folded+CL", "bf16 autocast", "bf16")
SPEED_TARGET, AGREE_TARGET, AP_TARGET = 1.6, 0.99, 0.5


def inference_ways(model) -> dict:
    """{way: callable (B, 3, H, W) float32 -> (B, K)} of ``WAYS`` for the eval-mode ``model``."""
    from botnet.models.fold import optimize_for_inference
    from botnet.models.precision import bf16_classifier

    model = model.eval()
    fast = optimize_for_inference(model)
    half = bf16_classifier(model)

    def autocast(x):
        with torch.autocast("cpu", torch.bfloat16):
            return fast(x)

    return {"fp32": model, "fp32 folded+CL": fast, "bf16 autocast": autocast, "bf16": half}


def time_inference(model, size: int, batch: int, rounds: int) -> dict:
    """{way: {median_ms, min_ms, max_ms, runs}} at one batch size."""
    ways = inference_ways(model)
    x = torch.randn(batch, 3, size, size)

    def call(fn):
        def run():
            with torch.inference_mode():
                fn(x)
        return run

    samples = interleaved({k: call(f) for k, f in ways.items()}, repeats=rounds, warmup=1, device=torch.device("cpu"))
    out = {k: vars(summarize(v)) for k, v in samples.items()}
    out["profile"] = op_profile(ways["fp32 folded+CL"], x)
    return out


MATMUL_OPS = ("conv", "mm", "linear")  # profiler op names with these run as bf16 dot products (conv2d, bmm, addmm, ...)


def op_profile(fn, x: torch.Tensor, calls: int = 10) -> dict:
    """torch.profiler over ``calls`` calls of ``fn(x)`` (after 3 untimed ones): {"matmul_share": the
    share of self CPU time in convolutions and matrix products (what bfloat16 computes faster),
    "ops": aten ops a call, "us_per_op": their mean self CPU time in microseconds}."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(3):
            fn(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                fn(x)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    mm = sum(e.self_cpu_time_total for e in events if any(op in e.key for op in MATMUL_OPS))
    count = sum(e.count for e in events)
    return {"matmul_share": mm / total, "ops": count / calls, "us_per_op": total / max(count, 1)}


def time_train_step(model, size: int, batch: int, rounds: int) -> dict:
    """{"fp32" | "bf16 autocast": stats} of one SGD training step (train mode) at ``batch``."""
    model = model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, model.num_classes, (batch,))

    def step(dtype):
        def run():
            with torch.autocast("cpu", torch.bfloat16, enabled=dtype is not None):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    samples = interleaved({"fp32": step(None), "bf16 autocast": step(torch.bfloat16)}, repeats=rounds, warmup=1,
                          device=torch.device("cpu"))
    return {k: vars(summarize(v)) for k, v in samples.items()}


def agreement(checkpoint: str, val: Path, batch: int = 100) -> dict:
    """Top-1 agreement of ``bf16`` with float32 over every image of ``val``, and both accuracies."""
    from botnet.data.folder import load_rgb
    from botnet.data.transforms import build_eval_transform
    from botnet.models.precision import bf16_classifier
    from botnet.models.weights import load_model

    model, card = load_model(checkpoint)
    model.eval()
    half = bf16_classifier(model)
    tf = build_eval_transform(card)
    files = sorted(val.rglob("*.png"))
    names = card["classes"]
    same = right32 = right16 = 0
    for i in range(0, len(files), batch):
        part = files[i : i + batch]
        x = torch.stack([tf(load_rgb(f)) for f in part])
        labels = torch.tensor([names.index(f.parent.name) for f in part])
        with torch.inference_mode():
            a, b = model(x).argmax(-1), half(x).argmax(-1)
        same += int((a == b).sum())
        right32 += int((a == labels).sum())
        right16 += int((b == labels).sum())
    n = len(files)
    return {"images": n, "agreement": same / n, "top1_fp32": right32 / n, "top1_bf16": right16 / n,
            "model": card["model_name"], "img_size": card["input_size"][-1]}


def detector_ap(checkpoint: str, max_images: int | None) -> dict:
    """{precision: {"bbox", "segm": {AP, AP50, ...}, "seconds"}} of the detection checkpoint."""
    from botnet.engine.detect import evaluate_detection_checkpoint

    out = {}
    for precision in ("fp32", "bf16"):
        t0 = time.perf_counter()
        res = evaluate_detection_checkpoint(checkpoint, device="cpu", workers=0, precision=precision,
                                            max_images=max_images)
        out[precision] = {k: res[k] for k in ("bbox", "segm") if k in res}
        out[precision].update(seconds=time.perf_counter() - t0, count=res["count"], model=res["model"])
    return out


def read_run(run: str) -> list[dict]:
    """Per-epoch {"epoch", "train_loss", "val_loss", "val_top1"} of a ``botnet train`` run's
    metrics.jsonl ("epoch" and "eval" records)."""
    epochs: dict[int, dict] = {}
    for line in (Path(run) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        row = epochs.setdefault(rec.get("epoch"), {"epoch": rec.get("epoch")})
        if rec.get("kind") == "epoch":
            row["train_loss"] = rec["train_loss"]
        elif rec.get("kind") == "eval":
            row.update(val_loss=rec["loss"], val_top1=rec["top1"])
    return [r for _, r in sorted(epochs.items()) if "train_loss" in r and "val_top1" in r]


def draw_curves(runs: dict[str, list[dict]], path: Path) -> None:
    """Train loss and val top-1 per epoch of each run, side by side, into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, rows in runs.items():
        ep = [r["epoch"] + 1 for r in rows]
        ax1.plot(ep, [r["train_loss"] for r in rows], label=name)
        ax2.plot(ep, [r["val_top1"] for r in rows], label=name)
    ax1.set(xlabel="epoch", ylabel="train loss", title="botnet_tiny, demo recipe")
    ax2.set(xlabel="epoch", ylabel="val top-1 (%)", title="1000 shapes val images")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _stat_row(label: str, s: dict, base: dict, best32: dict) -> str:
    return (f"| {label} | {s['median_ms']:.1f} | {s['min_ms']:.1f}–{s['max_ms']:.1f} | "
            f"{base['median_ms'] / s['median_ms']:.2f} | {best32['median_ms'] / s['median_ms']:.2f} |")


def render_speed(cases: list[dict]) -> list[str]:
    """The inference and training tables, and the speed target's verdict per case."""
    lines = ["| model | res | batch | way | median ms | min–max ms | fp32 ÷ this | fp32 folded+CL ÷ this |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    verdicts = []
    for c in cases:
        for b, t in c["infer"].items():
            for way in WAYS:
                lines.append(f"| {c['model']} | {c['size']} | {b} | " + _stat_row(way, t[way], t["fp32"],
                                                                                   t["fp32 folded+CL"])[2:])
            r = t["fp32 folded+CL"]["median_ms"] / t["bf16"]["median_ms"]
            pr = t["profile"]
            verdicts.append(f"{c['model']} batch {b}: {r:.2f}x, {'met' if r >= SPEED_TARGET else 'NOT met'} "
                            f"(float32: {pr['ops']:.0f} aten ops a call, {pr['us_per_op']:.0f} µs each on "
                            f"average, {100 * pr['matmul_share']:.0f}% of the time in convolutions and matmuls)")
    lines += ["", f"Target: `bf16` at least {SPEED_TARGET}x our fastest float32 (fp32 folded+CL). In brackets, "
              "from torch.profiler: how many aten ops a float32 call runs (nested ones included), their mean self CPU time, and the share of "
              "it in convolutions and matrix products. bfloat16 halves the bytes every op moves and, with "
              "avx512_bf16, doubles the multiply-adds per instruction; where the ops take a few microseconds "
              "each (a 1M-parameter network on one 64x64 image), the fixed cost of each op outweighs that.",
              "", "; ".join(verdicts) + ".", "", "Training step (forward, cross-entropy, backward, SGD step):", "",
              "| model | res | batch | way | median ms | min–max ms | fp32 ÷ this |", "|---|---:|---:|---|---:|---:|---:|"]
    for c in cases:
        for b, t in c.get("train", {}).items():
            for way in ("fp32", "bf16 autocast"):
                s = t[way]
                lines.append(f"| {c['model']} | {c['size']} | {b} | {way} | {s['median_ms']:.1f} | "
                             f"{s['min_ms']:.1f}–{s['max_ms']:.1f} | {t['fp32']['median_ms'] / s['median_ms']:.2f} |")
    return lines


def render_quality(agree: dict | None, det: dict | None, curves: dict | None) -> list[str]:
    """Agreement, the detector's AP and the loss curves' table."""
    lines = []
    if agree:
        ok = agree["agreement"] >= AGREE_TARGET
        lines += ["", f"Top-1 agreement of `bf16` with float32, {agree['model']} at {agree['img_size']} on the "
                  f"{agree['images']} shapes val images: **{100 * agree['agreement']:.1f}%** (target "
                  f"{100 * AGREE_TARGET:.0f}%: {'met' if ok else 'NOT met'}); top-1 accuracy fp32 "
                  f"{100 * agree['top1_fp32']:.1f}%, bf16 {100 * agree['top1_bf16']:.1f}%."]
    if det:
        a, b = det["fp32"], det["bf16"]
        lines += ["", f"Detector: {a['model']} on {a['count']} val scenes (`botnet eval --precision fp32|bf16`):", "",
                  "| precision | box AP | box AP50 | mask AP | mask AP50 | eval s |", "|---|---:|---:|---:|---:|---:|"]
        for name, r in det.items():
            seg = r.get("segm", {})
            lines.append(f"| {name} | {r['bbox']['AP']:.2f} | {r['bbox']['AP50']:.2f} | {seg.get('AP', float('nan')):.2f} "
                         f"| {seg.get('AP50', float('nan')):.2f} | {r['seconds']:.1f} |")
        gaps = {t: abs(a[t]["AP"] - b[t]["AP"]) for t in ("bbox", "segm") if t in a}
        lines += ["", "AP difference: " + ", ".join(f"{t} {g:.2f}" for t, g in gaps.items())
                  + f" (target within {AP_TARGET}: {'met' if max(gaps.values()) <= AP_TARGET else 'NOT met'})."]
    if curves:
        lines += ["", "Training the demo (`botnet train --config demo`, `run.amp` none vs bf16, "
                  "![curves](bf16_demo_curves.png)):", "",
                  "| run | epochs | final train loss | final val loss | final val top-1 | best val top-1 |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, rows in curves.items():
            last = rows[-1]
            lines.append(f"| {name} | {len(rows)} | {last['train_loss']:.4f} | {last['val_loss']:.4f} | "
                         f"{last['val_top1']:.1f} | {max(r['val_top1'] for r in rows):.1f} |")
    return lines


def speed_cases(args) -> list[dict]:
    """Time inference (and training) of every case."""
    import botnet

    todo = [("botnet_tiny", 64, (1, 16), 64)] if args.quick else [("botnet50", 224, (1, 16), 8),
                                                                  ("botnet26t_256", 256, (1, 16), None)]
    if args.checkpoint and not args.quick:
        todo.insert(0, ("checkpoint", None, (1, 16), 64))
    cases = []
    for name, size, batches, train_batch in todo:
        if name == "checkpoint":
            from botnet.models.weights import load_model

            model, card = load_model(args.checkpoint)
            name, size = card["model_name"], card["input_size"][-1]
        else:
            torch.manual_seed(0)
            model = botnet.create_model(name, num_classes=10 if args.quick else 1000, img_size=size)
        batches = (1, 2) if args.quick else batches
        case = {"model": name, "size": size, "infer": {b: time_inference(model, size, b, args.rounds) for b in batches}}
        if train_batch:
            tb = 2 if args.quick else train_batch
            case["train"] = {tb: time_train_step(copy.deepcopy(model), size, tb, args.rounds)}
        cases.append(case)
    return cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a classifier trained on the built-in shapes (agreement, and its speed)")
    p.add_argument("--det-checkpoint", help="a detection checkpoint (AP in fp32 and bf16 on its val split)")
    p.add_argument("--det-max-images", type=int, default=None, help="evaluate the detector on the first N images")
    p.add_argument("--fp32-run", help="a demo run trained in float32 (its metrics.jsonl)")
    p.add_argument("--bf16-run", help="the same recipe trained with run.amp=bf16")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds (default 7)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: botnet_tiny, random weights, 2 rounds")
    p.add_argument("--no-doc", action="store_true", help="print the section without writing docs/benchmarks.md")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.threads < 1 or bool(args.fp32_run) != bool(args.bf16_run):
        print("bf16: --rounds and --threads must be >= 1; --fp32-run and --bf16-run go together", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO / "src"))
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds = min(args.rounds, 2)
    from botnet.models.precision import native_bf16

    t0, machine = time.perf_counter(), machine_info()
    cases = speed_cases(args)
    agree = None
    if args.checkpoint:
        from botnet.data import builtin_dataset_root

        agree = agreement(args.checkpoint, builtin_dataset_root(os.environ.get("BOTNET_CACHE")) / "val")
    det = detector_ap(args.det_checkpoint, args.det_max_images) if args.det_checkpoint else None
    curves = None
    if args.fp32_run:
        curves = {"fp32": read_run(args.fp32_run), "bf16 autocast": read_run(args.bf16_run)}
        if not args.no_doc:
            draw_curves(curves, CURVES)
    cmd = script_command("bf16.py", argv)
    lines = [f"{measured_on(machine, f'{args.threads} threads')}; native bfloat16: {native_bf16('cpu')}; "
             f"1-min load average {machine['load1']:.2f} at the start ({os.getloadavg()[0]:.2f} at the end). "
             f"{args.rounds} interleaved rounds after one warm-up call each, median with min–max; "
             f"{time.perf_counter() - t0:.0f} s in all." + (" **Quick run.**" if args.quick else ""),
             "", f"Command: `{cmd}`", "", *render_speed(cases), *render_quality(agree, det, curves)]
    return publish("\n".join(lines), BLOCK, args.no_doc)


if __name__ == "__main__":
    sys.exit(main())
