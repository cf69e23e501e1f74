"""Process-group helpers for ``torchrun`` (single process when not launched by it).

Failures are bounded in time: every collective (gloo and NCCL) gives up after ``timeout_s`` (the
``run.dist_timeout_s`` of a recipe), and NCCL's asynchronous error handling is on, so a rank whose
peer died or hangs exits with an error instead of waiting forever. ``is_comm_failure`` recognises
the errors that follow, and the engines re-raise them as ``DistributedError``.

Elastic restarts (``torchrun --max-restarts N``). torchrun's agent keeps one TCP store for the
whole job (static and c10d rendezvous alike; ``TORCHELASTIC_USE_AGENT_STORE=True``) and a
restarted round of workers finds the previous round's keys in it: gloo's (and NCCL's) bootstrap
keys carry no round number, so a restarted rank can read the address its dead peer published and
fail in ``connectFullMesh`` with "Connection refused" or a connect timeout (pytorch/pytorch#167288
reports the NCCL form). ``init_distributed`` therefore never bootstraps the process group from the
agent's store: rank 0 starts a fresh store on a port the OS picks, publishes "host:port:nonce"
through the agent's store, and the other ranks connect to the address they read only when that
store answers with the same nonce (a stale address is refused or answers with another nonce, and
they read again). Every round thus bootstraps from an empty store. A rank that cannot join within
``join_timeout_s`` (``BOTNET_DIST_JOIN_TIMEOUT_S``, default min(timeout_s, 120)) raises
``DistributedError`` with a one-line message.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo", "DistributedError", "init_distributed", "all_reduce_sum", "flags_by_rank", "barrier", "cleanup",
    "is_comm_failure", "comm_failures_as_errors", "join_timeout", "fresh_round_store",
]

_ROUND: dict = {}  # this round's bootstrap store, kept until ``cleanup`` (rank 0 hosts it)
LEAVE_TIMEOUT_S = 10.0  # how long rank 0 keeps its store up for the others to leave
JOIN_TIMEOUT_S = 120.0  # the default bound on joining the process group (BOTNET_DIST_JOIN_TIMEOUT_S overrides)
STORE_KEY = "botnet/pg_store"


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


def join_timeout(timeout_s: float) -> float:
    """Seconds a rank may take to join the process group: ``BOTNET_DIST_JOIN_TIMEOUT_S`` or
    min(timeout_s, JOIN_TIMEOUT_S)."""
    env = os.environ.get("BOTNET_DIST_JOIN_TIMEOUT_S")
    if env:
        try:
            value = float(env)
        except ValueError:
            raise ValueError(f"BOTNET_DIST_JOIN_TIMEOUT_S must be a number of seconds, got {env!r}") from None
        if value <= 0:
            raise ValueError(f"BOTNET_DIST_JOIN_TIMEOUT_S must be > 0, got {env!r}")
        return value
    return min(timeout_s, JOIN_TIMEOUT_S)


def _connect(host: str, port: int, world: int, nonce: str, join_s: float) -> dist.Store | None:
    """A client of the store at host:port if it answers with ``nonce``, else None."""
    try:
        store = dist.TCPStore(host, port, world, is_master=False, timeout=datetime.timedelta(seconds=3))
        if store.get("botnet/nonce").decode() == nonce:
            store.set_timeout(datetime.timedelta(seconds=join_s))
            return store
    except (RuntimeError, ValueError):  # DistNetworkError / DistStoreError are RuntimeErrors
        pass
    return None


def fresh_round_store(rank: int, world: int, join_s: float) -> dist.Store:
    """A store for this round's process-group bootstrap, empty of earlier rounds' keys (see the
    module docstring). Needs torchrun's agent store (MASTER_ADDR:MASTER_PORT) to publish it."""
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    deadline = time.monotonic() + join_s
    agent = dist.TCPStore(host, port, world, is_master=False, timeout=datetime.timedelta(seconds=join_s))
    if rank == 0:
        own = dist.TCPStore(host, 0, world, is_master=True, timeout=datetime.timedelta(seconds=join_s),
                            wait_for_workers=False)
        nonce = secrets.token_hex(8)
        own.set("botnet/nonce", nonce)
        agent.set(STORE_KEY, f"{host}:{own.port}:{nonce}")
        return own
    agent.set_timeout(datetime.timedelta(seconds=2))
    while True:
        try:
            h, p, nonce = agent.get(STORE_KEY).decode().rsplit(":", 2)
            store = _connect(h, int(p), world, nonce, join_s)
        except (RuntimeError, ValueError):  # not published yet
            store = None
        if store is not None:
            return store
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 did not publish a live store within {join_s:g} s")
        time.sleep(0.2)


def init_distributed(device_type: str, timeout_s: float = 600.0) -> DistInfo:
    """Join the process group torchrun describes (RANK/WORLD_SIZE/LOCAL_RANK): gloo on CPU; on CUDA,
    NCCL for CUDA tensors and gloo for CPU tensors (``all_reduce_sum`` of metrics works on both).

    ``timeout_s`` bounds every later collective: a rank waiting for a dead or hung peer raises after
    that long. Joining is bounded by ``join_timeout(timeout_s)``; a rank that cannot join raises
    ``DistributedError``. Under torchrun's agent store the group bootstraps from a fresh store of
    its own (``fresh_round_store``), so a restarted round never reads the last round's addresses.
    For NCCL, ``TORCH_NCCL_ASYNC_ERROR_HANDLING`` is set (unless the environment sets it) so that
    the watchdog tears the process down on a timed-out collective.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if timeout_s <= 0:
        raise ValueError(f"the distributed timeout must be > 0 seconds, got {timeout_s}")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    join_s = join_timeout(timeout_s)
    if not dist.is_initialized():
        # on GPUs, NCCL for CUDA tensors and gloo for the small CPU tensors of the metrics and flags
        backend = "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
            torch.cuda.set_device(local)
        t0 = time.monotonic()
        try:
            store = None
            if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
                store = _ROUND["store"] = fresh_round_store(rank, world, join_s)
            dist.init_process_group(backend, store=store, rank=rank if store else -1, world_size=world if store else -1,
                                    timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, TimeoutError) as e:
            lines = str(e).strip().splitlines()
            raise DistributedError(
                f"rank {rank}: could not join the process group of {world} within {join_s:g} s "
                f"(BOTNET_DIST_JOIN_TIMEOUT_S) after {time.monotonic() - t0:.0f} s: "
                f"{lines[0] if lines else type(e).__name__}") from e
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
    """Tear the process group down. With a round store of our own (``fresh_round_store``), rank 0
    hosts it: the other ranks say they left, and rank 0 waits for that (up to LEAVE_TIMEOUT_S) so
    that its store does not vanish under a rank still shutting down (seen as SIGABRT,
    "terminate called without an active exception", in a restarted round's last rank)."""
    store = _ROUND.pop("store", None)
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
    if store is None or not info.enabled:
        return
    try:
        if info.rank != 0:
            store.add("botnet/left", 1)
            return
        end = time.monotonic() + LEAVE_TIMEOUT_S
        while store.add("botnet/left", 0) < info.world_size - 1 and time.monotonic() < end:
            time.sleep(0.05)
    except RuntimeError:  # a rank that died or left already: nothing to wait for
        pass


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
