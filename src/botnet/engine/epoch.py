"""The epoch loop: one pass over the data, micro-batches, gradient accumulation, AMP and the guarded
optimizer step.

``train_one_epoch(model, loss_fn, optimizer, scheduler, loader, device, state, options)`` is the
shape of the torchvision reference scripts' function (its settings in one ``EpochOptions``), with the loss given as a function of
``(model, images, targets)`` returning a dict of loss terms, so every task (classification,
detection, yours) goes through the same code. Dropout, stochastic depth and any sampling inside
the model (detection's proposals) are seeded by each micro-batch's place in the global batch, so
N devices and N accumulation steps draw alike (the sampler deals micro-batch ``a * world + rank``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from torch import nn

from ..models.precision import AMP_DTYPES, precision_context as autocast  # autocast(device, dtype or None)
from .distributed import DistInfo, all_reduce_sum
from .faults import NonFiniteGuard

__all__ = ["RunState", "AMP_DTYPES", "EpochOptions", "autocast", "step_seed", "micro_batch", "optimizer_step",
           "train_one_epoch"]



@dataclass
class RunState:
    epoch: int = 0  # epoch in progress
    step: int = 0  # optimizer steps done in the whole run
    step_in_epoch: int = 0  # optimizer steps done in ``epoch``
    best: float | None = None  # best evaluation score so far

    @property
    def last_epoch(self) -> int:
        """The epoch (0-based) of the last finished step: what step, eval and preemption records
        call ``epoch`` (``epoch`` itself has already moved on at an epoch's end)."""
        return self.epoch - 1 if self.step_in_epoch == 0 and self.epoch > 0 else self.epoch


def step_seed(seed: int, step: int, place: int) -> int:
    """The RNG seed of the micro-batch at ``place`` (micro index x world + rank) of ``step``."""
    return (seed * 7_919 + step * 104_729 + place) % (2**63 - 1)


def micro_batch(batch_size: int, micro: int | None, world: int) -> tuple[int, int]:
    """(micro-batch per device, accumulation steps) for a global ``batch_size`` over ``world`` devices."""
    m = micro or batch_size // world
    if m < 1 or batch_size % (world * m):
        raise ValueError(
            f"optim.batch_size={batch_size} must be a multiple of world_size ({world}) x optim.micro_batch ({m}); "
            f"e.g. optim.micro_batch={max(1, batch_size // world)}"
        )
    return m, batch_size // (world * m)


@dataclass(frozen=True)
class EpochOptions:
    """How ``train_one_epoch`` runs. ``guard`` checks each step's loss terms and gradients before the
    optimizer step (None: a guard that allows no skips); ``on_step(state, terms)`` runs after every
    optimizer step, ``should_stop(state)`` after it (True ends the pass: preemption); ``on_log(record)``
    gets a "step" record every ``log_every`` steps and a "nonfinite" record for each skipped step."""

    accum_steps: int = 1  # micro-batches per optimizer step
    amp_dtype: torch.dtype | None = None  # autocast to this dtype (None: off)
    scaler: torch.amp.GradScaler | None = None  # fp16's loss scaler
    ema: nn.Module | None = None  # an AveragedModel updated after each step
    clip_grad_norm: float | None = None
    seed: int = 0  # the run's seed (dropout and sampling are seeded per micro-batch from it)
    dist: DistInfo = field(default_factory=DistInfo)
    log_every: int = 20
    max_steps: int | None = None  # the pass ends at this step of the run
    guard: NonFiniteGuard | None = None
    on_step: Callable[[RunState, dict], None] | None = None
    on_log: Callable[[dict], None] | None = None
    should_stop: Callable[[RunState], bool] | None = None


@dataclass
class _Step:
    """Sums over the micro-batches of the optimizer step in progress."""

    micro: int = 0
    n: int = 0
    terms: dict = field(default_factory=dict)

    def add(self, terms: dict, total: torch.Tensor) -> None:
        for k, v in terms.items():
            if k != "loss":
                self.terms[k] = self.terms.get(k, 0.0) + float(v.detach())
        self.terms["loss"] = self.terms.get("loss", 0.0) + float(total.detach())
        self.n += 1

    def means(self) -> dict:
        return {k: v / self.n for k, v in self.terms.items()} if self.n else {}


def _step_record(terms: dict, state: RunState, optimizer, n_images: int, t0: float, dist: DistInfo) -> dict:
    """The "step" record: loss terms averaged over ranks, LR, throughput since ``t0``."""
    keys = sorted(terms)
    vec = torch.tensor([terms[k] for k in keys] + [1.0, n_images], dtype=torch.float64)
    all_reduce_sum(vec, dist)
    dt = time.perf_counter() - t0
    return {"kind": "step", "step": state.step, "epoch": state.epoch, **{k: float(vec[i] / vec[-2]) for i, k in enumerate(keys)},
            "lr": optimizer.param_groups[0]["lr"], "images_per_s": float(vec[-1]) / max(dt, 1e-9)}


class _Epoch:
    """The state of one ``train_one_epoch`` pass; ``micro_batch`` runs one forward/backward,
    ``finish_step`` the optimizer step and what follows it."""

    def __init__(self, model, loss_fn, optimizer, scheduler, device, state: RunState, options: EpochOptions):
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, loss_fn, optimizer, scheduler
        self.device, self.state, self.o = device, state, options
        self.dist: DistInfo = options.dist
        self.guard: NonFiniteGuard = options.guard
        self.step, self.skipped, self.stopped = _Step(), 0, False
        self.epoch_loss = torch.zeros(2, dtype=torch.float64)
        self.t0, self.window = time.perf_counter(), 0
        self.bar = None

    def micro_batch(self, images, targets, n_skip: int) -> bool:
        """Forward and backward of one micro-batch; True when it was the step's last."""
        o, st, step = self.o, self.state, self.step
        self.skipped += n_skip
        torch.manual_seed(step_seed(o.seed, st.step, step.micro * self.dist.world_size + self.dist.rank))
        if step.micro == 0:
            self.guard.begin_step(self.model)
        last = step.micro == o.accum_steps - 1
        if len(images):
            model = self.model
            sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with autocast(self.device, o.amp_dtype):
                    terms = self.loss_fn(model, images, targets)
                total = sum(terms.values())
                scaled = total / o.accum_steps
                (o.scaler.scale(scaled) if o.scaler is not None else scaled).backward()
            step.add(terms, total)
            self.window += len(images)
        elif last and self.dist.enabled:
            raise _empty_micro_batch_error(self.dist, st.step + 1, n_skip)
        step.micro += 1
        return last

    def finish_step(self) -> bool:
        """The optimizer step, its records and hooks; True when the pass must end."""
        o, st = self.o, self.state
        terms, n = self.step.means(), self.step.n
        finite = optimizer_step(self.model, self.optimizer, self.scheduler, self.guard, terms, st.step + 1,
                                epoch=st.epoch, dist=self.dist, device=self.device, scaler=o.scaler,
                                clip_grad_norm=o.clip_grad_norm, ema=o.ema)
        st.step += 1
        st.step_in_epoch += 1
        self.step = _Step()
        last_step = bool(o.max_steps and st.step >= o.max_steps)
        if finite:
            self.epoch_loss += torch.tensor([terms.get("loss", 0.0) * n, n], dtype=torch.float64)
            if st.step % o.log_every == 0 or last_step:
                self._log(_step_record(terms, st, self.optimizer, self.window, self.t0, self.dist))
                self.t0, self.window = time.perf_counter(), 0
        else:
            self._log({"kind": "nonfinite", "step": st.step, "epoch": st.epoch, "skips": self.guard.skipped,
                       "terms": {k: repr(float(v)) for k, v in terms.items()}})
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{terms.get('loss', 0.0):.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.3g}")
        if o.on_step is not None:
            o.on_step(st, terms if finite else {})
        if o.should_stop is not None and o.should_stop(st):
            self.stopped = True
            return True
        return last_step

    def _log(self, rec: dict) -> None:
        if self.o.on_log is not None:
            self.o.on_log(rec)


def train_one_epoch(model, loss_fn, optimizer, scheduler, loader, device, state: RunState,
                    options: EpochOptions = EpochOptions()) -> dict:
    """One pass over ``loader`` (this rank's micro-batches ``(images, targets, n_skipped)``,
    ``options.accum_steps`` per optimizer step); ``loss_fn(model, images, targets)`` -> {name: loss}.

    A non-finite step (``options.guard``) is skipped (parameters unchanged, the step still counts)
    or raises ``NonFiniteError``. Returns the epoch's mean loss (skipped steps left out), the number
    of unreadable samples skipped, and ``stopped`` (``options.should_stop`` ended the pass)."""
    if options.guard is None:
        options = replace(options, guard=NonFiniteGuard(0, check_grads=options.scaler is None))
    accum_steps = options.accum_steps
    dist = options.dist
    run = _Epoch(model, loss_fn, optimizer, scheduler, device, state, options)
    model.train()
    if dist.is_main and sys.stderr.isatty():
        from tqdm import tqdm

        run.bar = tqdm(total=state.step_in_epoch + len(loader) // accum_steps, initial=state.step_in_epoch,
                       desc=f"epoch {state.epoch}", leave=False, dynamic_ncols=True)
    optimizer.zero_grad(set_to_none=True)
    for images, targets, n_skip in loader:
        if run.micro_batch(images, targets, n_skip) and run.finish_step():
            break
    if run.bar is not None:
        run.bar.close()
    all_reduce_sum(run.epoch_loss, dist)
    loss = float(run.epoch_loss[0] / max(run.epoch_loss[1], 1))
    return {"loss": loss, "skipped_images": run.skipped, "stopped": run.stopped}


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


def _empty_micro_batch_error(dist: DistInfo, step: int, n_skipped: int) -> RuntimeError:
    """The error for a rank whose last micro-batch of ``step`` had no readable image under DDP."""
    return RuntimeError(
        f"rank {dist.rank}: every image of its last micro-batch of step {step} was unreadable "
        f"({n_skipped} skipped), so it cannot join the gradient all-reduce of DDP; remove the unreadable files "
        "named in the warnings above")
