"""Image classification: train and evaluate with the paper's recipes (Tables 10-14).

``train(cfg)`` runs a whole job: data, model, SGD + warmup/cosine, bf16 autocast, optional EMA,
``torch.compile`` and channels_last, DDP under torchrun with gradient accumulation to reach the
global batch, atomic checksummed checkpoints (rotated by step) with exact resume, JSONL/TensorBoard
metrics and a curves PNG. Faults (docs/reliability.md): SIGTERM/SIGUSR1 save a checkpoint at the next
step boundary and end the run cleanly; non-finite losses or gradients skip the step (up to
``run.max_nonfinite_skips``) or stop the run with ``NonFiniteError``; a dead or hung rank makes the
others fail with ``DistributedError`` after ``run.dist_timeout_s``.
The pieces (``train_one_epoch``, ``evaluate``) take objects, not configs.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..config import TrainConfig, config_from_dict, config_to_dict, save_config, validate_config
from ..data import build_dataset, build_transforms, collate_skip_none
from ..models import create_model
from ..models.weights import load_matching
from .checkpoint import CheckpointManager, load_checkpoint, rng_state, save_atomic
from .distributed import DistInfo, all_reduce_sum, barrier
from .faults import NonFiniteError, NonFiniteGuard, PreemptionHandler, emergency_saver, ignore_preemption_signals
from .loop import (empty_micro_batch_error, find_resume, launch, open_run_folder, optimizer_step, restore,
                   stop_for_preemption, wrap)
from .metrics import MetricsLogger, get_logger, plot_curves
from .optim import WarmupCosine, build_optimizer, build_scheduler
from .sampler import GlobalBatchSampler, SeededDataset, shard_indices

__all__ = ["train", "train_one_epoch", "evaluate", "evaluate_checkpoint", "resolve_device", "RunState", "check_model_config"]

_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class RunState:
    epoch: int = 0  # epoch in progress
    step: int = 0  # optimizer steps done in the whole run
    step_in_epoch: int = 0  # optimizer steps done in ``epoch``
    best_top1: float = -1.0


def resolve_device(name: str | torch.device) -> torch.device:
    """"auto": CUDA when available, else CPU; other names as torch.device (CUDA must exist)."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r} asked for but no CUDA device is available")
    return dev


def _autocast(device: torch.device, amp_dtype):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 7_919 + step * 104_729 + rank) % (2**63 - 1)


