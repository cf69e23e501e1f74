"""Process-group helpers for ``torchrun`` (single process when not launched by it).

Failures are bounded in time: every collective (gloo and NCCL) gives up after ``timeout_s`` (the
``run.dist_timeout_s`` of a recipe), and NCCL's asynchronous error handling is on, so a rank whose
peer died or hangs exits with an error instead of waiting forever. ``is_comm_failure`` recognises
the errors that follow, and the engines re-raise them as ``DistributedError``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo", "DistributedError", "init_distributed", "all_reduce_sum", "flags_by_rank", "barrier", "cleanup",
    "is_comm_failure", "comm_failures_as_errors",
]


class DistributedError(RuntimeError):
    """A collective failed: another rank died, or did not answer within the timeout."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str, timeout_s: float = 600.0) -> DistInfo:
    """Join the process group torchrun describes (RANK/WORLD_SIZE/LOCAL_RANK): gloo on CPU; on CUDA,
    NCCL for CUDA tensors and gloo for CPU tensors (``all_reduce_sum`` of metrics works on both).

    ``timeout_s`` bounds the rendezvous and every later collective: a rank waiting for a dead or
    hung peer raises after that long. For NCCL, ``TORCH_NCCL_ASYNC_ERROR_HANDLING`` is set (unless
    the environment sets it) so that the watchdog tears the process down on a timed-out collective.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if timeout_s <= 0:
        raise ValueError(f"the distributed timeout must be > 0 seconds, got {timeout_s}")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        # on GPUs, NCCL for CUDA tensors and gloo for the small CPU tensors of the metrics and flags
        backend = "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def flags_by_rank(flag: bool, info: DistInfo, device: torch.device | str | None = None) -> list[bool]:
    """Every rank's ``flag``, as a list indexed by rank (one all-reduce; a collective under DDP:
    every rank must call it at the same point). ``device``: where the exchange tensor lives (the
    rank's GPU for NCCL, the CPU for gloo)."""
    if not info.enabled:
        return [bool(flag)]
    t = torch.zeros(info.world_size, dtype=torch.float32, device=device)
    t[info.rank] = 1.0 if flag else 0.0
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [bool(v) for v in t.cpu().tolist()]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


_COMM_MARKERS = ("gloo", "nccl", "connection reset", "connection closed", "connection refused", "broken pipe",
                 "timed out waiting", "collective operation timeout", "watchdog")


def is_comm_failure(e: BaseException) -> bool:
    """True for the errors a failed collective raises (gloo raises plain RuntimeErrors)."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(m in text for m in _COMM_MARKERS)


@contextlib.contextmanager
def comm_failures_as_errors(info: DistInfo, timeout_s: float, what: str = "run.dist_timeout_s"):
    """Re-raise a failed collective inside the block as ``DistributedError`` with a one-line message
    naming this rank and the timeout (``what``: the config key that sets it). Other errors pass."""
    try:
        yield
    except RuntimeError as e:
        if info.enabled and not isinstance(e, DistributedError) and is_comm_failure(e):
            lines = str(e).strip().splitlines()
            raise DistributedError(
                f"rank {info.rank}: a collective with the other ranks failed: another rank died, or did not answer "
                f"within {what}={timeout_s:g} s ({lines[0] if lines else type(e).__name__})") from e
        raise
