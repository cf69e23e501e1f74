"""Timing and peak-memory measurement shared by the benchmark parts.

Timing: ``interleaved`` runs every implementation once per repetition, in an order rotated from one
repetition to the next, so a change in machine load during the run hits all of them alike. CPU
calls are timed with ``time.perf_counter``; CUDA calls with CUDA events around the call, synchronised
at the end event.

Peak memory, growth over the state just before the call (inputs, weights and optimizer state are
not counted; everything the call allocates is, gradients included):

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
  ``memory_allocated`` before the call (bytes held by live tensors, not the caching allocator's
  reserve);
- CPU: resident set size. Freed heap memory is returned to the system (``malloc_trim``), the
  kernel's peak-RSS mark is reset (``/proc/self/clear_refs``, "5"), the call runs, and the peak is
  ``VmHWM`` minus the ``VmRSS`` read just before. torch's CPU allocator has no cache, so this is
  what the tensors of the call touched, plus allocator and library scratch. Each measurement runs
  in a fresh process (``suite.worker``) after one warm-up call, so one-time allocations
  (thread pools, oneDNN/MKL buffers) are in the baseline, with glibc's mmap threshold fixed at
  64 KiB (``MALLOC_MMAP_THRESHOLD_``): every tensor but the smallest gets its own mapping, returned
  to the system when freed, so the RSS follows the live tensors instead of the heap's high-water
  mark (repeated runs then agree within about 1%; with glibc's adaptive threshold they varied by 10-20%).
"""

from __future__ import annotations

import ctypes
import gc
import re
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["Stats", "time_call", "interleaved", "summarize", "peak_memory", "MIB"]

MIB = 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes (CUDA: between events recorded around it)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device,
                min_seconds: float = 0.0, max_repeats: int | None = None) -> dict[str, list[float]]:
    """Time every function ``repeats`` times after ``warmup`` untimed calls each.

    Repetition r calls the functions in their order rotated by r, so none is always first (after a
    pause) or last. Cheap functions get more repetitions: they go on until the timed calls have
    taken ``min_seconds`` in all, up to ``max_repeats`` (default 4 x ``repeats``).
    Returns seconds per call: {name: [t_0, t_1, ...]}.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    sync(device)
    samples: dict[str, list[float]] = {n: [] for n in names}
    max_repeats = max(repeats, 4 * repeats if max_repeats is None else max_repeats)
    r, total = 0, 0.0
    while r < repeats or (total < min_seconds and r < max_repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t = time_call(fns[n], device)
            samples[n].append(t)
            total += t
        r += 1
    return samples


@dataclass
class Stats:
    """Summary of one implementation's samples, in milliseconds."""

    median_ms: float
    min_ms: float
    max_ms: float
    runs: int


def summarize(samples: list[float]) -> Stats:
    ms = [1e3 * s for s in samples]
    return Stats(statistics.median(ms), min(ms), max(ms), len(ms))


# ------------------------------------------------------------------------------------------------
# peak memory

def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
    if m is None:
        raise OSError(f"{key} not in /proc/self/status")
    return int(m.group(1))


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[int, str]:
    """(bytes, method): peak memory one call of ``fn`` adds over the state before it.

    ``fn`` must not keep its results alive. On CPU the answer is only meaningful in a process that
    has already run ``fn`` once and holds nothing else large (see the module docstring).
    """
    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base, "cuda max_memory_allocated"
    _malloc_trim()
    base = _proc_status_kib("VmRSS")
    if _reset_peak_rss():
        fn()
        return (_proc_status_kib("VmHWM") - base) * 1024, "peak RSS (VmHWM reset) - RSS before"
    # No clear_refs: the process peak, valid when nothing earlier in the process peaked higher.
    import resource

    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024, "ru_maxrss - RSS before"
