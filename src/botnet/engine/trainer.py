"""The training loop every task goes through (detectron2's trainer with hooks, torchvision's
``train_one_epoch`` inside).

``Trainer(task, resume, callbacks).fit()`` runs a whole job: under torchrun it joins the process
group (DDP, ``run.dist_timeout_s``), locks the run folder (``botnet.engine.runlock``: one run per
folder; a killed run's lock is taken over), resumes (``--resume auto``: the newest valid checkpoint),
deals global batches with ``GlobalBatchSampler`` (the same batches whatever the number of devices
and accumulation steps), accumulates micro-batches, autocasts (``run.amp``), guards against
non-finite losses and gradients, keeps an EMA (``run.ema``), writes atomic checksummed step
checkpoints, ``last.pt`` and ``best.pt`` (the task's ``best_metric``), stops cleanly on
SIGTERM/SIGUSR1 after checkpointing, logs JSONL/TensorBoard, and evaluates on the schedule
(``run.eval_every`` epochs, ``run.eval_every_steps`` steps, and at the end). The ``Task``
(``botnet.engine.task``) gives the model, the data, the loss terms and the evaluation.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..checkpoint import FORMAT_VERSION, Checkpoint, DiskFullError, disk_full_error, is_disk_full, save_atomic
from ..config import config_to_dict, save_config
from .checkpoint import CheckpointManager, rng_state
from .distributed import DistInfo, barrier, flags_by_rank
from .epoch import AMP_DTYPES, EpochOptions, RunState, micro_batch, train_one_epoch
from .faults import NonFiniteError, NonFiniteGuard, PreemptionHandler, ignore_preemption_signals
from .launch import launch, to_channels_last, wrap
from .metrics import MetricsLogger, get_logger
from .optim import describe_schedule
from .preemption import Preemption
from .resume import find_resume, missing_resume_keys, open_run_folder, restore
from .runlock import RunFolderBusy, RunFolderLock, describe_holder
from .sampler import GlobalBatchSampler, SeededDataset, shard_indices
from .task import Callback, Task, TaskData

__all__ = ["Trainer", "fit", "eval_loader"]



def eval_loader(ds, dist: DistInfo, batch: int, workers: int, collate, pin: bool = False,
                max_images: int | None = None) -> DataLoader:
    """This rank's shard of the first ``max_images`` (None: all) samples of ``ds``, in order."""
    n = len(ds) if max_images is None else min(max_images, len(ds))
    shard = Subset(ds, shard_indices(n, dist.world_size, dist.rank))
    return DataLoader(shard, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate, pin_memory=pin)


def fit(task: Task, resume: str | None = None, callbacks: Sequence[Callback] = ()) -> dict:
    """``Trainer(task, resume, callbacks).fit()``."""
    return Trainer(task, resume, callbacks).fit()


