"""Image classification as a task of the one training loop (the paper's recipes, Tables 10-14).

``ClassificationTask(cfg)`` gives the ``Trainer`` (``botnet.engine.trainer``) a registered model
(``create_model``, optional ``model.pretrained``), ImageFolder data with the recipe's augmentation,
label-smoothed cross-entropy, SGD/AdamW with the LR scaled linearly to the global batch and a
warmup + cosine schedule, and top-1 / top-5 evaluation (best.pt: the highest top-1, of the EMA when
``run.ema``). Pass ``model=`` / ``train_set=`` / ``val_set=`` to train your own network or data.
``train(cfg)`` runs a recipe; ``evaluate`` and ``evaluate_checkpoint`` measure a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import Checkpoint, open_checkpoint
from ..config import ConfigError, TrainConfig, config_from_dict, validate_config
from ..data import build_dataset, build_transforms, collate_skip_none
from ..models import create_model, model_entrypoint
from ..models.convert import load_pretrained
from ..models.precision import prepare_inference
from .distributed import DistInfo, all_reduce_sum
from .launch import resolve_device
from .metrics import plot_curves
from .optim import WarmupCosine, build_optimizer, build_scheduler
from .epoch import autocast
from .task import Callback, Task, TaskData
from .trainer import Trainer, eval_loader
from .metrics import get_logger

__all__ = ["ClassificationTask", "train", "evaluate", "evaluate_checkpoint", "accuracy_counts", "check_model_config"]


def accuracy_counts(logits: torch.Tensor, target: torch.Tensor, topk=(1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k logits, for each k. logits (B, K), target (B,)."""
    k = min(max(topk), logits.shape[1])
    pred = logits.topk(k, dim=1).indices
    hit = pred.eq(target[:, None])
    return [int(hit[:, : min(t, k)].any(1).sum()) for t in topk]


