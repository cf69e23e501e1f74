"""Benchmarks of BoTNet (arXiv:2101.11605): the MHSA layer against timm and lucidrains, whole-model
train steps (Tables 1 and 14), and the docs/benchmarks.md writer.

Parts (``run_parts``; ``python benchmarks/run.py PART ...``):

- ``mhsa``: the layer alone at 8x14², 1x32², 1x64² (512 channels, 4 heads), ours with every kernel
  against the two public implementations, same weights, timed interleaved in one process;
- ``models``: forward + backward + SGD step of R50, BoT50, BoT-S1-50, T3-T7, SE-ResNets (and, on a
  GPU, EfficientNet-B0..B7 from timm) at their resolutions;
- ``r50-vs-bot50-1024``: BoT50 against R50 at 1024, timed interleaved (Table 1: 1.31x on TPU);
- ``vs-timm``: timm's BoTNet family built by timm and by us on the same (perturbed) weights,
  inference at batch 1 and 16 and a train step at batch 8, interleaved (issue 22);
- ``compile``: eager against ``torch.compile`` inference (static, and static with the batch axis
  dynamic), compile times, and a bounded ``dynamic=True`` attempt, on the CPU (issue 22).

On CUDA everything runs under bf16 autocast and is timed with CUDA events; on CPU in float32 with
``time.perf_counter``. timm and bottleneck-transformer-pytorch come with the ``bench`` extra.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import torch

from .report import machine_info, render_part, targets, write_doc

__all__ = ["PARTS", "DEFAULTS", "resolve_device", "run_part", "run_parts", "render_part", "targets", "write_doc",
           "machine_info"]

PARTS = ("mhsa", "models", "r50-vs-bot50-1024", "vs-timm", "compile")
# (repeats, warmup) per part; --quick: (3, 1)
DEFAULTS = {"mhsa": (5, 2), "models": (5, 1), "r50-vs-bot50-1024": (5, 1), "vs-timm": (7, 1), "compile": (5, 1)}
QUICK = (3, 1)


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its finished
    children) now; None where /proc/stat is missing. Steal time counts as busy (another VM)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(v[:3]) + sum(v[5:8])  # user nice system (idle iowait) irq softirq steal
    t = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system + t.children_user + t.children_system


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return device


def run_part(part: str, device: torch.device, repeats: int | None = None, warmup: int | None = None,
             quick: bool = False, batch: int | None = None, command: str = "",
             log: Callable[[str], None] = print, models: list[str] | None = None) -> dict:
    """Run one part (``models``: the vs-timm part's models, default all); the result dict has "rows", the machine, the command, the seconds taken."""
    if part not in PARTS:
        raise ValueError(f"unknown benchmark part {part!r}; expected one of {', '.join(PARTS)}")
    r0, w0 = QUICK if quick else DEFAULTS[part]
    repeats = r0 if repeats is None else repeats
    warmup = w0 if warmup is None else warmup
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    machine = machine_info(device)
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    if part == "mhsa":
        from .mhsa import bench_mhsa

        res = bench_mhsa(device, repeats, warmup, quick, log=log)
    elif part == "models":
        from .models import bench_models

        res = bench_models(device, repeats, warmup, quick, batch, log=log)
    elif part == "vs-timm":
        from .vs_timm import bench_vs_timm

        res = bench_vs_timm(device, repeats, warmup, quick, log=log, **({"models": tuple(models)} if models else {}))
    elif part == "compile":
        from .compiled import bench_compile

        res = bench_compile(device, repeats, warmup, quick, log=log)
    else:
        from .models import bench_pair_1024

        res = bench_pair_1024(device, repeats, warmup, quick, None, log=log)
    seconds, cpu1 = time.perf_counter() - t0, _cpu_seconds()
    # CPU time the rest of the machine used meanwhile, in cores: the load this run competed with
    others = None if cpu0 is None or cpu1 is None else max(0.0, ((cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])) / seconds)
    res.update(machine=machine, command=command, seconds=seconds, load1_end=os.getloadavg()[0], other_cores=others)
    return res


def run_parts(parts: list[str] | tuple[str, ...] = PARTS, device: str | torch.device = "auto", **kwargs) -> dict[str, dict]:
    """Run ``parts`` in order: {part: result} (see ``run_part`` for the keyword arguments)."""
    device = resolve_device(device) if isinstance(device, str) else device
    return {p: run_part(p, device, **kwargs) for p in parts}
