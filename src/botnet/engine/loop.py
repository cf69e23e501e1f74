"""Pieces of the training loop (``botnet.engine.trainer``).

``find_resume`` picks the checkpoint a run continues from (and checks every rank agrees),
``open_run_folder`` tidies the run folder of a resumed run, ``optimizer_step`` is one guarded
optimizer step (non-finite check, clipping, AMP scaler, scheduler).
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointManager, load_checkpoint, set_rng_state
from .distributed import DistInfo, barrier, cleanup, comm_failures_as_errors, init_distributed
from .faults import NonFiniteGuard, PreemptionHandler
from .metrics import MetricsLogger, drop_torn_jsonl_tail

__all__ = ["resolve_device", "find_resume", "open_run_folder", "optimizer_step", "launch", "restore", "wrap", "empty_micro_batch_error",
           "stop_for_preemption"]


def resolve_device(name: str | torch.device) -> torch.device:
    """"auto": CUDA when available, else CPU; other names as torch.device (CUDA must exist)."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r} asked for but no CUDA device is available")
    return dev


def find_resume(resume: str | None, manager: CheckpointManager, dist: DistInfo, log: logging.Logger,
                what: str = "run") -> tuple[Path | None, dict | None]:
    """(path, checkpoint) to continue from: ``resume`` is a path, "auto" (the newest valid checkpoint of
    the run folder, or none) or None (a new run; a folder that already holds one is an error)."""
    ckpt = path = None
    if resume == "auto":
        found = manager.latest_valid()
        if found is None:
            log.info("--resume auto: no checkpoint in %s, starting a new %s", manager.folder, what)
        else:
            path, ckpt = found
    elif resume:
        path = Path(resume)
        ckpt = load_checkpoint(path)
    elif manager.has_checkpoint():
        raise ValueError(f"{manager.folder} already holds a run (last.pt); pass --resume auto to continue it or choose another --output")
    if ckpt is not None and dist.enabled:  # every rank must continue from the same step
        steps = torch.tensor([ckpt["step"], -ckpt["step"]], dtype=torch.float64)
        torch.distributed.all_reduce(steps, op=torch.distributed.ReduceOp.MAX)
        if steps[0] != -steps[1]:
            raise ValueError(f"the ranks found different checkpoints to resume from (steps {int(-steps[1])} to "
                             f"{int(steps[0])}); is {manager.folder} on a file system every node sees?")
    return path, ckpt


def open_run_folder(out: Path, manager: CheckpointManager, logger: MetricsLogger, resumed_step: int | None,
                    log: logging.Logger) -> None:
    """On rank 0 before training: remove stale temp files; when resuming from ``resumed_step``, set
    newer checkpoints aside and cut the metrics back to that step."""
    out.mkdir(parents=True, exist_ok=True)
    manager.remove_stale_tmp()
    if resumed_step is None:
        return
    for retired in manager.retire_newer(resumed_step):
        log.warning("set aside %s: newer than the checkpoint this run resumes from", retired)
    if drop_torn_jsonl_tail(out / "metrics.jsonl"):
        log.warning("metrics.jsonl ended in a partial line (the run was killed while writing it); removed it")
    logger.truncate_after(resumed_step)


def optimizer_step(model: nn.Module, optimizer, scheduler, guard: NonFiniteGuard, terms: dict, step: int, *, epoch: int,
                   dist: DistInfo, device, scaler=None, clip_grad_norm=None, ema=None) -> bool:
    """Finish step ``step`` (1-based) after its backward passes: check ``terms`` and the gradients
    with ``guard``, then clip, step (through ``scaler``), update ``ema``; the scheduler always
    advances and the gradients are cleared. Returns False for a skipped non-finite step (raises
    ``NonFiniteError`` past the guard's budget)."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    finite = guard.check(step, terms, model, epoch=epoch, dist=dist, device=device)
    if finite:
        if clip_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if ema is not None:
            ema.update_parameters(model.module if hasattr(model, "module") else model)
    elif scaler is not None:
        scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return finite


def launch(run_cfg, body):
    """Run ``body(device, dist, preempt)`` on the device ``run_cfg.device`` names, inside the process
    group torchrun describes (timeout ``run_cfg.dist_timeout_s``) and a preemption handler; failed
    collectives become ``DistributedError``; the group is torn down afterwards."""
    device = resolve_device(run_cfg.device)
    with PreemptionHandler() as preempt:
        dist = init_distributed(device.type, run_cfg.dist_timeout_s)
        if device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        try:
            with comm_failures_as_errors(dist, run_cfg.dist_timeout_s):
                return body(device, dist, preempt)
        finally:
            if dist.enabled:
                gc.collect()  # wrappers that still hold the group (cycles) go now, while the interpreter is whole
            cleanup(dist)


def restore(ckpt: dict, model: nn.Module, optimizer, scheduler, scaler, guard: NonFiniteGuard, ema=None) -> None:
    """Load a training checkpoint's model, optimizer, scheduler, scaler, EMA, RNG and guard state."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if ema is not None and ckpt.get("ema"):
        ema.load_state_dict(ckpt["ema"])
    set_rng_state(ckpt["rng"])
    guard.load_state_dict(ckpt.get("nonfinite") or {})


def wrap(model: nn.Module, dist: DistInfo, device, compile: bool = False) -> nn.Module:
    """DDP when distributed, then ``torch.compile`` when asked."""
    net = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if compile else net


def empty_micro_batch_error(dist: DistInfo, step: int, n_skipped: int) -> RuntimeError:
    """The error for a rank whose last micro-batch of ``step`` had no readable image under DDP."""
    return RuntimeError(
        f"rank {dist.rank}: every image of its last micro-batch of step {step} was unreadable "
        f"({n_skipped} skipped), so it cannot join the gradient all-reduce of DDP; remove the unreadable files "
        "named in the warnings above")


def stop_for_preemption(save, saved: dict, state, dist: DistInfo, preempt, logger: MetricsLogger,
                        log: logging.Logger) -> dict:
    """After a preemption signal: checkpoint this step (unless ``saved["step"]`` already is it), wait
    for every rank, log it; returns the run's result record ``{"kind": "preempted", ...}``."""
    if saved["step"] != state.step:
        save()
    barrier(dist)
    signame = preempt.signal_name or "a signal to another rank"
    logger.log({"kind": "preempted", "step": state.step, "epoch": state.last_epoch, "signal": signame})
    if dist.is_main:
        log.warning("stopped by %s after step %d (epoch %d): checkpoint %s; continue with --resume auto",
                    signame, state.step, state.last_epoch, saved["path"])
    return {"kind": "preempted", "preempted": True, "step": state.step, "epoch": state.last_epoch, "signal": signame,
            "checkpoint": str(saved["path"])}
