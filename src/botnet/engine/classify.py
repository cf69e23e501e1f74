"""Image classification: train and evaluate with the paper's recipes (Tables 10-14).

``train(cfg)`` runs a whole job: data, model, SGD + warmup/cosine, bf16 autocast, optional EMA,
``torch.compile`` and channels_last, DDP under torchrun with gradient accumulation to reach the
global batch, atomic checkpoints with exact resume, JSONL/TensorBoard metrics and a curves PNG.
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

from ..config import TrainConfig, config_from_dict, config_to_dict, save_config
from ..data import build_dataset, build_transforms, collate_skip_none
from ..models import create_model
from ..models.weights import load_matching
from .checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from .distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed
from .metrics import MetricsLogger, get_logger, plot_curves
from .optim import WarmupCosine, build_optimizer, build_scheduler
from .sampler import GlobalBatchSampler, SeededDataset, shard_indices

__all__ = ["train", "train_one_epoch", "evaluate", "evaluate_checkpoint", "resolve_device", "RunState"]

_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class RunState:
    epoch: int = 0  # epoch in progress
    step: int = 0  # optimizer steps done in the whole run
    step_in_epoch: int = 0  # optimizer steps done in ``epoch``
    best_top1: float = -1.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device=cuda but no CUDA device is available")
    return torch.device(name)


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
                    dist: DistInfo = DistInfo(), log_every=20, max_steps=None, on_step=None, on_log=None) -> dict:
    """One pass over ``loader`` (this rank's micro-batches, ``accum_steps`` per optimizer step).

    ``on_step(state)`` runs after every optimizer step (checkpointing); ``on_log(record)`` gets a
    step record every ``log_every`` steps. Returns the epoch's mean loss and images/s."""
    model.train()
    micro_i, loss_acc, n_acc, skipped = 0, 0.0, 0, 0
    epoch_loss, epoch_n = torch.zeros(2, dtype=torch.float64), 0
    t0, window_imgs = time.perf_counter(), 0
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
        last_micro = micro_i == accum_steps - 1
        if images.numel():
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            sync = contextlib.nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with _autocast(device, amp_dtype):
                    loss = criterion(model(images), targets)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite training loss {loss.item()} at step {state.step} (epoch {state.epoch})")
                scaled = loss / accum_steps
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            loss_acc += float(loss.detach())
            n_acc += 1
            window_imgs += images.shape[0]
        micro_i += 1
        if not last_micro:
            continue
        # optimizer step
        if scaler is not None:
            scaler.unscale_(optimizer)
        if clip_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(model.module if hasattr(model, "module") else model)
        state.step += 1
        state.step_in_epoch += 1
        step_loss = torch.tensor([loss_acc, n_acc], dtype=torch.float64)
        epoch_loss += step_loss
        epoch_n += 1
        micro_i, loss_acc, n_acc = 0, 0.0, 0
        if state.step % log_every == 0 or (max_steps and state.step >= max_steps):
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
            bar.set_postfix(loss=f"{step_loss[0] / max(step_loss[1], 1):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}")
        if on_step is not None:
            on_step(state)
        if max_steps and state.step >= max_steps:
            break
    if bar is not None:
        bar.close()
    all_reduce_sum(epoch_loss, dist)
    return {"loss": float(epoch_loss[0] / max(epoch_loss[1], 1)), "skipped_images": skipped}


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


def _checkpoint(raw_model, optimizer, scheduler, scaler, ema, state: RunState, cfg: TrainConfig, classes, metrics=None) -> dict:
    return {
        "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None, "ema": ema.state_dict() if ema is not None else None,
        "epoch": state.epoch, "step": state.step, "step_in_epoch": state.step_in_epoch, "best_top1": state.best_top1,
        "rng": rng_state(), "config": config_to_dict(cfg), "classes": list(classes), "model_name": cfg.model.name,
        "img_size": cfg.data.img_size, "metrics": metrics or {}, "kind": "classification",
    }


def train(cfg: TrainConfig, resume: str | None = None) -> dict:
    """Run the job ``cfg`` describes; returns the final evaluation. ``resume``: a checkpoint path or "auto"."""
    log = get_logger()
    device = resolve_device(cfg.run.device)
    dist = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    try:
        return _train(cfg, resume, device, dist, log)
    finally:
        cleanup(dist)


def _train(cfg: TrainConfig, resume, device, dist: DistInfo, log) -> dict:
    out = Path(cfg.run.output or f"runs/{cfg.name}")
    amp_dtype = _AMP.get(cfg.run.amp, "bad")
    if amp_dtype == "bad":
        raise ValueError(f"run.amp must be one of {sorted(_AMP)}, got {cfg.run.amp!r}")
    micro, accum = _micro_batch(cfg, dist.world_size)
    if cfg.model.sync_bn and dist.enabled and device.type == "cpu":
        raise ValueError("model.sync_bn needs GPUs: torch's SyncBatchNorm does not run on CPU tensors; drop it for CPU runs")
    ckpt = None
    if resume == "auto" and not (out / "last.pt").exists():
        log.info("--resume auto: no checkpoint in %s, starting a new run", out)
        resume = None
    if resume:
        path = out / "last.pt" if resume == "auto" else Path(resume)
        ckpt = load_checkpoint(path)
        if ckpt.get("model_name") != cfg.model.name:
            raise ValueError(f"checkpoint {path} holds a {ckpt.get('model_name')!r} model; the config asks for {cfg.model.name!r}")
        log.info("resuming from %s (epoch %d, step %d)", path, ckpt["epoch"], ckpt["step"])
    elif (out / "last.pt").exists():
        raise ValueError(f"{out} already holds a run (last.pt); pass --resume auto to continue it or choose another --output")
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
    sampler = GlobalBatchSampler(len(train_ds), cfg.optim.batch_size, dist.world_size, dist.rank, accum, cfg.run.seed)
    pin = device.type == "cuda"
    train_loader = DataLoader(SeededDataset(train_ds), batch_sampler=sampler, num_workers=d.workers,
                              collate_fn=collate_skip_none, pin_memory=pin)
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
    state = RunState()
    if ckpt is not None:
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        set_rng_state(ckpt["rng"])
        state = RunState(epoch=ckpt["epoch"], step=ckpt["step"], step_in_epoch=ckpt["step_in_epoch"], best_top1=ckpt["best_top1"])
    net = raw_model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    if m.compile:
        net = torch.compile(net)

    logger = MetricsLogger(out, enabled=dist.is_main)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if ckpt is not None:
            logger.truncate_after(state.step)
        log.info("%s: %d train / %d val images, %d classes; %d steps/epoch of %d images (%d per device x %d devices x %d accumulation), lr %.4g",
                 m.name, len(train_ds), len(val_ds), len(classes), steps_per_epoch, cfg.optim.batch_size, micro,
                 dist.world_size, accum, lr)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)

    def save(name="last.pt", metrics=None):
        if dist.is_main:
            save_atomic(_checkpoint(raw_model, optimizer, scheduler, scaler, ema, state, cfg, classes, metrics), out / name)

    def on_step(st: RunState):
        if cfg.run.ckpt_every_steps and st.step % cfg.run.ckpt_every_steps == 0 and st.step_in_epoch < steps_per_epoch:
            save()

    def on_log(rec):
        logger.log(rec)
        if dist.is_main and not sys.stderr.isatty():
            log.info("epoch %d step %d loss %.4f lr %.4g %.1f img/s", rec["epoch"], rec["step"], rec["loss"], rec["lr"], rec["images_per_s"])

    result = {}
    max_steps = cfg.run.max_steps
    while state.epoch < cfg.optim.epochs and not (max_steps and state.step >= max_steps):
        sampler.set_epoch(state.epoch, state.step_in_epoch)
        t0 = time.perf_counter()
        tr = train_one_epoch(net, criterion, optimizer, scheduler, train_loader, device, state, accum_steps=accum,
                             amp_dtype=amp_dtype, scaler=scaler, ema=ema, clip_grad_norm=cfg.optim.clip_grad_norm,
                             channels_last=m.channels_last, seed=cfg.run.seed, dist=dist, log_every=cfg.run.log_every,
                             max_steps=max_steps, on_step=on_step, on_log=on_log)
        finished_epoch = state.step_in_epoch >= steps_per_epoch
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
                save("best.pt", rec)
            result = rec
        save("last.pt", rec)
    barrier(dist)
    logger.close()
    if dist.is_main:
        plot_curves(out / "metrics.jsonl", out / "curves.png", title=f"{m.name} ({cfg.name})")
        log.info("done: %s (checkpoints, metrics.jsonl, curves.png)", out)
    return result


def evaluate_checkpoint(path: str, data_root: str | None = None, batch_size: int = 64, workers: int = 2,
                        use_ema: bool = False, device: str = "auto") -> dict:
    """Evaluate a classification checkpoint on ``data_root``/val (default: the data it was trained on)."""
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != "classification":
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