class Trainer:
    """Runs ``task``. ``resume``: a checkpoint path, "auto" (the newest valid checkpoint of the
    output folder, if any) or None (a new run; a folder that holds one is an error).

    ``fit()`` returns the final evaluation record, or ``{"kind": "preempted", "preempted": True,
    "step", "epoch", "signal", "checkpoint"}`` when SIGTERM/SIGUSR1 stopped the run (after saving).
    Raises before any training ``ValueError`` / ``FileNotFoundError`` for a bad setup
    (``CheckpointError`` for a damaged checkpoint); during training ``NonFiniteError`` when the loss
    or gradients stay non-finite (nothing is saved after the last good checkpoint),
    ``DistributedError`` when another rank died or hung for ``run.dist_timeout_s``, and
    ``DiskFullError`` (an OSError) when the disk fills up, naming the last good checkpoint (the
    ones written before stay intact). ``RunFolderBusy`` (a ValueError) when another live run holds
    the output folder."""

    def __init__(self, task: Task, resume: str | None = None, callbacks: Sequence[Callback] = ()):
        self.task, self.cfg, self.resume, self.callbacks = task, task.cfg, resume, list(callbacks)
        self.log = get_logger()
        self.state = RunState()

    def fit(self) -> dict:
        self.task.check()
        return launch(self.cfg.run, self._run)

    # -- setup ---------------------------------------------------------------------------------
    def _run(self, device: torch.device, dist: DistInfo, preempt: PreemptionHandler) -> dict:
        self.device, self.dist, self.preempt = device, dist, preempt
        self.out = Path(self.cfg.run.output or f"runs/{self.cfg.name}")
        lock = self._lock_folder()
        try:
            self._setup()
        except BaseException:
            if lock is not None:
                lock.release(remove_empty_folder=True)  # a run that never started leaves nothing behind
            raise
        try:
            return self._train()
        finally:
            if lock is not None:
                lock.release()
            self._let_go_of_the_process_group()

    def _let_go_of_the_process_group(self) -> None:
        """Drop the DDP wrapper (its reducer holds the process group) and the preemption callback
        (a cycle through ``self.save``), so that both die before ``launch`` tears the group down,
        not at interpreter exit: a gloo group's last users destroyed during finalization abort the
        process ("terminate called without an active exception", seen on the rank of a preempted
        2-rank run in CI)."""
        self.preempt.on_stuck = None
        if getattr(self, "raw_model", None) is not None:
            self.model = self.raw_model

    def _lock_folder(self) -> RunFolderLock | None:
        """Rank 0 takes the run folder's lock (``botnet.engine.runlock``); every rank learns whether it got it."""
        lock, error = None, None
        if self.dist.is_main:
            lock = RunFolderLock(self.out)
            try:
                previous = lock.acquire()
            except ValueError as e:
                lock, error = None, e
            else:
                if previous:
                    self.log.warning("took over run folder %s: its last holder (%s) ended without releasing it "
                                     "(killed?)", self.out, describe_holder(previous))
        if not all(flags_by_rank(error is None, self.dist)):
            raise error or RunFolderBusy(f"run folder {self.out}: rank 0 could not take it (see rank 0's error)")
        return lock

    def _train(self) -> dict:
        dist = self.dist
        for cb in self.callbacks:
            cb.before_train(self)
        try:
            result = self._loop()
        except OSError as e:
            if not is_disk_full(e):
                raise
            full = e if isinstance(e, DiskFullError) else disk_full_error(e.filename or self.out, "writing")
            raise DiskFullError(f"{full}; the last good checkpoint is {self.preemption.last_good()}") from None
        except NonFiniteError as e:
            self.logger.log({"kind": "diverged", "step": e.step, "epoch": self.state.epoch,
                             "terms": {k: repr(v) for k, v in e.terms.items()}})
            raise NonFiniteError(f"{e}; stopped without saving: the last good checkpoint is {self.preemption.last_good()}",
                                 step=e.step,
                                 epoch=e.epoch, terms=e.terms, bad_params=e.bad_params, ranks=e.ranks) from None
        finally:
            try:
                self.logger.close()
            except OSError as e:  # TensorBoard's flush on a full disk: the error above says it
                if not is_disk_full(e):
                    raise
        for cb in self.callbacks:
            cb.after_train(self, result)
        if result.get("kind") != "preempted":
            barrier(dist)
            if dist.is_main:
                self.task.finish(self)
                self.log.info("done: %s", self.out)
        return result

    def _setup(self) -> None:
        cfg, dist = self.cfg, self.dist
        if cfg.run.amp not in AMP_DTYPES:
            raise ValueError(f"run.amp must be one of {sorted(AMP_DTYPES)}, got {cfg.run.amp!r}")
        self.amp_dtype = AMP_DTYPES[cfg.run.amp]
        self.micro, self.accum = micro_batch(cfg.optim.batch_size, cfg.optim.micro_batch, dist.world_size)
        if cfg.model.sync_bn and dist.enabled and self.device.type == "cpu":
            raise ValueError("model.sync_bn needs GPUs: torch's SyncBatchNorm does not run on CPU tensors; drop it for CPU runs")
        self.manager = CheckpointManager(self.out, keep=cfg.run.keep_checkpoints)
        path, ckpt = find_resume(self.resume, self.manager, dist, self.log, f"{self.task.name} run")
        if ckpt is not None:
            self._check_resume(ckpt, path)
            self.log.info("resuming from %s (step %d, %d epoch(s) done)", path, ckpt.step, ckpt.epoch)
        torch.backends.cudnn.benchmark = not cfg.run.deterministic
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self._build_data(ckpt, path)
        self._build_model(ckpt)
        self.preemption = Preemption(self.preempt, dist, self.state, self.save, ckpt.step if ckpt is not None else None,
                                     path)
        self.preempt.on_stuck = self.preemption.on_stuck  # a SIGTERM while blocked: save, exit
        self.logger = MetricsLogger(self.out, enabled=dist.is_main)
        if dist.is_main:
            open_run_folder(self.out, self.manager, self.logger, self.state.step if ckpt is not None else None, self.log)
            save_config(cfg, self.out / "config.yaml")
            self.log.info("%s (%s): %d steps, %d per epoch, of %d images (%d per device x %d devices x %d accumulation); "
                          "%s", cfg.model.name, self.task.describe(self.data), self.total, self.steps_per_epoch,
                          cfg.optim.batch_size, self.micro, dist.world_size, self.accum, describe_schedule(self.scheduler))

    def _check_resume(self, ckpt: Checkpoint, path) -> None:
        try:
            ckpt.require(self.task.name, train=True)
        except ValueError as e:
            raise ValueError(f"{e}; --resume needs OUTPUT/last.pt or OUTPUT/ckpt_<step>.pt of a {self.task.name} run") from None
        missing = missing_resume_keys(ckpt)
        if missing:
            raise ValueError(f"{path} cannot be resumed: it lacks {', '.join(missing)}")
        if ckpt.model_name != self.cfg.model.name:
            raise ValueError(f"checkpoint {path} holds a {ckpt.model_name!r} model; the config asks for "
                             f"{self.cfg.model.name!r}")

    def _build_data(self, ckpt, path) -> None:
        cfg, dist = self.cfg, self.dist
        data: TaskData = self.task.build_data()
        for key, value in data.info.items():
            old = list(ckpt.get(key) or value) if ckpt is not None else list(value)
            if old != list(value):
                raise ValueError(f"checkpoint {path} was trained on {len(old)} {key} {old[:5]}...; the data has "
                                 f"{len(value)}: {list(value)[:5]}...")
        self.data = data
        self.sampler = GlobalBatchSampler(len(data.train), cfg.optim.batch_size, dist.world_size, dist.rank, self.accum,
                                          cfg.run.seed)
        pin = self.device.type == "cuda"
        self.train_loader = DataLoader(SeededDataset(data.train), batch_sampler=self.sampler, num_workers=cfg.data.workers,
                                       collate_fn=data.collate, pin_memory=pin, worker_init_fn=ignore_preemption_signals)
        self.val_loader = eval_loader(data.val, dist, self.micro, cfg.data.workers, data.eval_collate or data.collate,
                                      pin, cfg.run.eval_max_images)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total = min(self.task.total_steps(self.steps_per_epoch), cfg.run.max_steps or 2**62)

    def _build_model(self, ckpt) -> None:
        cfg, dist, device = self.cfg, self.dist, self.device
        torch.manual_seed(cfg.run.seed)
        self.task.resumed = ckpt is not None
        model = self.task.build_model(self.data)
        if cfg.model.sync_bn and dist.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(device)
        if cfg.model.channels_last:
            to_channels_last(model)
        self.raw_model, self.ema = model, None
        if cfg.run.ema:

            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.run.ema_decay), use_buffers=True)
        self.optimizer = self.task.build_optimizer(model)
        self.scheduler = self.task.build_scheduler(self.optimizer, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type) if cfg.run.amp == "fp16" else None
        self.guard = NonFiniteGuard(cfg.run.max_nonfinite_skips, check_grads=self.scaler is None)
        if ckpt is not None:
            restore(ckpt, model, self.optimizer, self.scheduler, self.scaler, self.guard, self.ema)
            self.state = RunState(ckpt.epoch, ckpt.step, ckpt.get("step_in_epoch"), ckpt.get(self.task.best_key))
        self.model = wrap(model, dist, device, cfg.model.compile, cfg.model.compile_shapes)

    # -- the loop ------------------------------------------------------------------------------
    def _epoch_options(self) -> EpochOptions:
        cfg = self.cfg
        return EpochOptions(accum_steps=self.accum, amp_dtype=self.amp_dtype, scaler=self.scaler, ema=self.ema,
                            clip_grad_norm=cfg.optim.clip_grad_norm, seed=cfg.run.seed, dist=self.dist,
                            log_every=cfg.run.log_every, max_steps=self.total, guard=self.guard, on_step=self._on_step,
                            on_log=self._on_log, should_stop=lambda st: self.preemption.requested(self.device))

    def _loop(self) -> dict:
        st, result, options = self.state, {}, self._epoch_options()
        while st.step < self.total:
            self.sampler.set_epoch(st.epoch, st.step_in_epoch)
            t0 = time.perf_counter()
            tr = train_one_epoch(self.model, self._loss, self.optimizer, self.scheduler, self.train_loader, self.device,
                                 st, options)
            finished = st.step_in_epoch >= self.steps_per_epoch
            if tr["stopped"] and not finished:
                return self._preempted()
            self._end_epoch(tr, time.perf_counter() - t0)
            if finished:
                st.epoch, st.step_in_epoch = st.epoch + 1, 0
            final = st.step >= self.total
            every = self.cfg.run.eval_every
            rec = self.evaluate() if final or (finished and every and st.epoch % every == 0) else None
            self.save(rec)
            if final:
                result = rec
            elif tr["stopped"] or self.preemption.requested(self.device):
                return self._preempted()
        return result

    def _loss(self, model, images, targets) -> dict:
        try:
            return self.task.loss_terms(model, images, targets, self.device)
        except ValueError as e:  # BatchNorm in training mode over a single value per channel
            if "Expected more than 1 value per channel" not in str(e):
                raise
            raise ValueError(
                f"step {self.state.step + 1}: a micro-batch of {len(images)} image(s) leaves a BatchNorm layer one value "
                f"per channel (the last stage's map is 1x1 at data.img_size={self.cfg.data.img_size}); "
                "use at least 2 images per device (optim.batch_size / optim.micro_batch) or a larger data.img_size, "
                "and remove unreadable images named above") from None

    def _on_step(self, st: RunState, terms: dict) -> None:
        for cb in self.callbacks:
            cb.after_step(self, terms)
        if st.step >= self.total:
            return
        every = self.cfg.run.ckpt_every_steps
        if every and st.step % every == 0 and st.step_in_epoch < self.steps_per_epoch:
            self.save()
        every = self.cfg.run.eval_every_steps
        if every and st.step % every == 0:
            self.evaluate()
            self.model.train()

    def _on_log(self, rec: dict) -> None:
        self.logger.log(rec)
        if rec["kind"] == "step" and self.dist.is_main and not sys.stderr.isatty():
            self.log.info("%s", self.task.log_step(rec, self.total))

    def _end_epoch(self, tr: dict, seconds: float) -> None:
        st = self.state
        rec = {"kind": "epoch", "step": st.step, "epoch": st.epoch, "train_loss": tr["loss"],
               "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds, "skipped_images": tr["skipped_images"]}
        self.logger.log(rec)
        if tr["skipped_images"] and self.dist.is_main:
            self.log.warning("epoch %d: skipped %d unreadable training images (see the warnings above for the files)",
                             st.epoch, tr["skipped_images"])
        for cb in self.callbacks:
            cb.after_epoch(self, rec)

    def _preempted(self) -> dict:
        return self.preemption.stop(self.logger, self.log)

    # -- evaluation and checkpoints ------------------------------------------------------------
    def evaluate(self) -> dict:
        """Evaluate the model (and the EMA) now; log the record, keep best.pt; returns the record."""
        st, task = self.state, self.task
        rec = {"kind": "eval", "step": st.step, "epoch": st.last_epoch, **task.evaluate(self.model, self.val_loader, self)}
        if self.ema is not None:
            e = task.evaluate(self.ema.module, self.val_loader, self)
            rec.update({f"ema_{k}": v for k, v in e.items() if k not in ("count", "skipped_images")})
            if self.dist.is_main:
                self.log.info("EMA %s %.4g", task.best_metric, e[task.best_metric])
        self.logger.log(rec)
        for cb in self.callbacks:
            cb.after_eval(self, rec)
        score = rec.get(f"ema_{task.best_metric}", rec.get(task.best_metric))
        if score is not None and (st.best is None or (score > st.best if task.best_mode == "max" else score < st.best)):
            st.best = score
            if self.dist.is_main:
                save_atomic(self.checkpoint(rec), self.out / "best.pt")
        return rec

    def checkpoint(self, metrics: dict | None = None) -> dict:
        """Everything a run continues from, the recipe, and the task's data info (classes, ...)."""
        st, cfg = self.state, self.cfg
        return {
            "format_version": FORMAT_VERSION, "model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None, "nonfinite": self.guard.state_dict(),
            "epoch": st.epoch, "step": st.step, "step_in_epoch": st.step_in_epoch,
            self.task.best_key: st.best, "rng": rng_state(), "config": config_to_dict(cfg),
            "model_name": cfg.model.name, "img_size": cfg.data.img_size, "metrics": metrics or {},
            "kind": self.task.name, **{k: list(v) for k, v in self.data.info.items()},
        }

    def save(self, metrics: dict | None = None) -> None:
        """The step checkpoint (rotated) and last.pt (rank 0 writes)."""
        if self.dist.is_main:
            self.manager.save(self.checkpoint(metrics), self.state.step)
        self.preemption.saved(self.state.step, self.manager.path_for(self.state.step))