def accuracy_counts(logits: torch.Tensor, target: torch.Tensor, topk=(1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k logits, for each k. logits (B, K), target (B,)."""
    k = min(max(topk), logits.shape[1])
    pred = logits.topk(k, dim=1).indices
    hit = pred.eq(target[:, None])
    return [int(hit[:, : min(t, k)].any(1).sum()) for t in topk]


def train_one_epoch(model, criterion, optimizer, scheduler, loader, device, state: RunState, *, accum_steps: int,
                    amp_dtype=None, scaler=None, ema=None, clip_grad_norm=None, channels_last=False, seed=0,
                    dist: DistInfo = DistInfo(), log_every=20, max_steps=None, on_step=None, on_log=None,
                    guard: NonFiniteGuard | None = None, should_stop=None) -> dict:
    """One pass over ``loader`` (this rank's micro-batches, ``accum_steps`` per optimizer step).

    ``guard`` checks each step's loss and gradients before the optimizer step: a non-finite step is
    skipped (parameters unchanged, the step still counts) or raises ``NonFiniteError`` (default: a
    guard that allows no skips). ``on_step(state)`` runs after every optimizer step (checkpointing);
    ``should_stop(state)`` after it, and True ends the pass early (preemption; a collective under
    DDP). ``on_log(record)`` gets a step record every ``log_every`` steps and a "nonfinite" record
    for each skipped step. Returns the epoch's mean loss (skipped steps left out), the number of
    unreadable images skipped, and ``stopped``."""
    guard = guard if guard is not None else NonFiniteGuard(0, check_grads=scaler is None)
    model.train()
    micro_i, loss_acc, n_acc, skipped = 0, 0.0, 0, 0
    epoch_loss, epoch_n = torch.zeros(2, dtype=torch.float64), 0
    t0, window_imgs = time.perf_counter(), 0
    stopped = False
    show_bar = dist.is_main and sys.stderr.isatty()
    bar = None
    if show_bar:
        from tqdm import tqdm

        bar = tqdm(total=len(loader) // accum_steps, desc=f"epoch {state.epoch}", leave=False, dynamic_ncols=True)
    optimizer.zero_grad(set_to_none=True)
    for images, targets, n_skip in loader:
        skipped += n_skip
        if micro_i == 0:
            torch.manual_seed(_step_seed(seed, state.step, dist.rank))  # dropout / drop-path of this step
            guard.begin_step(model)
        last_micro = micro_i == accum_steps - 1
        if images.numel():
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            sync = contextlib.nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with _autocast(device, amp_dtype):
                    loss = criterion(model(images), targets)
                scaled = loss / accum_steps
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            loss_acc += float(loss.detach())
            n_acc += 1
            window_imgs += images.shape[0]
        elif last_micro and dist.enabled:
            raise empty_micro_batch_error(dist, state.step + 1, n_skip)
        micro_i += 1
        if not last_micro:
            continue
        terms = {"loss": loss_acc / n_acc} if n_acc else {}
        finite = optimizer_step(model, optimizer, scheduler, guard, terms, state.step + 1, epoch=state.epoch, dist=dist,
                                device=device, scaler=scaler, clip_grad_norm=clip_grad_norm, ema=ema)
        state.step += 1
        state.step_in_epoch += 1
        step_loss = torch.tensor([loss_acc, n_acc] if finite else [0.0, 0.0], dtype=torch.float64)
        if finite:
            epoch_loss += step_loss
            epoch_n += 1
        elif on_log is not None:
            on_log({"kind": "nonfinite", "step": state.step, "epoch": state.epoch, "skips": guard.skipped,
                    "terms": {k: repr(float(v)) for k, v in terms.items()}})
        micro_i, loss_acc, n_acc = 0, 0.0, 0
        if finite and (state.step % log_every == 0 or (max_steps and state.step >= max_steps)):
            all_reduce_sum(step_loss, dist)
            imgs = torch.tensor([window_imgs], dtype=torch.float64)
            all_reduce_sum(imgs, dist)
            dt = time.perf_counter() - t0
            rec = {"kind": "step", "step": state.step, "epoch": state.epoch,
                   "loss": float(step_loss[0] / max(step_loss[1], 1)), "lr": optimizer.param_groups[0]["lr"],
                   "images_per_s": float(imgs[0]) / max(dt, 1e-9)}
            t0, window_imgs = time.perf_counter(), 0
            if on_log is not None:
                on_log(rec)
        if bar is not None:
            bar.update(1)
            if finite:
                bar.set_postfix(loss=f"{step_loss[0] / max(step_loss[1], 1):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}")
        if on_step is not None:
            on_step(state)
        if should_stop is not None and should_stop(state):
            stopped = True
            break
        if max_steps and state.step >= max_steps:
            break
    if bar is not None:
        bar.close()
    all_reduce_sum(epoch_loss, dist)
    return {"loss": float(epoch_loss[0] / max(epoch_loss[1], 1)), "skipped_images": skipped, "stopped": stopped}


@torch.no_grad()
def evaluate(model, loader, device, amp_dtype=None, dist: DistInfo = DistInfo(), channels_last=False) -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy over this rank's shard, summed over ranks."""
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64)  # loss_sum, top1, top5, count, skipped
    for images, targets, n_skip in loader:
        sums[4] += n_skip
        if not images.numel():
            continue
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp_dtype):
            logits = model(images)
        logits = logits.float()
        sums[0] += float(F.cross_entropy(logits, targets, reduction="sum"))
        t1, t5 = accuracy_counts(logits, targets)
        sums[1] += t1
        sums[2] += t5
        sums[3] += images.shape[0]
    all_reduce_sum(sums, dist)
    n = max(float(sums[3]), 1.0)
    return {"loss": float(sums[0]) / n, "top1": 100 * float(sums[1]) / n, "top5": 100 * float(sums[2]) / n,
            "count": int(sums[3]), "skipped_images": int(sums[4])}


def _micro_batch(cfg: TrainConfig, world: int) -> tuple[int, int]:
    b = cfg.optim.batch_size
    m = cfg.optim.micro_batch or b // world
    if m < 1 or b % (world * m):
        raise ValueError(
            f"optim.batch_size={b} must be a multiple of world_size ({world}) x optim.micro_batch ({m}); "
            f"e.g. optim.micro_batch={max(1, b // world)}"
        )
    return m, b // (world * m)


def _val_loader(val_ds, dist: DistInfo, batch: int, workers: int, pin: bool) -> DataLoader:
    shard = Subset(val_ds, shard_indices(len(val_ds), dist.world_size, dist.rank))
    return DataLoader(shard, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate_skip_none, pin_memory=pin)


def _checkpoint(raw_model, optimizer, scheduler, scaler, ema, state: RunState, cfg: TrainConfig, classes, metrics=None,
                guard: NonFiniteGuard | None = None) -> dict:
    return {
        "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None, "ema": ema.state_dict() if ema is not None else None,
        "epoch": state.epoch, "step": state.step, "step_in_epoch": state.step_in_epoch, "best_top1": state.best_top1,
        "rng": rng_state(), "config": config_to_dict(cfg), "classes": list(classes), "model_name": cfg.model.name,
        "img_size": cfg.data.img_size, "metrics": metrics or {}, "kind": "classification",
        "nonfinite": guard.state_dict() if guard is not None else {"skipped": 0},
    }


_RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "step_in_epoch", "best_top1", "rng")


