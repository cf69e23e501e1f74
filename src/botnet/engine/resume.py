"""Continuing a run: which checkpoint, the run folder's state, and the training state restored.

``find_resume`` picks the checkpoint a run continues from (and checks every rank agrees),
``open_run_folder`` tidies the run folder of a resumed run, ``restore`` loads a checkpoint's model,
optimizer, scheduler, scaler, EMA, RNG and non-finite guard state.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointManager, load_checkpoint, set_rng_state
from .distributed import DistInfo
from .faults import NonFiniteGuard
from .metrics import MetricsLogger, drop_torn_jsonl_tail

__all__ = ["find_resume", "open_run_folder", "restore"]


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
