"""Faults a long training run meets, handled the same way by every engine.

- ``PreemptionHandler``: SIGTERM / SIGUSR1 (what SLURM, Kubernetes and spot instances send before
  killing a job) and SIGINT set a flag instead of killing the process; the loop checks it at step
  boundaries with ``should_stop``, which agrees across ranks, saves a checkpoint and exits cleanly.
  A watchdog thread, woken by the signal itself (``signal.set_wakeup_fd``, so even while the main
  thread is blocked in C++: joining the process group, a hung collective), ends the process when
  no step boundary comes within ``boundary_grace_s``, after the engine's ``on_stuck`` callback has
  saved the last finished step if it was not saved yet.
- ``NonFiniteGuard``: checks the named loss terms and the gradients of each step before the
  optimizer step; a non-finite step is skipped (up to a budget, for rare bf16/fp16 spikes) or
  stops the run with ``NonFiniteError`` naming the step and the value of every loss term.
- ``ignore_preemption_signals``: a DataLoader ``worker_init_fn`` so that a signal sent to the whole
  process group does not kill the workers before the main process has saved.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ..compat import total_norm
from .distributed import DistInfo, flags_by_rank

__all__ = [
    "PREEMPT_SIGNALS", "STOP_SIGNALS", "PreemptionHandler", "NonFiniteError", "NonFiniteGuard", "nonfinite_tensors",
    "ignore_preemption_signals",
]

log = logging.getLogger("botnet")

PREEMPT_SIGNALS = ("SIGTERM", "SIGUSR1")  # what DataLoader workers ignore (see ignore_preemption_signals)
STOP_SIGNALS = (*PREEMPT_SIGNALS, "SIGINT")  # what PreemptionHandler turns into a stop at the next step
_fork_hook = []  # the installed handlers with a wakeup fd


def _child_after_fork() -> None:  # a forked child (DataLoader worker) must not wake the parent's watchdog
    if _fork_hook:
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:  # forked from another thread than the main one
            pass


def _signals(names: Iterable[str]) -> list[signal.Signals]:
    return [getattr(signal, n) for n in names if hasattr(signal, n)]  # SIGUSR1 does not exist on Windows


class PreemptionHandler:
    """Turn preemption signals into a stop request honoured at the next step boundary.

    Usage::

        with PreemptionHandler() as preempt:
            for batch in loader:
                ...  # forward, backward, optimizer step
                if preempt.should_stop(dist, device):  # a collective under DDP: call it on every rank
                    save_checkpoint(); break

    Signal handlers can only be installed from the main thread; elsewhere (and for signals the
    platform lacks) the handler does nothing but ``request()`` still works. The previous handlers
    are restored on exit. A second signal does not force anything; SIGKILL remains the hard stop.

    Bounded stop: when no step boundary acknowledges a signal within ``boundary_grace_s`` (the main
    thread is blocked, or the step is long), the watchdog waits for a running optimizer step to
    end, calls ``on_stuck()`` (set by the engine: save the last finished step if unsaved; returns a
    note for the message), writes one line to stderr and ends the process with 128 + the signal
    number (``exit_fn``). After an acknowledged signal the orderly stop gets ``shutdown_grace_s``.
    """

    def __init__(self, signals: Iterable[str] = STOP_SIGNALS, boundary_grace_s: float = 5.0,
                 shutdown_grace_s: float = 60.0, exit_fn: Callable[[int], None] = os._exit):
        self.signals = _signals(signals)
        self.signal_name: str | None = None  # the first signal received ("manual" for request())
        self.received_at: float | None = None  # time.monotonic() of that signal
        self.boundary_grace_s, self.shutdown_grace_s, self.exit_fn = boundary_grace_s, shutdown_grace_s, exit_fn
        self.on_stuck: Callable[[], str | None] | None = None
        self._previous: dict = {}
        self._acked, self._closed = threading.Event(), threading.Event()
        self._busy = False  # inside an optimizer step (or after it, before the next boundary)
        self._pipe: tuple[int, int] | None = None
        self._old_wakeup = -1
        self._hook = None
        self._thread: threading.Thread | None = None

    @property
    def requested(self) -> bool:
        """True once this process received a signal (or ``request()`` was called)."""
        return self.signal_name is not None

    def request(self, name: str = "manual") -> None:
        if self.signal_name is None:
            self.signal_name, self.received_at = name, time.monotonic()

    def _handle(self, signum, frame) -> None:  # no logging here: handlers may interrupt a write to stderr
        self.request(signal.Signals(signum).name)

    def install(self) -> "PreemptionHandler":
        if threading.current_thread() is threading.main_thread() and self.signals:
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
            r, w = os.pipe()
            os.set_blocking(w, False)
            self._pipe = (r, w)
            self._old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
            if not _fork_hook:
                os.register_at_fork(after_in_child=_child_after_fork)
            _fork_hook.append(self)
            self._hook = register_optimizer_step_pre_hook(self._optimizer_step)
            self._thread = threading.Thread(target=self._watch, args=(r,), daemon=True, name="botnet-stop-watchdog")
            self._thread.start()
        return self

    def uninstall(self) -> None:
        self._closed.set()
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            _fork_hook.remove(self)
            os.close(self._pipe[1])  # the watchdog reads EOF and ends (it closes the read end)
            self._pipe = None
            self._hook.remove()
            # join it: a daemon thread still alive at interpreter exit can abort the process
            # ("terminate called without an active exception", seen after a detection run)
            self._thread.join(timeout=5.0)
        for s, h in self._previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._previous.clear()

    def _optimizer_step(self, optimizer, args, kwargs) -> None:  # a global optimizer pre-step hook
        self._busy = True

    def _watch(self, fd: int) -> None:
        """The watchdog thread: wait for a stop signal's byte, then bound the time to stop."""
        ours = {int(s): s.name for s in self.signals}
        try:
            while True:
                data = os.read(fd, 64)
                if not data:
                    return
                hit = next((ours[b] for b in data if b in ours), None)
                if hit is not None:
                    self.request(hit)  # the Python-level handler may not run while the main thread is blocked
                    self._bound_stop(hit)
                    return
        finally:
            os.close(fd)

    def _wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` for ``event``; False as soon as the handler is closed (run over)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._closed.is_set():
                return False
            if event.wait(0.05):
                return True
        return event.is_set()

    def _bound_stop(self, name: str) -> None:
        if self._closed.is_set():  # the run is over (the handler was uninstalled): nothing to bound
            return
        if self._wait(self._acked, self.boundary_grace_s):
            if not self._wait(self._closed, self.shutdown_grace_s) and not self._closed.is_set():
                self._force(name, f"the stop after the step boundary took over {self.shutdown_grace_s:g} s")
            return
        end = time.monotonic() + 10.0  # let a running optimizer step (and its bookkeeping) finish
        while self._busy and time.monotonic() < end and not self._acked.is_set():
            time.sleep(0.05)
        if self._acked.is_set():  # the step boundary came after all: the orderly stop goes on
            return self._bound_stop(name)
        if not self._closed.is_set():
            self._force(name, f"no step boundary came within {self.boundary_grace_s:g} s (blocked or between steps)")

    def _force(self, name: str, why: str) -> None:
        note = None
        if self.on_stuck is not None:
            try:
                note = self.on_stuck()
            except Exception as e:  # the exit must happen; say what went wrong
                note = f"saving failed: {type(e).__name__}: {e}"
        sys.stderr.write(f"botnet: stopping on {name}: {why}; exiting now" + (f" ({note})" if note else "") + "\n")
        sys.stderr.flush()
        self.exit_fn(128 + int(getattr(signal, name, signal.SIGTERM)))

    def __enter__(self) -> "PreemptionHandler":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()

    def should_stop(self, dist: DistInfo = DistInfo(), device: torch.device | str | None = None) -> bool:
        """True when this or any other rank has been asked to stop. Under DDP this is an
        all-reduce, so every rank must call it at the same point (each step boundary) and every
        rank gets the same answer: all stop after the same step. ``device``: where the flag
        tensor lives (the GPU for NCCL)."""
        self._busy = False  # a step boundary: the model and optimizer state are those of a finished step
        stop = any(flags_by_rank(self.requested, dist, device))
        if stop:
            self._acked.set()
        return stop


class NonFiniteError(FloatingPointError):
    """A non-finite loss or gradient the run cannot go on from.

    Attributes: ``step`` (the optimizer step, 1-based), ``epoch``, ``terms`` ({loss term: value}),
    ``bad_params`` (names of parameters with non-finite gradients, at most 10), ``ranks`` (the
    ranks that saw it)."""

    def __init__(self, message: str, *, step: int | None = None, epoch: int | None = None,
                 terms: Mapping[str, float] | None = None, bad_params: list[str] | None = None,
                 ranks: list[int] | None = None):
        super().__init__(message)
        self.step, self.epoch = step, epoch
        self.terms = dict(terms or {})
        self.bad_params = list(bad_params or [])
        self.ranks = list(ranks or [])


def nonfinite_tensors(tensors: Mapping | Iterable | nn.Module, prefix: str = "") -> list[str]:
    """Names of floating-point tensors holding NaN or Inf in a (nested) state dict, a list of
    tensors or a module's parameters and buffers."""
    if isinstance(tensors, nn.Module):
        tensors = {**dict(tensors.named_parameters()), **dict(tensors.named_buffers())}
    items = tensors.items() if isinstance(tensors, Mapping) else enumerate(tensors)
    bad = []
    for k, v in items:
        name = f"{prefix}{k}"
        if torch.is_tensor(v):
            if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all()):
                bad.append(name)
        elif isinstance(v, (Mapping, list, tuple)):
            bad += nonfinite_tensors(v, name + ".")
    return bad


def _clean(name: str) -> str:
    for p in ("module.", "_orig_mod."):
        while name.startswith(p):
            name = name[len(p):]
    return name


def _fmt(v: float) -> str:
    return f"{v:.6g}"


class NonFiniteGuard:
    """Skip or stop on non-finite loss terms and gradients, one optimizer step at a time.

    Args:
        max_skips: how many non-finite steps a run may skip (over its whole length) before the
            next one raises ``NonFiniteError``. 0: the first one raises.
        check_grads: also check the gradients (turn off under a GradScaler, which skips steps
            with inf/NaN gradients itself).
        skipped: skips already spent (when resuming; see ``state_dict``).

    Per step::

        guard.begin_step(model)            # before the first forward of the step
        ... forward, backward (all micro-batches) ...
        if guard.check(step, {"loss_classifier": l1, "loss_box_reg": l2}, model, dist=dist, device=dev):
            optimizer.step()
        # else: the gradients were zeroed and the norm buffers restored; do not step

    A skipped step leaves the parameters as they were and, when ``max_skips > 0``, the buffers
    too (BatchNorm running statistics from a poisoned batch are rolled back). On the raising
    path nothing is changed: the caller must not save after it, so the last good checkpoint
    stays the newest.
    """

    def __init__(self, max_skips: int = 0, check_grads: bool = True, skipped: int = 0):
        if max_skips < 0:
            raise ValueError(f"max_skips must be >= 0, got {max_skips}")
        self.max_skips, self.check_grads, self.skipped = max_skips, check_grads, skipped
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: Mapping) -> None:
        self.skipped = int(state.get("skipped", 0))

    def begin_step(self, model: nn.Module) -> None:
        """Snapshot the floating-point buffers (BN statistics) so a skipped step can undo them.
        Does nothing when no skips are allowed."""
        if self.max_skips > 0:
            self._buffers = [(b, b.detach().clone()) for b in model.buffers() if b.is_floating_point()]

    def check(self, step: int, losses: Mapping[str, torch.Tensor | float], model: nn.Module | None = None, *,
              epoch: int | None = None, dist: DistInfo = DistInfo(), device: torch.device | str | None = None) -> bool:
        """Call after backward (and ``GradScaler.unscale_``), before ``optimizer.step()``.

        Args:
            step: the step being taken (1-based), for messages.
            losses: the step's loss terms by name (scalar tensors or floats; e.g. averaged over
                micro-batches). Any non-finite term makes the step non-finite.
            model: whose gradients to check (and zero on a skip); None: losses only.
            dist, device: under DDP the verdict is agreed by an all-reduce (a collective: call on
                every rank at every step), so all ranks skip or stop together.
        Returns True when the step is finite; False when it must be skipped (gradients zeroed).
        Raises ``NonFiniteError`` when it is non-finite and the skip budget is spent.
        """
        terms = {k: (v.detach().float().reshape(()) if torch.is_tensor(v) else torch.tensor(float(v)))
                 for k, v in losses.items()}
        grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None and self.check_grads else []
        local_bad = False
        if terms or grads:
            dev = grads[0].device if grads else next(iter(terms.values())).device
            flags = []
            if terms:
                flags.append(torch.stack([t.to(dev) for t in terms.values()]).isfinite().all())
            if grads:
                # inf-norm (max |g|): NaN and Inf propagate, and it cannot overflow as a 2-norm can
                flags.append(torch.isfinite(total_norm(grads, norm_type=math.inf)).to(dev))
            local_bad = not bool(torch.stack(flags).all())
        by_rank = flags_by_rank(local_bad, dist, device)
        snapshot, self._buffers = self._buffers, None
        if not any(by_rank):
            return True
        ranks = [r for r, f in enumerate(by_rank) if f]
        values = {k: float(t) for k, t in terms.items()}
        bad_params = []  # named only when the loss is finite (a NaN loss makes every gradient NaN)
        if local_bad and model is not None and self.check_grads and all(math.isfinite(v) for v in values.values()):
            bad_params = [_clean(n) for n, p in model.named_parameters()
                          if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        self.skipped += 1
        msg = self._describe(step, epoch, values, bad_params, ranks, dist, local_bad)
        if self.skipped > self.max_skips:
            budget = (f"{self.max_skips} skipped step(s) allowed (run.max_nonfinite_skips) were already used"
                      if self.max_skips else "no skipped steps allowed (run.max_nonfinite_skips=0)")
            raise NonFiniteError(f"{msg}; {budget}", step=step, epoch=epoch, terms=values,
                                 bad_params=bad_params[:10], ranks=ranks)
        if model is not None:
            model.zero_grad(set_to_none=True)
        if snapshot is not None:
            with torch.no_grad():
                for b, saved in snapshot:
                    b.copy_(saved)
        if dist.is_main:
            log.warning("skipping optimizer step: %s (skip %d of %d allowed)", msg, self.skipped, self.max_skips)
        return False

    @staticmethod
    def _describe(step, epoch, values, bad_params, ranks, dist, local_bad) -> str:
        if not local_bad:
            kind = "loss or gradient on another rank"
        else:
            kind = "loss" if any(not math.isfinite(v) for v in values.values()) else "gradient"
        where = f"step {step}" + (f" (epoch {epoch})" if epoch is not None else "")
        msg = f"non-finite {kind} at {where}"
        if values:
            msg += ": loss terms " + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        if bad_params:
            msg += (f"; non-finite gradients in {len(bad_params)} parameter(s): {', '.join(bad_params[:5])}"
                    + (", ..." if len(bad_params) > 5 else ""))
        if dist.enabled:
            msg += f"; seen on rank(s) {', '.join(map(str, ranks))} (this is rank {dist.rank})"
        return msg


def ignore_preemption_signals(worker_id: int | None = None) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGTERM and SIGUSR1.

    Schedulers often signal the whole process group; a worker killed by that signal makes the
    main process fail ("DataLoader worker exited unexpectedly") before it can save. The workers
    still exit when the main process shuts them down or dies."""
    for s in _signals(PREEMPT_SIGNALS):
        signal.signal(s, signal.SIG_IGN)