def _check_resume(ckpt, path, cfg: TrainConfig) -> None:
    """A checkpoint ``--resume`` can continue: one of ``botnet train``'s, of the configured model."""
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "classification":
        kind = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a classification checkpoint of botnet train (found {kind!r}); "
                         "--resume needs OUTPUT/last.pt or OUTPUT/ckpt_<step>.pt of a classification run")
    missing = [k for k in _RESUME_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{path} cannot be resumed: it lacks {', '.join(missing)}")
    if ckpt.get("model_name") != cfg.model.name:
        raise ValueError(f"checkpoint {path} holds a {ckpt.get('model_name')!r} model; the config asks for {cfg.model.name!r}")


def check_model_config(cfg: TrainConfig) -> None:
    """Check that ``cfg.model`` builds and accepts ``data.img_size`` / ``data.eval_size``, without
    memory or data: the model is built on the meta device. Raises ``ValueError`` naming the key."""
    m, d = cfg.model, cfg.data
    try:
        with torch.device("meta"):
            model = create_model(m.name, num_classes=2, img_size=d.img_size, drop_rate=m.drop_rate,
                                 drop_path_rate=m.drop_path_rate, **m.kwargs)
    except TypeError as e:  # an unknown model.kwargs entry
        raise ValueError(f"model.kwargs {m.kwargs}: {m.name} does not take these options ({e})") from None
    except ValueError as e:
        raise ValueError(f"data.img_size={d.img_size} with model.name={m.name}: {e}") from None
    check = getattr(model, "check_input_size", None)
    if check is not None and d.eval_size is not None:
        try:
            check((d.eval_size, d.eval_size))
        except ValueError as e:
            raise ValueError(f"data.eval_size={d.eval_size} with model.name={m.name}: {e}") from None


def train(cfg: TrainConfig, resume: str | None = None) -> dict:
    """Run the job ``cfg`` describes. ``resume``: a checkpoint path, or "auto" for the newest valid
    checkpoint in the output folder (none: a new run).

    Returns the final evaluation record, or ``{"kind": "preempted", "preempted": True, "step", "epoch",
    "signal", "checkpoint"}`` when SIGTERM/SIGUSR1 stopped the run (after saving). Raises, before any
    training: ``ConfigError``/``ValueError``/``FileNotFoundError`` for a bad config, data folder or
    checkpoint (``CheckpointError`` for a damaged one). During training: ``NonFiniteError`` when
    the loss or gradients stay non-finite (nothing is saved after the last good checkpoint), and
    ``DistributedError`` when another rank died or hung for ``run.dist_timeout_s``."""
    validate_config(cfg)
    log = get_logger()
    return launch(cfg.run, lambda device, dist, preempt: _train(cfg, resume, device, dist, log, preempt))


def _train(cfg: TrainConfig, resume, device, dist: DistInfo, log, preempt: PreemptionHandler) -> dict:
    out = Path(cfg.run.output or f"runs/{cfg.name}")
    amp_dtype = _AMP[cfg.run.amp]
    micro, accum = _micro_batch(cfg, dist.world_size)
    if cfg.model.sync_bn and dist.enabled and device.type == "cpu":
        raise ValueError("model.sync_bn needs GPUs: torch's SyncBatchNorm does not run on CPU tensors; drop it for CPU runs")
    check_model_config(cfg)
    manager = CheckpointManager(out, keep=cfg.run.keep_checkpoints)
    path, ckpt = find_resume(resume, manager, dist, log)
    if ckpt is not None:
        _check_resume(ckpt, path, cfg)
        log.info("resuming from %s (epoch %d, step %d)", path, ckpt["epoch"], ckpt["step"])
    torch.backends.cudnn.benchmark = not cfg.run.deterministic
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    # data
    d = cfg.data
    train_tf = build_transforms(True, d.img_size, randaug_magnitude=d.randaug_magnitude, randaug_layers=d.randaug_layers,
                                crop_pct=d.crop_pct, hflip=d.hflip, scale=(d.scale_min, 1.0))
    eval_tf = build_transforms(False, d.eval_size or d.img_size, crop_pct=d.crop_pct)
    train_ds = build_dataset(d.root, "train", train_tf)
    val_ds = build_dataset(d.root, "val", eval_tf)
    if val_ds.classes != train_ds.classes:
        raise ValueError(f"train and val class folders differ: {train_ds.classes} vs {val_ds.classes}")
    classes = train_ds.classes
    if ckpt is not None and list(ckpt.get("classes") or classes) != list(classes):
        raise ValueError(f"checkpoint {path} was trained on {len(ckpt['classes'])} classes {ckpt['classes'][:5]}...; "
                         f"the data has {len(classes)}: {classes[:5]}...")
    sampler = GlobalBatchSampler(len(train_ds), cfg.optim.batch_size, dist.world_size, dist.rank, accum, cfg.run.seed)
    pin = device.type == "cuda"
    train_loader = DataLoader(SeededDataset(train_ds), batch_sampler=sampler, num_workers=d.workers,
                              collate_fn=collate_skip_none, pin_memory=pin, worker_init_fn=ignore_preemption_signals)
    val_loader = _val_loader(val_ds, dist, micro, d.workers, pin)

    # model
    torch.manual_seed(cfg.run.seed)
    m = cfg.model
    model = create_model(m.name, num_classes=len(classes), img_size=d.img_size, drop_rate=m.drop_rate,
                         drop_path_rate=m.drop_path_rate, **m.kwargs)
    if m.pretrained and ckpt is None:
        report = load_matching(model, m.pretrained)
        log.info("pretrained %s: %s", m.pretrained, report.summary())
    if m.sync_bn and dist.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if m.channels_last:
        model.to(memory_format=torch.channels_last)
    raw_model = model
    ema = None
    if cfg.run.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(raw_model, multi_avg_fn=get_ema_multi_avg_fn(cfg.run.ema_decay), use_buffers=True)
    lr = cfg.optim.lr * cfg.optim.batch_size / 256
    o = cfg.optim
    optimizer = build_optimizer(raw_model, o.name, lr, o.weight_decay, o.momentum, o.nesterov, o.betas)
    steps_per_epoch = sampler.steps_per_epoch
    total = cfg.optim.epochs * steps_per_epoch
    scheduler = build_scheduler(optimizer, WarmupCosine(total, round(cfg.optim.warmup_epochs * steps_per_epoch),
                                                        cfg.optim.warmup_start_factor))
    scaler = torch.amp.GradScaler(device.type) if cfg.run.amp == "fp16" else None
    guard = NonFiniteGuard(cfg.run.max_nonfinite_skips, check_grads=scaler is None)
    state = RunState()
    if ckpt is not None:
        restore(ckpt, raw_model, optimizer, scheduler, scaler, guard, ema)
        state = RunState(epoch=ckpt["epoch"], step=ckpt["step"], step_in_epoch=ckpt["step_in_epoch"], best_top1=ckpt["best_top1"])
    net = wrap(raw_model, dist, device, m.compile)

    logger = MetricsLogger(out, enabled=dist.is_main)
    if dist.is_main:
        open_run_folder(out, manager, logger, state.step if ckpt is not None else None, log)
        save_config(cfg, out / "config.yaml")
        log.info("%s: %d train / %d val images, %d classes; %d steps/epoch of %d images (%d per device x %d devices x %d accumulation), lr %.4g",
                 m.name, len(train_ds), len(val_ds), len(classes), steps_per_epoch, cfg.optim.batch_size, micro,
                 dist.world_size, accum, lr)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
    saved = {"step": ckpt["step"] if ckpt is not None else None, "path": path}

    def save(metrics=None):
        """The step checkpoint (rotated) and last.pt."""
        if dist.is_main:
            manager.save(_checkpoint(raw_model, optimizer, scheduler, scaler, ema, state, cfg, classes, metrics, guard),
                         state.step)
        saved.update(step=state.step, path=manager.path_for(state.step))

    def save_best(metrics):
        if dist.is_main:
            save_atomic(_checkpoint(raw_model, optimizer, scheduler, scaler, ema, state, cfg, classes, metrics, guard),
                        out / "best.pt")

    def on_step(st: RunState):
        if cfg.run.ckpt_every_steps and st.step % cfg.run.ckpt_every_steps == 0 and st.step_in_epoch < steps_per_epoch:
            save()

    def on_log(rec):
        logger.log(rec)
        if rec["kind"] == "step" and dist.is_main and not sys.stderr.isatty():
            log.info("epoch %d step %d loss %.4f lr %.4g %.1f img/s", rec["epoch"], rec["step"], rec["loss"], rec["lr"], rec["images_per_s"])

    preempt.on_stuck = emergency_saver(save, saved, state)  # a SIGTERM while blocked: save, then exit

    def preempted() -> dict:
        return stop_for_preemption(save, saved, state, dist, preempt, logger, log)

    result = {}
    max_steps = cfg.run.max_steps
    try:
        while state.epoch < cfg.optim.epochs and not (max_steps and state.step >= max_steps):
            sampler.set_epoch(state.epoch, state.step_in_epoch)
            t0 = time.perf_counter()
            tr = train_one_epoch(net, criterion, optimizer, scheduler, train_loader, device, state, accum_steps=accum,
                                 amp_dtype=amp_dtype, scaler=scaler, ema=ema, clip_grad_norm=cfg.optim.clip_grad_norm,
                                 channels_last=m.channels_last, seed=cfg.run.seed, dist=dist, log_every=cfg.run.log_every,
                                 max_steps=max_steps, on_step=on_step, on_log=on_log, guard=guard,
                                 should_stop=lambda st: preempt.should_stop(dist, device))
            finished_epoch = state.step_in_epoch >= steps_per_epoch
            if tr["stopped"] and not finished_epoch:
                return preempted()
            logger.log({"kind": "epoch", "step": state.step, "epoch": state.epoch, "train_loss": tr["loss"],
                        "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
                        "skipped_images": tr["skipped_images"]})
            if tr["skipped_images"] and dist.is_main:
                log.warning("epoch %d: skipped %d unreadable training images (see the warnings above for the files)",
                            state.epoch, tr["skipped_images"])
            stopping = bool(max_steps and state.step >= max_steps)
            if finished_epoch:
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
            rec = None
            if stopping or (finished_epoch and (state.epoch % cfg.run.eval_every == 0 or state.epoch == cfg.optim.epochs)):
                ev = evaluate(net, val_loader, device, amp_dtype, dist, m.channels_last)
                rec = {"kind": "eval", "step": state.step, "epoch": state.epoch, **ev}
                if ema is not None:
                    e = evaluate(ema.module, val_loader, device, amp_dtype, dist, m.channels_last)
                    rec.update({f"ema_{k}": v for k, v in e.items() if k in ("loss", "top1", "top5")})
                logger.log(rec)
                if dist.is_main:
                    log.info("epoch %d: val top-1 %.2f%% top-5 %.2f%% loss %.4f (%d images)%s", rec["epoch"], ev["top1"],
                             ev["top5"], ev["loss"], ev["count"],
                             f"; EMA top-1 {rec['ema_top1']:.2f}%" if ema is not None else "")
                score = rec.get("ema_top1", ev["top1"])
                if score > state.best_top1:
                    state.best_top1 = score
                    save_best(rec)
                result = rec
            save(rec)
            more = state.epoch < cfg.optim.epochs and not (max_steps and state.step >= max_steps)
            if more and (tr["stopped"] or preempt.should_stop(dist, device)):
                return preempted()
    except NonFiniteError as e:
        logger.log({"kind": "diverged", "step": e.step, "epoch": state.epoch,
                    "terms": {k: repr(v) for k, v in e.terms.items()}})
        where = saved["path"] or "none (no checkpoint was written yet)"
        raise NonFiniteError(f"{e}; stopped without saving: the last good checkpoint is {where}", step=e.step,
                             epoch=e.epoch, terms=e.terms, bad_params=e.bad_params, ranks=e.ranks) from None
    finally:
        logger.close()
    barrier(dist)
    if dist.is_main:
        plot_curves(out / "metrics.jsonl", out / "curves.png", title=f"{m.name} ({cfg.name})")
        log.info("done: %s (checkpoints, metrics.jsonl, curves.png)", out)
    return result


def evaluate_checkpoint(path: str, data_root: str | None = None, batch_size: int = 64, workers: int = 2,
                        use_ema: bool = False, device: str = "auto") -> dict:
    """Evaluate a classification checkpoint on ``data_root``/val (default: the data it was trained on)."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "classification":
        raise ValueError(f"{path} is not a classification checkpoint of botnet train")
    cfg = config_from_dict(ckpt["config"])
    dev = resolve_device(device)
    root = data_root if data_root is not None else cfg.data.root
    tf = build_transforms(False, cfg.data.eval_size or cfg.data.img_size, crop_pct=cfg.data.crop_pct)
    ds = build_dataset(root, "val", tf)
    if ds.classes != ckpt["classes"]:
        raise ValueError(f"the data's classes {ds.classes[:5]}... differ from the checkpoint's {ckpt['classes'][:5]}...")
    model = create_model(cfg.model.name, num_classes=len(ckpt["classes"]), img_size=cfg.data.img_size, **cfg.model.kwargs)
    state = ckpt["model"]
    if use_ema:
        if not ckpt.get("ema"):
            raise ValueError(f"{path} has no EMA weights (trained without run.ema=true)")
        state = {k[len("module."):]: v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    model.load_state_dict(state)
    model.to(dev)
    loader = _val_loader(ds, DistInfo(), batch_size, workers, dev.type == "cuda")
    amp = _AMP.get(cfg.run.amp) if dev.type == "cuda" else None
    res = evaluate(model, loader, dev, amp)
    res.update(checkpoint=str(path), model=cfg.model.name, epoch=ckpt["epoch"], step=ckpt["step"], ema=use_ema)
    return res