@torch.no_grad()
def evaluate(model, loader, device, amp_dtype=None, dist: DistInfo = DistInfo()) -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy over this rank's shard, summed over ranks.
    ``loader`` yields (images (B, 3, H, W), targets (B,), n_skipped)."""
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64)  # loss_sum, top1, top5, count, skipped
    for images, targets, n_skip in loader:
        sums[4] += n_skip
        if not images.numel():
            continue
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
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


class ClassificationTask(Task):
    """Classification with a ``TrainConfig`` recipe. ``model``: your own ``nn.Module`` instead of
    ``create_model(cfg.model.name, ...)``; ``train_set`` / ``val_set``: your own datasets of
    ``(image (3, H, W) float tensor, class index)`` instead of ``cfg.data.root``'s folders
    (``classes``: their class names, saved in the checkpoints)."""

    name = "classification"
    best_metric = "top1"
    best_mode = "max"
    best_key = "best_top1"
    config_class = TrainConfig

    def __init__(self, cfg: TrainConfig, model: nn.Module | None = None, train_set=None, val_set=None,
                 classes: Sequence[str] | None = None):
        super().__init__(cfg)
        self.model, self.train_set, self.val_set, self.classes = model, train_set, val_set, classes

    def check(self) -> None:
        validate_config(self.cfg)
        root = self.cfg.data.root
        if self.train_set is None and root is not None and not Path(root).is_dir():
            raise ConfigError(f"data folder {root!r} not found (expected ROOT/train/<class>/* and ROOT/val/<class>/*)")
        if self.model is None:
            model_entrypoint(self.cfg.model.name)  # an unknown name raises, with suggestions
            check_model_config(self.cfg)

    def build_data(self) -> TaskData:
        if self.train_set is not None:
            classes = list(self.classes or [])
            return TaskData(self.train_set, self.val_set if self.val_set is not None else self.train_set,
                            collate_skip_none, info={"classes": classes})
        d = self.cfg.data
        train_tf = build_transforms(True, d.img_size, randaug_magnitude=d.randaug_magnitude, randaug_layers=d.randaug_layers,
                                    crop_pct=d.crop_pct, hflip=d.hflip, scale=(d.scale_min, 1.0))
        eval_tf = build_transforms(False, d.eval_size or d.img_size, crop_pct=d.crop_pct)
        train_ds, val_ds = build_dataset(d.root, "train", train_tf), build_dataset(d.root, "val", eval_tf)
        if val_ds.classes != train_ds.classes:
            raise ValueError(f"train and val class folders differ: {train_ds.classes} vs {val_ds.classes}")
        return TaskData(train_ds, val_ds, collate_skip_none, info={"classes": list(train_ds.classes)})

    def build_model(self, data: TaskData) -> nn.Module:
        if self.model is not None:
            return self.model
        m = self.cfg.model
        model = create_model(m.name, num_classes=len(data.info["classes"]), img_size=self.cfg.data.img_size,
                             drop_rate=m.drop_rate, drop_path_rate=m.drop_path_rate, **m.kwargs)
        if m.pretrained and not self.resumed:

            try:
                report = load_pretrained(model, m.pretrained)
            except ValueError as e:  # another width, nothing matching, not a weight file
                raise ValueError(f"model.pretrained: {e}") from None
            get_logger().info("pretrained %s: %s", m.pretrained, report.summary())
        return model

    def build_optimizer(self, model: nn.Module):
        o = self.cfg.optim
        lr = o.lr * o.batch_size / 256  # the recipes give the LR per 256 images
        return build_optimizer(model, o.name, lr, o.weight_decay, o.momentum, o.nesterov, o.betas)

    def build_scheduler(self, optimizer, steps_per_epoch: int):
        o = self.cfg.optim
        return build_scheduler(optimizer, WarmupCosine(o.epochs * steps_per_epoch, round(o.warmup_epochs * steps_per_epoch),
                                                       o.warmup_start_factor))

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.cfg.optim.epochs * steps_per_epoch

    def loss_terms(self, model, images, targets, device) -> dict:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        return {"loss": F.cross_entropy(model(images), targets, label_smoothing=self.cfg.optim.label_smoothing)}

    def evaluate(self, model, loader, run) -> dict:
        ev = evaluate(model, loader, run.device, run.amp_dtype, run.dist)
        if run.dist.is_main:
            run.log.info("epoch %d: val top-1 %.2f%% top-5 %.2f%% loss %.4f (%d images)", run.state.last_epoch, ev["top1"],
                         ev["top5"], ev["loss"], ev["count"])
        return ev

    def describe(self, data: TaskData) -> str:
        return f"{len(data.train)} train / {len(data.val)} val images, {len(data.info['classes'])} classes"

    def finish(self, run) -> None:
        plot_curves(run.out / "metrics.jsonl", run.out / "curves.png", title=f"{self.cfg.model.name} ({self.cfg.name})")


def train(cfg: TrainConfig, resume: str | None = None, callbacks: Sequence[Callback] = ()) -> dict:
    """Run the classification recipe ``cfg`` (``Trainer.fit``: the result record, or the
    "preempted" record; the errors it raises are listed there)."""
    return Trainer(ClassificationTask(cfg), resume, callbacks).fit()


def evaluate_checkpoint(path: str | Checkpoint, data_root: str | None = None, batch_size: int = 64, workers: int = 2,
                        use_ema: bool = False, device: str = "auto", precision: str = "auto") -> dict:
    """Evaluate a classification checkpoint (a path or its ``open_checkpoint``) on ``data_root``/val
    (default: the data it was trained on) in ``precision`` ("auto": the recipe's ``run.amp`` on CUDA,
    float32 on the CPU; "fp32"; "bf16": ``botnet.models.precision.bf16_classifier``)."""
    ckpt = path if isinstance(path, Checkpoint) else open_checkpoint(path, strict=False)
    ckpt.require("classification", train=True)
    cfg = config_from_dict(ckpt.config)
    dev = resolve_device(device)
    root = data_root if data_root is not None else cfg.data.root
    tf = build_transforms(False, cfg.data.eval_size or cfg.data.img_size, crop_pct=cfg.data.crop_pct)
    ds = build_dataset(root, "val", tf)
    if ds.classes != ckpt.classes:
        raise ValueError(f"the data's classes {ds.classes[:5]}... differ from the checkpoint's {ckpt.classes[:5]}...")
    model = create_model(cfg.model.name, num_classes=len(ckpt.classes), img_size=cfg.data.img_size, **cfg.model.kwargs)
    model.load_state_dict(ckpt.model_state(use_ema))
    model.to(dev)
    loader = eval_loader(ds, DistInfo(), batch_size, workers, collate_skip_none, dev.type == "cuda")
    model, amp, name = prepare_inference(model, "classification", precision, dev, cfg.run.amp)
    res = evaluate(model, loader, dev, amp)
    res.update(checkpoint=ckpt.where, model=cfg.model.name, epoch=ckpt.epoch, step=ckpt.step, ema=use_ema,
               precision=name)
    return res
