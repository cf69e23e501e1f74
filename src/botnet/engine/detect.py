"""Detection / instance segmentation: train and evaluate BoTNet Mask R-CNN / Faster R-CNN on COCO data.

``train_detector(cfg)`` runs a whole job: COCO-format data (or the built-in scenes), the detector of
``botnet.detection``, SGD with the paper's warmup + step schedule (Table 15), bf16 autocast, DDP under
torchrun with gradient accumulation, SyncBN, atomic checkpoints with exact resume, COCO AP with
faster-coco-eval, JSONL/TensorBoard metrics and a curves PNG. The same sampler as classification
makes a run independent of how it is spread over devices.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..config import config_from_dict, config_to_dict, save_config
from ..data import build_coco_dataset, build_det_transforms, builtin_coco_root, collate_detection
from ..detection import create_detector
from ..detection.config import DetTrainConfig
from ..detection.evaluate import evaluate_coco, format_coco_table, to_coco_results
from .checkpoint import CheckpointManager, load_checkpoint, rng_state, save_atomic
from .classify import _autocast, _micro_batch, _step_seed, resolve_device
from .distributed import DistInfo, all_reduce_sum, barrier
from .faults import NonFiniteError, NonFiniteGuard, PreemptionHandler, emergency_saver, ignore_preemption_signals
from .loop import (empty_micro_batch_error, find_resume, launch, open_run_folder, optimizer_step, restore,
                   stop_for_preemption, wrap)
from .metrics import MetricsLogger, get_logger, plot_curves
from .optim import WarmupMultiStep, build_optimizer, build_scheduler
from .sampler import GlobalBatchSampler, SeededDataset, shard_indices

__all__ = ["train_detector", "evaluate_detector", "load_detector", "evaluate_detection_checkpoint", "det_data_root"]

_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class DetState:
    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    best_ap: float = -1.0


def det_data_root(cfg: DetTrainConfig) -> Path:
    """The data root of ``cfg``: ``data.root``, or the built-in scenes (generated on first use)."""
    d = cfg.data
    if d.root is not None:
        return Path(d.root)
    return builtin_coco_root(num_train=d.builtin_train, num_val=d.builtin_val, img_size=d.builtin_img_size)


def _set_batchnorm(model: nn.Module, momentum: float | None, eps: float | None) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if momentum is not None:
                m.momentum = momentum
            if eps is not None:
                m.eps = eps


def build_detector_from_config(cfg: DetTrainConfig, num_classes: int, load_backbone: bool = True) -> nn.Module:
    m = cfg.model
    model = create_detector(m.name, num_classes=num_classes, img_size=cfg.data.img_size,
                            backbone_weights=m.backbone_weights if load_backbone else None,
                            backbone_kwargs=m.backbone_kwargs, **m.kwargs)
    _set_batchnorm(model, m.bn_momentum, m.bn_eps)
    return model


def train_det_epoch(model, optimizer, scheduler, loader, device, state: DetState, *, accum_steps: int, steps_per_epoch: int,
                    amp_dtype=None, scaler=None, clip_grad_norm=None, seed=0, dist: DistInfo = DistInfo(),
                    log_every=20, max_steps=None, on_step=None, on_log=None, guard: NonFiniteGuard | None = None,
                    should_stop=None) -> dict:
    """One pass over this rank's micro-batches (``accum_steps`` per optimizer step).

    The loader yields (list of (3,S,S) images, list of target dicts, n_skipped). The loss is the sum
    of the model's loss dict. ``guard`` checks every loss term and the gradients before each optimizer
    step (skip or ``NonFiniteError``). ``on_step(state)`` runs after every optimizer step,
    ``should_stop(state)`` after it (preemption: True ends the pass), ``on_log(record)`` every
    ``log_every`` steps. Returns the epoch's mean loss, the skipped-image count and ``stopped``."""
    guard = guard if guard is not None else NonFiniteGuard(0, check_grads=scaler is None)
    stopped = False
    model.train()
    micro_i, skipped = 0, 0
    acc = {}  # loss terms summed over this step's micro-batches
    epoch_loss = torch.zeros(2, dtype=torch.float64)
    t0, window_imgs = time.perf_counter(), 0
    bar = None
    if dist.is_main and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=steps_per_epoch, initial=state.step_in_epoch, desc=f"epoch {state.epoch}", leave=False,
                   dynamic_ncols=True)
    optimizer.zero_grad(set_to_none=True)
    for images, targets, n_skip in loader:
        skipped += n_skip
        # proposal / RoI sampling of each micro-batch is seeded by its place in the global batch, so
        # N devices and N accumulation steps sample alike (the sampler deals micro-batch a*world+rank)
        torch.manual_seed(_step_seed(seed, state.step, micro_i * dist.world_size + dist.rank))
        if micro_i == 0:
            guard.begin_step(model)
        last_micro = micro_i == accum_steps - 1
        if images:
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
            sync = model.no_sync() if (not last_micro and hasattr(model, "no_sync")) else contextlib.nullcontext()
            with sync:
                with _autocast(device, amp_dtype):
                    loss_dict = model(images, targets)
                loss = sum(loss_dict.values())
                scaled = loss / accum_steps
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            for k, v in loss_dict.items():
                acc[k] = acc.get(k, 0.0) + float(v.detach())
            acc["loss"] = acc.get("loss", 0.0) + float(loss.detach())
            acc["n"] = acc.get("n", 0) + 1
            window_imgs += len(images)
        elif last_micro and dist.enabled:
            raise empty_micro_batch_error(dist, state.step + 1, n_skip)
        micro_i += 1
        if not last_micro:
            continue
        n = max(acc.get("n", 0), 1)
        terms = {k: v / n for k, v in acc.items() if k != "n"}
        finite = optimizer_step(model, optimizer, scheduler, guard, terms, state.step + 1, epoch=state.epoch, dist=dist,
                                device=device, scaler=scaler, clip_grad_norm=clip_grad_norm)
        state.step += 1
        state.step_in_epoch += 1
        if finite:
            epoch_loss += torch.tensor([acc.get("loss", 0.0), acc.get("n", 0)], dtype=torch.float64)
        elif on_log is not None:
            on_log({"kind": "nonfinite", "step": state.step, "epoch": state.epoch, "skips": guard.skipped,
                    "terms": {k: repr(float(v)) for k, v in terms.items()}})
        micro_i, acc = 0, {}
        if finite and (state.step % log_every == 0 or (max_steps and state.step >= max_steps)):
            keys = sorted(terms)
            vec = torch.tensor([terms[k] for k in keys] + [1.0, window_imgs], dtype=torch.float64)
            all_reduce_sum(vec, dist)
            dt = time.perf_counter() - t0
            rec = {"kind": "step", "step": state.step, "epoch": state.epoch,
                   **{k: float(vec[i] / vec[-2]) for i, k in enumerate(keys)},
                   "lr": optimizer.param_groups[0]["lr"], "images_per_s": float(vec[-1]) / max(dt, 1e-9)}
            t0, window_imgs = time.perf_counter(), 0
            if on_log is not None:
                on_log(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{terms.get('loss', 0.0):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}")
        if on_step is not None:
            on_step(state)
        if should_stop is not None and should_stop(state):
            stopped = True
            break
        if (max_steps and state.step >= max_steps) or state.step_in_epoch >= steps_per_epoch:
            break
    if bar is not None:
        bar.close()
    all_reduce_sum(epoch_loss, dist)
    return {"loss": float(epoch_loss[0] / max(epoch_loss[1], 1)), "skipped_images": skipped, "stopped": stopped}


@torch.no_grad()
def evaluate_detector(model, loader, dataset, device, amp_dtype=None, dist: DistInfo = DistInfo(),
                      iou_types=("bbox", "segm")) -> tuple[dict, list[dict]]:
    """COCO metrics of ``model`` over the images ``loader`` yields (this rank's shard; results are
    gathered on every rank). Returns ({iou_type: {AP, AP50, ...}}, COCO result records)."""
    model.eval()
    results, image_ids, skipped = [], [], 0
    bar = None
    if dist.is_main and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(loader), desc="eval", leave=False, dynamic_ncols=True)
    for images, targets, n_skip in loader:
        skipped += n_skip
        if images:
            with _autocast(device, amp_dtype):
                outputs = model([im.to(device) for im in images])
            ids = [int(t["image_id"]) for t in targets]
            results += to_coco_results(outputs, ids, dataset.label_to_cat)
            image_ids += ids
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if dist.enabled:
        import torch.distributed as tdist

        gathered = [None] * dist.world_size
        tdist.all_gather_object(gathered, (results, image_ids, skipped))
        results = [r for g in gathered for r in g[0]]
        image_ids = [i for g in gathered for i in g[1]]
        skipped = sum(g[2] for g in gathered)
    if not _unwrap(model).roi_heads.has_mask():
        iou_types = tuple(t for t in iou_types if t != "segm")
    metrics = evaluate_coco(dataset.coco, results, iou_types, image_ids=image_ids)
    metrics["count"] = len(image_ids)
    metrics["skipped_images"] = skipped
    return metrics, results


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _checkpoint(raw_model, optimizer, scheduler, scaler, state: DetState, cfg: DetTrainConfig, dataset, metrics=None,
                guard: NonFiniteGuard | None = None) -> dict:
    return {
        "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "nonfinite": guard.state_dict() if guard is not None else {"skipped": 0},
        "epoch": state.epoch, "step": state.step, "step_in_epoch": state.step_in_epoch, "best_ap": state.best_ap,
        "rng": rng_state(), "config": config_to_dict(cfg), "classes": list(dataset.class_names),
        "cat_ids": list(dataset.cat_ids), "model_name": cfg.model.name, "img_size": cfg.data.img_size,
        "metrics": metrics or {}, "kind": "detection",
    }


