"""Whole models: the paper's "compute step time", one forward + backward + SGD step.

BoTNet: "Bottleneck Transformers for Visual Recognition", Srinivas et al., arXiv:2101.11605,
Table 1 (BoT50 vs R50 at 1024: 1.31x step time on TPU-v3) and Table 14 / Fig. 5 (T3-T7, SENets and
EfficientNet-B0..B7 at their resolutions, batch 32). EfficientNets come from timm and are run on a
GPU only (the CPU suite has no room for B7 at 600).

A step: cross-entropy of the logits against random labels, ``backward``, ``SGD(momentum=0.9).step``,
``zero_grad(set_to_none=True)``; the model in train mode (BatchNorm updates its statistics). On CUDA
the forward runs under bf16 autocast, the model and input in channels_last, cuDNN autotuning on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .timing import MIB, interleaved, peak_memory, summarize
from .spawn import run_in_subprocess

__all__ = ["ModelSpec", "MODELS", "PAIR_1024", "make_train_step", "model_job", "bench_models", "bench_pair_1024",
           "CPU_BATCH", "GPU_BATCH"]

CPU_BATCH, GPU_BATCH = 2, 32
PAIR_CPU_BATCH, PAIR_GPU_BATCH = 1, 8


@dataclass(frozen=True)
class ModelSpec:
    label: str  # the paper's name for the row
    name: str  # botnet registry name, or timm's for source="timm"
    img_size: int
    source: str = "botnet"
    gpu_only: bool = False


_EFF_RES = (224, 240, 260, 300, 380, 456, 528, 600)  # EfficientNet-B0..B7 native resolutions
MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("R50", "resnet50", 224),
    ModelSpec("BoT50", "botnet50", 224),
    ModelSpec("BoT-S1-50", "botnet_s1_50", 224),
    ModelSpec("T3", "botnet_t3", 224),
    ModelSpec("T4", "botnet_t4", 224),
    ModelSpec("T5", "botnet_t5", 256),
    ModelSpec("T6", "botnet_t6", 320),
    ModelSpec("T7", "botnet_t7", 384),
    ModelSpec("SE50 (S0 at 160)", "seresnet50", 224),
    ModelSpec("SE101 (S1)", "seresnet101", 224),
    ModelSpec("SE152 (S2)", "seresnet152", 224),
) + tuple(ModelSpec(f"B{i}", f"efficientnet_b{i}", r, "timm", gpu_only=True) for i, r in enumerate(_EFF_RES))
QUICK_MODELS = (ModelSpec("R50", "resnet50", 128), ModelSpec("BoT50", "botnet50", 128))
PAIR_1024 = (ModelSpec("R50", "resnet50", 1024), ModelSpec("BoT50", "botnet50", 1024))
QUICK_PAIR = (ModelSpec("R50", "resnet50", 256), ModelSpec("BoT50", "botnet50", 256))


def build(spec: ModelSpec, num_classes: int = 1000) -> nn.Module:
    if spec.source == "timm":
        import timm

        return timm.create_model(spec.name, num_classes=num_classes)
    from botnet.models import create_model

    return create_model(spec.name, img_size=spec.img_size, num_classes=num_classes)


def madds_per_image(spec: ModelSpec) -> float | None:
    """Forward multiply-adds of one image (botnet.counter, on the meta device), None if it fails."""
    from botnet.counter import count_madds

    try:
        with torch.device("meta"):
            model = build(spec)
        return count_madds(model, spec.img_size)
    except Exception:  # a model the counter cannot trace: leave the column empty
        return None


def make_train_step(spec: ModelSpec, batch: int, device: torch.device, seed: int = 0
                    ) -> tuple[Callable[[], None], nn.Module]:
    """A closure running one training step of ``spec`` on a fixed random batch, and the model."""
    torch.manual_seed(seed)
    cuda = device.type == "cuda"
    model = build(spec).to(device).train()
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = torch.randn(batch, 3, spec.img_size, spec.img_size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=device)
    if cuda:
        torch.backends.cudnn.benchmark = True

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, model


def _spec_job(spec: ModelSpec, batch: int, device: torch.device) -> dict:
    return {"kind": "model", "label": spec.label, "name": spec.name, "img_size": spec.img_size, "source": spec.source,
            "batch": batch, "device": str(device)}


def model_job(job: dict) -> dict:
    """Peak memory of one train step (after one warm-up step), in this (fresh) process."""
    spec = ModelSpec(job["label"], job["name"], job["img_size"], job.get("source", "botnet"))
    device = torch.device(job.get("device", "cpu"))
    step, model = make_train_step(spec, job["batch"], device)
    step()
    peak, method = peak_memory(step, device)
    return {"peak_bytes": peak, "method": method, "params": sum(p.numel() for p in model.parameters())}


def _time_and_measure(spec: ModelSpec, batch: int, device: torch.device, repeats: int, warmup: int) -> dict:
    """Train-step timing in this process; peak memory here on CUDA, in a fresh process on CPU."""
    step, model = make_train_step(spec, batch, device)
    out = {"params": sum(p.numel() for p in model.parameters())}
    out["samples"] = interleaved({"step": step}, repeats, max(warmup, 1), device)["step"]
    if device.type == "cuda":
        out["peak_bytes"], out["method"] = peak_memory(step, device)
    del step, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    else:
        mem = run_in_subprocess([_spec_job(spec, batch, device)])[0]
        out.update({k: mem[k] for k in ("peak_bytes", "method", "error") if k in mem})
    return out


def _row(part: str, spec: ModelSpec, batch: int, device: torch.device, res: dict, madds: float | None) -> dict:
    row = {"part": part, "label": spec.label, "model": spec.name, "source": spec.source, "img_size": spec.img_size,
           "batch": batch, "dtype": "bf16 autocast" if device.type == "cuda" else "fp32",
           "params_m": res.get("params", 0) / 1e6 or None, "gmac_per_image": None if madds is None else madds / 1e9,
           "median_ms": None, "min_ms": None, "max_ms": None, "runs": 0, "images_per_s": None,
           "tflops": None, "peak_mib": None}
    if "error" in res:
        row["error"] = res["error"]
    if res.get("samples"):
        st = summarize(res["samples"])
        row.update(median_ms=st.median_ms, min_ms=st.min_ms, max_ms=st.max_ms, runs=st.runs,
                   images_per_s=batch / (st.median_ms / 1e3))
        if madds:  # a training step is about 3x the forward multiply-adds, 2 FLOPs each
            row["tflops"] = 6 * madds * batch / (st.median_ms / 1e3) / 1e12
    if res.get("peak_bytes") is not None:
        row["peak_mib"] = res["peak_bytes"] / MIB
    return row


def bench_models(device: torch.device, repeats: int = 5, warmup: int = 1, quick: bool = False,
                 batch: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Train-step time and peak memory of every model in MODELS (GPU-only ones on CUDA only), one
    model after the other (their ratios are not interleaved; ``bench_pair_1024`` is)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    batch = batch or (GPU_BATCH if cuda else CPU_BATCH)
    specs = QUICK_MODELS if quick else tuple(s for s in MODELS if cuda or not s.gpu_only)
    rows, method = [], None
    for spec in specs:
        log(f"models: {spec.label} ({spec.name}) at {spec.img_size}, batch {batch}: "
            f"{max(warmup, 1)} warm-up + {repeats} timed steps, then peak memory")
        try:
            res = _time_and_measure(spec, batch, device, repeats, warmup)
        except torch.cuda.OutOfMemoryError as e:  # a GPU too small for this model at this batch
            res = {"error": f"out of memory: {str(e).splitlines()[0]}"}
            torch.cuda.empty_cache()
        method = res.get("method", method)
        rows.append(_row("models", spec, batch, device, res, madds_per_image(spec)))
    return {"part": "models", "rows": rows, "memory_method": method, "batch": batch, "repeats": repeats,
            "warmup": warmup, "quick": quick}


def bench_pair_1024(device: torch.device, repeats: int = 5, warmup: int = 1, quick: bool = False,
                    batch: int | None = None, log: Callable[[str], None] = print) -> dict:
    """BoT50 against R50 at 1024 (Table 1), timed interleaved in this process; memory per model
    in a fresh process on CPU."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    batch = batch or (PAIR_GPU_BATCH if cuda else PAIR_CPU_BATCH)
    specs = QUICK_PAIR if quick else PAIR_1024
    steps, params = {}, {}
    for spec in specs:
        steps[spec.label], model = make_train_step(spec, batch, device)
        params[spec.label] = sum(p.numel() for p in model.parameters())
    log(f"r50-vs-bot50: {' vs '.join(f'{s.label}@{s.img_size}' for s in specs)}, batch {batch}: "
        f"{warmup} warm-up + {repeats} interleaved steps")
    samples = interleaved(steps, repeats, max(warmup, 1), device)
    mem, method = {}, None
    if cuda:
        for label, step in steps.items():
            mem[label], method = peak_memory(step, device)
    del steps
    if not cuda:
        log("r50-vs-bot50: peak memory, a fresh process per model")
        jobs = [_spec_job(s, batch, device) for s in specs]
        for spec, res in zip(specs, run_in_subprocess(jobs)):
            mem[spec.label] = res.get("peak_bytes")
            method = res.get("method", method)
    rows = []
    for spec in specs:
        res = {"params": params[spec.label], "samples": samples[spec.label], "peak_bytes": mem.get(spec.label)}
        rows.append(_row("r50-vs-bot50-1024", spec, batch, device, res, madds_per_image(spec)))
    r50, bot = rows
    ratio = bot["median_ms"] / r50["median_ms"]
    per_rep = sorted(b / r for b, r in zip(samples[specs[1].label], samples[specs[0].label]))
    madds_ratio = (bot["gmac_per_image"] / r50["gmac_per_image"]) if bot["gmac_per_image"] and r50["gmac_per_image"] else None
    return {"part": "r50-vs-bot50-1024", "rows": rows, "ratio": ratio, "ratio_per_rep": per_rep,
            "madds_ratio": madds_ratio, "memory_method": method, "batch": batch, "repeats": repeats,
            "warmup": warmup, "quick": quick}
