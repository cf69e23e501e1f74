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

from ..checkpoint import Checkpoint, checkpoint_of, load_checkpoint
from .checkpoint import CheckpointManager, set_rng_state
from .distributed import DistInfo
from .faults import NonFiniteGuard
from .metrics import MetricsLogger, drop_torn_jsonl_tail

__all__ = ["RESUME_KEYS", "find_resume", "missing_resume_keys", "open_run_folder", "restore"]

RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "step_in_epoch", "rng")  # what restore needs


def missing_resume_keys(ckpt: Checkpoint) -> list[str]:
    """The entries of ``RESUME_KEYS`` that a training checkpoint lacks (a file cut down to weights)."""
    return [k for k in RESUME_KEYS if ckpt.get(k) is None]


def find_resume(resume: str | None, manager: CheckpointManager, dist: DistInfo, log: logging.Logger,
                what: str = "run") -> tuple[Path | None, Checkpoint | None]:
    """(path, checkpoint) to continue from: ``resume`` is a path, "auto" (the newest valid checkpoint of
    the run folder, or none) or None (a new run; a folder that already holds one is an error). The
    caller checks that the checkpoint is a training checkpoint of its task and model."""
    ckpt = path = None
    if resume == "auto":
        found = manager.latest_valid()
        if found is None:
            log.info("--resume auto: no checkpoint in %s, starting a new %s", manager.folder, what)
        else:
            path, content = found
            ckpt = checkpoint_of(content, path)
    elif resume:
        path = Path(resume)
        ckpt = checkpoint_of(load_checkpoint(path), path)
    elif manager.has_checkpoint():
        raise ValueError(f"{manager.folder} already holds a run (last.pt); pass --resume auto to continue it or choose another --output")
    if ckpt is not None and ckpt.kind == "train" and dist.enabled:  # every rank must continue from the same step
        steps = torch.tensor([ckpt.step, -ckpt.step], dtype=torch.float64)
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


def restore(ckpt: Checkpoint, model: nn.Module, optimizer, scheduler, scaler, guard: NonFiniteGuard, ema=None) -> None:
    """Load a training checkpoint's model, optimizer, scheduler, scaler, EMA, RNG and guard state
    (the entries ``Trainer.checkpoint`` writes and ``RESUME_KEYS`` requires)."""
    model.load_state_dict(ckpt.model_state())
    optimizer.load_state_dict(ckpt.get("optimizer"))
    scheduler.load_state_dict(ckpt.get("scheduler"))
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt.get("scaler"))
    if ema is not None and ckpt.get("ema"):
        ema.load_state_dict(ckpt.get("ema"))
    set_rng_state(ckpt.get("rng"))
    guard.load_state_dict(ckpt.get("nonfinite") or {})
