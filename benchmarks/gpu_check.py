"""The Python parts of benchmarks/gpu_check.sh: one short GPU session that checks and measures what
the CPU machines cannot (run the shell script; it bounds each part's time).

    python benchmarks/gpu_check.py kernels  --json OUT/kernels.json    # exactness in bf16 + fastest kernel
    torchrun --standalone --nproc-per-node 2 benchmarks/gpu_check.py nccl --json OUT/nccl.json
    python benchmarks/gpu_check.py t7-vs-b7 --json OUT/t7_b7.json      # Table 14: T7@384 vs B7@600
    python benchmarks/gpu_check.py maskrcnn --json OUT/maskrcnn.json   # Table 1: BoT50 vs R50 Mask R-CNN @1024
    python benchmarks/gpu_check.py vs-timm --json OUT/vs_timm.json     # ours vs timm, same weights, bf16, eager + compiled
    python benchmarks/gpu_check.py report --results OUT [--no-doc]     # the section of docs/benchmarks.md

``--device cpu --tiny`` runs every part at toy sizes on the CPU (gloo instead of NCCL), so the
script is known to run before it meets a GPU; the tiny numbers are not written to the document.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the suite package beside this script
from suite.models import ModelSpec, make_train_step  # noqa: E402
from suite.report import machine_info, write_doc  # noqa: E402
from suite.timing import interleaved, summarize  # noqa: E402
from suite.vs_timm import MODELS as TIMM_MODELS, bench_compiled  # noqa: E402
from botnet.layers import CANDIDATE_KERNELS, MHSA2d, use_kernel  # noqa: E402
from botnet.layers.fused_attn import fold_attention  # noqa: E402

# flex where this torch has FlexAttention (torch >= 2.5; botnet.compat.HAS_FLEX)
KERNELS = ("reference", "chunked", "sdpa_bias", "sdpa_fold", *CANDIDATE_KERNELS)
CASES = ((8, 14), (1, 32), (1, 64))  # BoT50 c5 at 224 (batch 8), at 512 and 1024
TINY_CASES = ((2, 4),)
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BLOCK = "gpu-check:cuda"


def _layer_case(side: int, dim: int, heads: int, batch: int, device: torch.device):
    torch.manual_seed(0)
    m = MHSA2d(dim, heads, feat_size=side).to(device)
    x = torch.randn(batch, dim, side, side, device=device)
    g = torch.randn_like(x)
    return m, x, g


def _out_grad(m, x, g, kernel: str, amp: bool):
    xi = x.clone().requires_grad_(True)
    with use_kernel(kernel), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        out = m(xi)
    out.backward(g.to(out.dtype))
    return out.detach().double(), xi.grad.double()


def check_exact(side: int, dim: int, heads: int, batch: int, device: torch.device) -> dict:
    """Each kernel under bf16 autocast against the reference kernel in float64 (outputs and input
    gradients), relative to the largest |value|; the reference kernel's own bf16 error is the bar."""
    m, x, g = _layer_case(side, dim, heads, batch, device)
    truth = _out_grad(copy.deepcopy(m).double(), x.double(), g.double(), "reference", amp=False)
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
    rows = {}
    for kernel in KERNELS:
        try:
            if kernel == "flex" and device.type == "cpu":  # no FlexAttention backward on CPU
                with torch.no_grad(), use_kernel("flex"):
                    out = m(x).double()
                rows[kernel] = {"out": rel(out, truth[0]), "grad": None}
                continue
            out, grad = _out_grad(m, x, g, kernel, amp=device.type == "cuda")
            rows[kernel] = {"out": rel(out, truth[0]), "grad": rel(grad, truth[1])}
        except Exception as e:  # one failing kernel is a finding, not the end of the check
            rows[kernel] = {"out": None, "grad": None, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
    bar = max(v for v in rows["reference"].values() if isinstance(v, float))
    for r in rows.values():
        r["ok"] = "error" not in r and all(v is None or v <= max(2 * bar, 1e-2) for v in (r["out"], r["grad"]))
    return rows


def fold_backends(device: torch.device, dtype: torch.dtype) -> dict:
    """Which SDPA backends accept the folded attention of BoT50 c5 at 224 (d 128, 14x14), padded or not."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    gen = torch.Generator().manual_seed(1)
    mk = lambda *s: torch.randn(*s, generator=gen).to(device, dtype)
    q, k, v, row, col = mk(2, 4, 196, 128), mk(2, 4, 196, 128), mk(2, 4, 196, 128), mk(2, 4, 196, 14), mk(2, 4, 196, 14)
    names = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"] if device.type == "cuda" else ["FLASH_ATTENTION"]
    out = {}
    for name in names:
        for pad in (False, True):
            try:
                with sdpa_kernel([getattr(SDPBackend, name)]):
                    fold_attention(q, k, v, row, col, pad=pad)
                out[f"{name.lower()} {'padded' if pad else 'unpadded'}"] = "ok"
            except RuntimeError as e:
                out[f"{name.lower()} {'padded' if pad else 'unpadded'}"] = "refused: " + str(e).splitlines()[0][:80]
    return out


def time_kernels(side: int, dim: int, heads: int, batch: int, device: torch.device, repeats: int) -> dict:
    """Median ms of each kernel, train (fwd+bwd) and infer, bf16 autocast on CUDA."""
    m, x, g = _layer_case(side, dim, heads, batch, device)
    x.requires_grad_(True)
    amp = device.type == "cuda"

    def call(kernel: str, train: bool):
        def fn():
            with use_kernel(kernel), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                if train:
                    out = m(x)
                    out.backward(g.to(out.dtype))
                    m.zero_grad(set_to_none=True)
                    x.grad = None
                else:
                    with torch.inference_mode():
                        m(x)
        return fn

    res = {}
    for mode, train in (("train", True), ("infer", False)):
        names = []
        for k in KERNELS:  # the kernels that run here (flex trains on CUDA only)
            try:
                call(k, train)()
                names.append(k)
            except Exception as e:
                res.setdefault("errors", {})[f"{k} {mode}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        samples = interleaved({k: call(k, train) for k in names}, repeats, 2, device)
        res[mode] = {k: summarize(s).median_ms for k, s in samples.items()}
        res[mode]["fastest"] = min(names, key=lambda k: res[mode][k])
    return res


def part_kernels(args) -> dict:
    device = torch.device(args.device)
    dim, heads = (16, 2) if args.tiny else (512, 4)
    cases = TINY_CASES if args.tiny else CASES
    res = {"backends": {str(dt): fold_backends(device, dt) for dt in (torch.bfloat16,)}, "cases": {}}
    for batch, side in cases:
        label = f"{batch}×{side}²"
        t0 = time.time()
        exact = check_exact(side, dim, heads, min(batch, 2), device)
        timing = time_kernels(side, dim, heads, batch, device, 3 if args.tiny else 10)
        res["cases"][label] = {"exact": exact, "timing": timing, "seconds": time.time() - t0}
        print(label, json.dumps(res["cases"][label]), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return res


def part_nccl(args) -> dict:
    """One DDP training step on every rank (NCCL on CUDA, gloo on CPU); the ranks' weights must agree."""
    import torch.distributed as dist

    from botnet.engine.distributed import cleanup, init_distributed
    from botnet.models import create_model

    device_type = args.device
    if device_type == "cuda":
        os.environ["LOCAL_RANK"] = str(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    info = init_distributed(device_type, timeout_s=60)
    device = torch.device("cuda", info.local_rank) if device_type == "cuda" else torch.device("cpu")
    torch.manual_seed(0)
    name, size = ("botnet_tiny", 32) if args.tiny else ("botnet50", 224)
    model = create_model(name, img_size=size, num_classes=10).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    torch.manual_seed(1 + info.rank)  # a different batch on every rank
    x, y = torch.randn(4, 3, size, size, device=device), torch.randint(0, 10, (4,), device=device)
    t0 = time.time()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = F.cross_entropy(ddp(x), y)
    loss.backward()
    opt.step()
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    sums = [torch.zeros(2, device=device) for _ in range(info.world_size)]
    dist.all_gather(sums, torch.stack([flat.sum(), flat.abs().sum()]))
    agree = all(torch.equal(s, sums[0]) for s in sums)
    backend = str(dist.get_backend())
    cleanup(info)
    return {"world_size": info.world_size, "backend": backend, "model": name, "loss": float(loss.detach()),
            "weights_agree": agree, "seconds": time.time() - t0, "rank": info.rank}


def _time_steps(specs, batch: int, device: torch.device, repeats: int, warmup: int) -> dict:
    steps = {}
    for spec in specs:
        steps[spec.label], _ = make_train_step(spec, batch, device)
    samples = interleaved(steps, repeats, warmup, device)
    return {label: summarize(s).median_ms for label, s in samples.items()}


def part_t7_vs_b7(args) -> dict:
    """Table 14: train-step (fwd + bwd + SGD) time at batch 32 (the paper's), T7@384 vs B7@600."""
    device = torch.device(args.device)
    size_t, size_b, batch = (32, 32, 2) if args.tiny else (384, 600, 32)
    specs = (ModelSpec("T7", "botnet_t7", size_t), ModelSpec("B7", "efficientnet_b7", size_b, "timm"))
    ms = _time_steps(specs, batch, device, 1 if args.tiny else 8, 1 if args.tiny else 2)
    return {"batch": batch, "ms": ms, "speedup": ms["B7"] / ms["T7"], "paper": 1.64,
            "sizes": {"T7": size_t, "B7": size_b}}


def _detector_step(name: str, size: int, batch: int, device: torch.device):
    from botnet.detection import create_detector

    torch.manual_seed(0)
    model = create_detector(name, num_classes=91, img_size=size).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images = [torch.rand(3, size, size, device=device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(8, 2, device=device) * size * 0.6
        wh = torch.rand(8, 2, device=device) * size * 0.3 + 16
        masks = torch.zeros(8, size, size, dtype=torch.uint8, device=device)
        boxes = torch.cat([xy, xy + wh], 1)
        for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        targets.append({"boxes": boxes, "labels": torch.randint(1, 91, (8,), device=device), "masks": masks})

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = sum(model(images, targets).values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def part_maskrcnn(args) -> dict:
    """Table 1: Mask R-CNN train-step time, BoT50 vs R50 backbones at 1024, 2 images per GPU
    (the paper's 64 on 32 TPU-v3 cores)."""
    device = torch.device(args.device)
    size, batch = (128, 1) if args.tiny else (1024, 2)
    steps = {label: _detector_step(f"maskrcnn_{name}_fpn", size, batch, device)
             for label, name in (("R50", "resnet50"), ("BoT50", "botnet50"))}
    samples = interleaved(steps, 1 if args.tiny else 8, 1 if args.tiny else 2, device)
    ms = {k: summarize(s).median_ms for k, s in samples.items()}
    return {"size": size, "batch": batch, "ms": ms, "ratio": ms["BoT50"] / ms["R50"], "paper": 1.31}


def part_vs_timm(args) -> dict:
    """timm's BoTNet family from timm and from us on the same weights, bf16 autocast, eager and
    torch.compile: inference at batch 1 and 32, a train step at batch 32 (suite.vs_timm.bench_compiled).
    The JSON is rewritten after each model, so a part cut short by its time limit keeps the models done.
    --tiny: one model at 64 px, batches 1 / 2, torch.compile with the "eager" backend (no inductor build)."""
    device = torch.device(args.device)
    models, size = (TIMM_MODELS[:1], 64) if args.tiny else (TIMM_MODELS, 256)
    modes = (("infer", 1), ("train", 2)) if args.tiny else (("infer", 1), ("infer", 32), ("train", 32))
    res = {"size": size, "rows": [], "backend": "eager" if args.tiny else "inductor"}
    for name in models:
        res["rows"] += bench_compiled(name, modes, device, size, 2 if args.tiny else 8, 1 if args.tiny else 3,
                                      res["backend"])
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
    return res


PARTS = {"kernels": part_kernels, "nccl": part_nccl, "t7-vs-b7": part_t7_vs_b7, "maskrcnn": part_maskrcnn,
         "vs-timm": part_vs_timm}
FILES = {"kernels": "kernels", "nccl": "nccl", "t7-vs-b7": "t7_b7", "maskrcnn": "maskrcnn", "vs-timm": "vs_timm"}


def _fmt(v, spec=".1f"):
    return "–" if v is None else format(v, spec)


def _kernel_lines(res: dict) -> list[str]:
    lines = ["SDPA backends that accept the folded attention (BoT50 c5 at 224: d 128, 14×14, bf16): "
             + "; ".join(f"{k}: {v}" for k, v in res["backends"]["torch.bfloat16"].items()) + ".", "",
             "| case | kernel | bf16 out err | bf16 grad err | exact | train ms | infer ms |",
             "|---|---|---|---|---|---|---|"]
    for label, case in res["cases"].items():
        t = case["timing"]
        for k, e in case["exact"].items():
            lines.append(f"| {label} | {k} | {_fmt(e['out'], '.1e')} | {_fmt(e['grad'], '.1e')} | "
                         f"{'yes' if e['ok'] else '**no**'} | {_fmt(t['train'].get(k))} | {_fmt(t['infer'].get(k))} |")
    errors = {f"{label} {k}": e["error"] for label, c in res["cases"].items() for k, e in c["exact"].items() if "error" in e}
    errors.update({f"{label} {k}": v for label, c in res["cases"].items() for k, v in c["timing"].get("errors", {}).items()})
    if errors:
        lines += ["", "Kernels that failed: " + "; ".join(f"{k}: {v}" for k, v in errors.items()) + "."]
    lines += ["", "Fastest kernel per case (train / infer): " + "; ".join(
        f"{label}: {c['timing']['train']['fastest']} / {c['timing']['infer']['fastest']}"
        for label, c in res["cases"].items()) + ".",
        "Errors: max |kernel − float64 reference| / max |reference|, outputs and input gradients; a kernel "
        "passes when within 2× the reference kernel's own bf16 error (or 1e-2)."]
    return lines


def render(results: dict, status: dict, machine: dict, command: str) -> str:
    """The markdown of the gpu-check section from the parts' results and exit statuses."""
    lines = [f"Measured {machine['date']} on {machine['device_name']}, {machine['cpu']} ({machine['cores']} cores), "
             f"torch {machine['torch']}, CUDA {machine.get('cuda')}.", "", f"Command: `{command}`", ""]
    for part, rc in status.items():
        if rc != 0 or part not in results:
            lines.append(f"- **{part}: did not finish** (exit {rc}; see its log).")
    if "kernels" in results:
        lines += ["", "### MHSA kernels (bf16 autocast)", ""] + _kernel_lines(results["kernels"])
    if "nccl" in results:
        r = results["nccl"]
        lines += ["", f"### DDP step: {r['world_size']} processes, backend {r['backend']}", "",
                  f"One step of {r['model']} ({r['seconds']:.1f} s); weights equal on every rank afterwards: "
                  f"{'yes' if r['weights_agree'] else '**no**'}." + (" (Only one process: NCCL refuses two ranks on one GPU.)"
                                                                    if r["world_size"] == 1 else "")]
    if "t7-vs-b7" in results:
        r = results["t7-vs-b7"]
        lines += ["", "### Table 14: T7@384 vs EfficientNet-B7@600", "",
                  f"Train step (forward + backward + SGD) at batch {r['batch']}: T7 {r['ms']['T7']:.0f} ms, "
                  f"B7 {r['ms']['B7']:.0f} ms: B7 / T7 = **{r['speedup']:.2f}×** (paper, TPU-v3 compute time: 1.64×)."]
    if "maskrcnn" in results:
        r = results["maskrcnn"]
        lines += ["", f"### Table 1: Mask R-CNN at {r['size']}, BoT50 vs R50", "",
                  f"Train step at {r['batch']} images: R50 {r['ms']['R50']:.0f} ms, BoT50 {r['ms']['BoT50']:.0f} ms: "
                  f"**{r['ratio']:.2f}×** (paper, TPU-v3: 1.31×)."]
    if "vs-timm" in results:
        r = results["vs-timm"]
        lines += ["", f"### Ours vs timm, same weights, bf16 autocast, eager and torch.compile ({r['backend']})", "",
                  "| model | mode | batch | implementation | median ms | min–max ms | timm eager ÷ this | "
                  "timm ÷ ours, same execution | max rel. diff (fp32 logits) |", "|---|---|---:|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {x['model']} | {x['mode']} | {x['batch']} | {x['impl']} | {x['median_ms']:.1f} | {x['min_ms']:.1f}–"
                  f"{x['max_ms']:.1f} | {x['vs_timm_eager']:.2f}× | {x['vs_timm_same']:.2f}× | {x['max_rel_diff']:.1e} |"
                  for x in r["rows"]]
    return "\n".join(lines)


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=[*PARTS, "report"])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="toy sizes (a dry run on CPU)")
    p.add_argument("--json", help="write this part's result here")
    p.add_argument("--results", help="report: the folder of the parts' JSON and .rc files")
    p.add_argument("--no-doc", action="store_true", help="report: print the section, leave the document alone")
    p.add_argument("--command", default="bash benchmarks/gpu_check.sh", help="report: the command to record")
    return p.parse_args(argv)


def report(args) -> int:
    folder = Path(args.results)
    results, status = {}, {}
    for part, stem in FILES.items():
        rc_file, js = folder / f"{stem}.rc", folder / f"{stem}.json"
        status[part] = int(rc_file.read_text().strip() or 1) if rc_file.exists() else 1
        if js.exists():
            results[part] = json.loads(js.read_text())
    device = torch.device(args.device)
    body = render(results, status, machine_info(device), args.command)
    print(body)
    if not args.no_doc and not args.tiny and device.type == "cuda":
        write_doc(DOC, {BLOCK: body})
        print(f"wrote {DOC}")
    return 0 if all(rc == 0 for rc in status.values()) else 1


def main(argv: list[str]) -> int:
    args = _args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --device cpu --tiny for a dry run", file=sys.stderr)
        return 2
    if args.part == "report":
        return report(args)
    res = PARTS[args.part](args)
    res["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if args.json and res.get("rank", 0) == 0:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(json.dumps(res)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
