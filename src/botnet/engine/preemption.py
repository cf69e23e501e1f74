"""A run's newest checkpoint and what a preemption does with it: one object, owned by the ``Trainer``.

``Preemption(handler, dist, state, save)`` keeps the step and path of the last checkpoint written
(``saved(step, path)``, called by the trainer's ``save``); the loop asks ``requested(device)`` at
step boundaries (the handler's flag, agreed over ranks) and ends the run with ``stop(logger, log)``;
the handler's watchdog calls ``on_stuck`` when no step boundary comes; the errors that end a run
name ``last_good()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from .distributed import DistInfo, barrier
from .faults import PreemptionHandler
from .metrics import MetricsLogger

__all__ = ["Preemption"]


class Preemption:
    """``handler``: the run's ``PreemptionHandler``; ``state``: its ``RunState`` (``step``: the last
    finished step, ``last_epoch``); ``save()``: write a checkpoint of this step (it reports back
    with ``saved``); ``step`` / ``path``: the checkpoint the run resumed from, if any."""

    def __init__(self, handler: PreemptionHandler, dist: DistInfo, state, save: Callable[[], object],
                 step: int | None = None, path: Path | None = None):
        self.handler, self.dist, self.state, self.save = handler, dist, state, save
        self.step, self.path = step, path

    def saved(self, step: int, path: Path) -> None:
        """Step ``step`` is checkpointed at ``path``."""
        self.step, self.path = step, path

    def last_good(self) -> str:
        """The newest checkpoint's path, for the message of an error that ends the run."""
        return str(self.path) if self.path else "none (no checkpoint was written yet)"

    def requested(self, device: torch.device) -> bool:
        """A stop signal reached any rank (every rank gets the same answer; a collective under DDP)."""
        return self.handler.should_stop(self.dist, device)

    def on_stuck(self) -> str:
        """The handler's ``on_stuck``: save the last finished step unless it is saved; say what happened."""
        if self.step == self.state.step:
            return f"step {self.state.step} was already saved"
        self.save()
        return f"saved step {self.state.step}: {self.path}"

    def stop(self, logger: MetricsLogger, log: logging.Logger) -> dict:
        """After a stop signal: checkpoint this step (unless saved), wait for every rank, log it;
        returns the run's result record ``{"kind": "preempted", ...}``."""
        st = self.state
        if self.step != st.step:
            self.save()
        barrier(self.dist)
        signame = self.handler.signal_name or "a signal to another rank"
        logger.log({"kind": "preempted", "step": st.step, "epoch": st.last_epoch, "signal": signame})
        if self.dist.is_main:
            log.warning("stopped by %s after step %d (epoch %d): checkpoint %s; continue with --resume auto",
                        signame, st.step, st.last_epoch, self.path)
        return {"kind": "preempted", "preempted": True, "step": st.step, "epoch": st.last_epoch, "signal": signame,
                "checkpoint": str(self.path)}