def _eval_loader(ds, dist: DistInfo, batch: int, workers: int, max_images: int | None = None) -> DataLoader:
    n = len(ds) if max_images is None else min(max_images, len(ds))
    shard = Subset(ds, shard_indices(n, dist.world_size, dist.rank))
    return DataLoader(shard, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate_detection)


def train_detector(cfg: DetTrainConfig, resume: str | None = None) -> dict:
    """Run the detection job ``cfg`` describes; returns the final COCO metrics record, or
    ``{"kind": "preempted", ...}`` after SIGTERM/SIGUSR1 (a checkpoint was saved at the step boundary).
    ``resume``: a checkpoint path or "auto" (the newest valid checkpoint of the run folder). Raises
    ``NonFiniteError`` when the loss or gradients diverge past ``run.max_nonfinite_skips`` (the last
    good checkpoint is kept) and ``DistributedError`` when another rank died or hung."""
    log = get_logger()
    return launch(cfg.run, lambda device, dist, preempt: _train(cfg, resume, device, dist, log, preempt))


def _check_setup(cfg: DetTrainConfig) -> None:
    if cfg.run.amp not in _AMP:
        raise ValueError(f"run.amp must be one of {sorted(_AMP)}, got {cfg.run.amp!r}")
    if cfg.data.img_size < 64 or cfg.data.img_size % 32:
        lo = max(64, cfg.data.img_size // 32 * 32)
        raise ValueError(f"data.img_size must be a multiple of 32 and at least 64, got {cfg.data.img_size}; nearest: {lo} or {lo + 32}")
    if not 0 < cfg.data.scale_min <= cfg.data.scale_max:
        raise ValueError(f"data.scale_min/scale_max: expected 0 < min <= max, got [{cfg.data.scale_min}, {cfg.data.scale_max}]")
    o = cfg.optim
    if o.steps < 1 or o.lr <= 0 or o.warmup_steps < 0 or o.warmup_start_lr < 0:
        raise ValueError(f"optim: expected steps >= 1, lr > 0, warmup_steps >= 0, warmup_start_lr >= 0; got steps={o.steps}, "
                         f"lr={o.lr}, warmup_steps={o.warmup_steps}, warmup_start_lr={o.warmup_start_lr}")


def _train(cfg: DetTrainConfig, resume, device, dist: DistInfo, log, preempt: PreemptionHandler) -> dict:
    out = Path(cfg.run.output or f"runs/{cfg.name}")
    _check_setup(cfg)
    amp_dtype = _AMP[cfg.run.amp]
    micro, accum = _micro_batch(cfg, dist.world_size)
    if cfg.model.sync_bn and dist.enabled and device.type == "cpu":
        raise ValueError("model.sync_bn needs GPUs: torch's SyncBatchNorm does not run on CPU tensors; drop it for CPU runs")
    manager = CheckpointManager(out, keep=cfg.run.keep_checkpoints)
    path, ckpt = find_resume(resume, manager, dist, log, "detection run")
    if ckpt is not None:
        if ckpt.get("kind") != "detection" or ckpt.get("model_name") != cfg.model.name:
            raise ValueError(f"checkpoint {path} holds a {ckpt.get('kind')} {ckpt.get('model_name')!r} model; "
                             f"the config asks for detector {cfg.model.name!r}")
        log.info("resuming from %s (step %d)", path, ckpt["step"])
    torch.backends.cudnn.benchmark = not cfg.run.deterministic
    if cfg.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    # data
    d = cfg.data
    root = det_data_root(cfg)
    masks = cfg.model.name.startswith("maskrcnn")
    train_tf = build_det_transforms(True, d.img_size, scale_range=(d.scale_min, d.scale_max), hflip=d.hflip)
    train_ds = build_coco_dataset(root, d.train_split, train_tf, train=True, masks=masks)
    val_ds = build_coco_dataset(root, d.val_split, build_det_transforms(False, d.img_size), train=False, masks=False)
    if list(val_ds.cat_ids) != list(train_ds.cat_ids):
        raise ValueError(f"train and val annotation files list different categories: {train_ds.cat_ids} vs {val_ds.cat_ids}")
    if ckpt is not None and list(ckpt["cat_ids"]) != list(train_ds.cat_ids):
        raise ValueError(f"checkpoint {path} was trained on category ids {ckpt['cat_ids'][:8]}; the data has {list(train_ds.cat_ids)[:8]}")
    sampler = GlobalBatchSampler(len(train_ds), cfg.optim.batch_size, dist.world_size, dist.rank, accum, cfg.run.seed)
    train_loader = DataLoader(SeededDataset(train_ds), batch_sampler=sampler, num_workers=d.workers,
                              collate_fn=collate_detection, pin_memory=device.type == "cuda",
                              worker_init_fn=ignore_preemption_signals)
    val_loader = _eval_loader(val_ds, dist, micro, d.workers, cfg.run.eval_max_images)

    # model
    torch.manual_seed(cfg.run.seed)
    model = build_detector_from_config(cfg, train_ds.num_classes, load_backbone=ckpt is None)
    if dist.is_main and model.backbone_load_report is not None:
        log.info("backbone weights %s: %s", cfg.model.backbone_weights, model.backbone_load_report.summary())
    if cfg.model.sync_bn and dist.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    raw_model = model
    o = cfg.optim
    optimizer = build_optimizer(raw_model, o.name, o.lr, o.weight_decay, o.momentum, o.nesterov, o.betas)
    scheduler = build_scheduler(optimizer, WarmupMultiStep(o.milestones, o.warmup_steps, o.warmup_start_lr / o.lr, o.gamma))
    scaler = torch.amp.GradScaler(device.type) if cfg.run.amp == "fp16" else None
    guard = NonFiniteGuard(cfg.run.max_nonfinite_skips, check_grads=scaler is None)
    state = DetState()
    if ckpt is not None:
        restore(ckpt, raw_model, optimizer, scheduler, scaler, guard)
        state = DetState(epoch=ckpt["epoch"], step=ckpt["step"], step_in_epoch=ckpt["step_in_epoch"], best_ap=ckpt["best_ap"])
    net = wrap(raw_model, dist, device, cfg.model.compile)

    logger = MetricsLogger(out, enabled=dist.is_main)
    steps_per_epoch = sampler.steps_per_epoch
    total = min(o.steps, cfg.run.max_steps or o.steps)
    if dist.is_main:
        open_run_folder(out, manager, logger, state.step if ckpt is not None else None, log)
        save_config(cfg, out / "config.yaml")
        log.info("%s at %dx%d: %d train / %d val images (%s), %d classes; %d steps of %d images (%d per device x %d "
                 "devices x %d accumulation), %d steps per epoch, lr %.4g", cfg.model.name, d.img_size, d.img_size,
                 len(train_ds), len(val_ds), root, len(train_ds.class_names), total, o.batch_size, micro,
                 dist.world_size, accum, steps_per_epoch, o.lr)
        log.info("training data: %s", train_ds.stats)
    saved = {"step": ckpt["step"] if ckpt is not None else None, "path": path}

    def save(metrics=None):
        """The step checkpoint (rotated) and last.pt."""
        if dist.is_main:
            manager.save(_checkpoint(raw_model, optimizer, scheduler, scaler, state, cfg, train_ds, metrics, guard), state.step)
        saved.update(step=state.step, path=manager.path_for(state.step))

    def run_eval() -> dict:
        metrics, results = evaluate_detector(net, val_loader, val_ds, device, amp_dtype, dist)
        rec = {"kind": "eval", "step": state.step, "epoch": state.epoch, "count": metrics["count"]}
        for t in ("bbox", "segm"):
            if t in metrics:
                rec.update({f"{t}_{k}": v for k, v in metrics[t].items()})
        logger.log(rec)
        if dist.is_main:
            (out / "eval").mkdir(exist_ok=True)
            (out / "eval" / f"results_step{state.step}.json").write_text(json.dumps(results))
            log.info("step %d: COCO metrics on %d %s images\n%s", state.step, metrics["count"], d.val_split,
                     format_coco_table({t: metrics[t] for t in ("bbox", "segm") if t in metrics}))
        score = rec.get("segm_AP", rec.get("bbox_AP", 0.0))
        if score > state.best_ap:
            state.best_ap = score
            if dist.is_main:
                save_atomic(_checkpoint(raw_model, optimizer, scheduler, scaler, state, cfg, train_ds, rec, guard),
                            out / "best.pt")
        return rec

    def on_step(st: DetState):
        every = cfg.run.ckpt_every_steps
        if every and st.step % every == 0 and st.step < total:
            save()
        if cfg.run.eval_every_steps and st.step % cfg.run.eval_every_steps == 0 and st.step < total:
            run_eval()
            net.train()

    def on_log(rec):
        logger.log(rec)
        if rec["kind"] == "step" and dist.is_main and not sys.stderr.isatty():
            log.info("step %d/%d loss %.4f (%s) lr %.4g %.2f img/s", rec["step"], total, rec["loss"],
                     ", ".join(f"{k[5:]} {v:.3f}" for k, v in rec.items() if k.startswith("loss_")), rec["lr"],
                     rec["images_per_s"])

    preempt.on_stuck = emergency_saver(save, saved, state)  # a SIGTERM while blocked: save, then exit

    def preempted() -> dict:
        return stop_for_preemption(save, saved, state, dist, preempt, logger, log)

    try:
        while state.step < total:
            sampler.set_epoch(state.epoch, state.step_in_epoch)
            t0 = time.perf_counter()
            tr = train_det_epoch(net, optimizer, scheduler, train_loader, device, state, accum_steps=accum,
                                 steps_per_epoch=steps_per_epoch, amp_dtype=amp_dtype, scaler=scaler,
                                 clip_grad_norm=o.clip_grad_norm, seed=cfg.run.seed, dist=dist, log_every=cfg.run.log_every,
                                 max_steps=total, on_step=on_step, on_log=on_log, guard=guard,
                                 should_stop=lambda st: preempt.should_stop(dist, device))
            logger.log({"kind": "epoch", "step": state.step, "epoch": state.epoch, "train_loss": tr["loss"],
                        "seconds": time.perf_counter() - t0, "skipped_images": tr["skipped_images"]})
            if tr["skipped_images"] and dist.is_main:
                log.warning("epoch %d: skipped %d unreadable training images", state.epoch, tr["skipped_images"])
            if state.step_in_epoch >= steps_per_epoch:
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
            if tr["stopped"] and state.step < total:
                return preempted()
            if state.step < total:
                save()
        rec = run_eval()
        save(rec)
    except NonFiniteError as e:
        logger.log({"kind": "diverged", "step": e.step, "epoch": state.epoch, "terms": {k: repr(v) for k, v in e.terms.items()}})
        where = saved["path"] or "none (no checkpoint was written yet)"
        raise NonFiniteError(f"{e}; stopped without saving: the last good checkpoint is {where}", step=e.step,
                             epoch=e.epoch, terms=e.terms, bad_params=e.bad_params, ranks=e.ranks) from None
    finally:
        logger.close()
    barrier(dist)
    if dist.is_main:
        keys = [(f"{t}_{k}", f"{t} {k}") for t in ("segm", "bbox") for k in ("AP", "AP50")]
        plot_curves(out / "metrics.jsonl", out / "curves.png", title=f"{cfg.model.name} ({cfg.name})", metrics=keys,
                    x="step", ylabel="COCO AP (%)")
        log.info("done: %s (checkpoints, metrics.jsonl, curves.png, eval/)", out)
    return rec


def load_detector(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode on ``device``, checkpoint dict) from a ``botnet det-train`` checkpoint, or
    from a .safetensors file with its card (``botnet export --format safetensors``; the dict is then
    the card plus "model")."""
    if Path(path).suffix.lower() == ".safetensors":
        from ..models.weights import _read_file, read_card

        weights = _read_file(path)  # FileNotFoundError / ValueError naming the file
        card = read_card(path)
        if card.get("kind") != "detection" or not card.get("config"):
            raise ValueError(f"{path}: its card describes no detector (kind {card.get('kind')!r}); "
                             "detector weights come from botnet export --format safetensors of a det-train checkpoint")
        ckpt = {**card, "model": weights}
    else:
        ckpt = load_checkpoint(path)
    if ckpt.get("kind") != "detection":
        raise ValueError(f"{path} is not a detection checkpoint of botnet det-train (kind: {ckpt.get('kind')!r})")
    cfg = config_from_dict(ckpt["config"], DetTrainConfig)
    model = build_detector_from_config(cfg, len(ckpt["classes"]) + 1, load_backbone=False)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, ckpt


def evaluate_detection_checkpoint(path: str, data_root: str | None = None, split: str | None = None, batch_size: int = 2,
                                  workers: int = 2, device: str = "auto", output: str | None = None,
                                  max_images: int | None = None) -> dict:
    """COCO metrics of a detection checkpoint on ``data_root``/``split`` (default: its training data's
    validation split). ``output``: also write the metrics and the COCO results JSON there."""
    dev = resolve_device(device)
    model, ckpt = load_detector(path, dev)
    cfg = config_from_dict(ckpt["config"], DetTrainConfig)
    root = Path(data_root) if data_root is not None else det_data_root(cfg)
    split = split or cfg.data.val_split
    ds = build_coco_dataset(root, split, build_det_transforms(False, cfg.data.img_size), train=False, masks=False)
    if list(ds.cat_ids) != list(ckpt["cat_ids"]):
        raise ValueError(f"the data's category ids {list(ds.cat_ids)[:8]} differ from the checkpoint's {ckpt['cat_ids'][:8]}")
    loader = _eval_loader(ds, DistInfo(), batch_size, workers, max_images)
    amp = _AMP.get(cfg.run.amp) if dev.type == "cuda" else None
    metrics, results = evaluate_detector(model, loader, ds, dev, amp)
    res = {"checkpoint": str(path), "model": cfg.model.name, "step": ckpt["step"], "data": str(root), "split": split, **metrics}
    if output:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(res, indent=2))
        (out / "results.json").write_text(json.dumps(results))
    return res
