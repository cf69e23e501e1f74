"""Detection / instance segmentation as a task of the one training loop: BoTNet Mask R-CNN /
Faster R-CNN on COCO-format data.

``DetectionTask(cfg)`` gives the ``Trainer`` the detector of ``botnet.detection`` (built from a
``DetTrainConfig``), COCO-format data (or the built-in scenes) with scale jitter, the model's loss
dict as the loss terms, SGD with the paper's warmup + step schedule (Table 15) and COCO AP with
faster-coco-eval (best.pt: the highest mask AP, box AP for Faster R-CNN). ``train_detector(cfg)``
runs a recipe; ``evaluate_detector`` and ``evaluate_detection_checkpoint`` measure a detector.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as tdist
from torch import nn

from ..checkpoint import Checkpoint, open_checkpoint
from ..config import ConfigError, DetTrainConfig, config_from_dict, validate_config
from ..data import build_coco_dataset, build_det_transforms, collate_detection
from ..data.coco_shards import coco_index_path
from ..detection import parse_detector_name
from ..detection.evaluate import evaluate_coco, format_coco_table, to_coco_results
from ..detection.loading import build_detector_from_config, det_data_root, load_detector
from ..models.precision import prepare_inference
from .distributed import DistInfo
from .launch import resolve_device
from .metrics import get_logger, plot_curves
from .optim import WarmupMultiStep, build_scheduler
from .epoch import autocast
from .task import Callback, Task, TaskData
from .trainer import Trainer, eval_loader

__all__ = ["DetectionTask", "train_detector", "evaluate_detector", "evaluate_detection_checkpoint"]


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _gather(results: list, image_ids: list, skipped: int, dist: DistInfo) -> tuple[list, list, int]:
    if not dist.enabled:
        return results, image_ids, skipped

    gathered = [None] * dist.world_size
    tdist.all_gather_object(gathered, (results, image_ids, skipped))
    return [r for g in gathered for r in g[0]], [i for g in gathered for i in g[1]], sum(g[2] for g in gathered)


@torch.no_grad()
def evaluate_detector(model, loader, dataset, device, amp_dtype=None, dist: DistInfo = DistInfo(),
                      iou_types=("bbox", "segm")) -> tuple[dict, list[dict]]:
    """COCO metrics of ``model`` over the images ``loader`` yields (list of (3, S, S) images, list of
    target dicts, n_skipped; this rank's shard; results are gathered on every rank). Returns
    ({iou_type: {AP, AP50, ...}, "count", "skipped_images"}, COCO result records)."""
    model.eval()
    results, image_ids, skipped = [], [], 0
    bar = None
    if dist.is_main and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(loader), desc="eval", leave=False, dynamic_ncols=True)
    for images, targets, n_skip in loader:
        skipped += n_skip
        if images:
            with autocast(device, amp_dtype):
                outputs = model([im.to(device) for im in images])
            ids = [int(t["image_id"]) for t in targets]
            results += to_coco_results(outputs, ids, dataset.label_to_cat)
            image_ids += ids
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    results, image_ids, skipped = _gather(results, image_ids, skipped, dist)
    if not _unwrap(model).roi_heads.has_mask():
        iou_types = tuple(t for t in iou_types if t != "segm")
    metrics = evaluate_coco(dataset.coco, results, iou_types, image_ids=image_ids)
    metrics["count"] = len(image_ids)
    metrics["skipped_images"] = skipped
    return metrics, results


class DetectionTask(Task):
    """Detection with a ``DetTrainConfig`` recipe (``task: detection``)."""

    name = "detection"
    best_mode = "max"
    best_key = "best_ap"
    config_class = DetTrainConfig

    def __init__(self, cfg: DetTrainConfig):
        super().__init__(cfg)
        self.masks = cfg.model.name.startswith("maskrcnn")
        self.best_metric = "segm_AP" if self.masks else "bbox_AP"

    def check(self) -> None:
        validate_config(self.cfg)
        root, d = self.cfg.data.root, self.cfg.data
        for split in (d.train_split, d.val_split) if root is not None else ():
            ann = Path(root) / "annotations" / f"instances_{split}.json"
            if coco_index_path(root, split).is_file():
                continue
            if not (Path(root) / split).is_dir() or not ann.is_file():
                raise ConfigError(f"data folder {root!r} lacks {split}/ or annotations/instances_{split}.json "
                                  f"(expected ROOT/<split>/<images> and ROOT/annotations/instances_<split>.json, "
                                  f"or COCO shards ROOT/{split}.wids.json from `botnet shards --coco`)")
        parse_detector_name(self.cfg.model.name)

    def build_data(self) -> TaskData:
        d = self.cfg.data
        root = det_data_root(self.cfg)
        train_tf = build_det_transforms(True, d.img_size, scale_range=(d.scale_min, d.scale_max), hflip=d.hflip)
        train_ds = build_coco_dataset(root, d.train_split, train_tf, train=True, masks=self.masks)
        val_ds = build_coco_dataset(root, d.val_split, build_det_transforms(False, d.img_size), train=False, masks=False)
        if list(val_ds.cat_ids) != list(train_ds.cat_ids):
            raise ValueError(f"train and val annotation files list different categories: {train_ds.cat_ids} vs "
                             f"{val_ds.cat_ids}")
        self.root = root
        return TaskData(train_ds, val_ds, collate_detection,
                        info={"classes": list(train_ds.class_names), "cat_ids": list(train_ds.cat_ids)})

    def build_model(self, data: TaskData) -> nn.Module:
        model = build_detector_from_config(self.cfg, data.train.num_classes, load_backbone=not self.resumed)
        if model.backbone_load_report is not None:
            get_logger().info("backbone weights %s: %s", self.cfg.model.backbone_weights,
                              model.backbone_load_report.summary())
        return model

    def build_scheduler(self, optimizer, steps_per_epoch: int):
        o = self.cfg.optim
        return build_scheduler(optimizer, WarmupMultiStep(o.milestones, o.warmup_steps, o.warmup_start_lr / o.lr, o.gamma))

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.cfg.optim.steps

    def loss_terms(self, model, images, targets, device) -> dict:
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
                   for t in targets]
        return model(images, targets)

    def evaluate(self, model, loader, run) -> dict:
        metrics, results = evaluate_detector(model, loader, run.data.val, run.device, run.amp_dtype, run.dist)
        rec = {"count": metrics["count"], "skipped_images": metrics["skipped_images"]}
        for t in ("bbox", "segm"):
            if t in metrics:
                rec.update({f"{t}_{k}": v for k, v in metrics[t].items()})
        if run.dist.is_main:
            (run.out / "eval").mkdir(parents=True, exist_ok=True)
            (run.out / "eval" / f"results_step{run.state.step}.json").write_text(json.dumps(results))
            run.log.info("step %d: COCO metrics on %d %s images\n%s", run.state.step, metrics["count"],
                         self.cfg.data.val_split, format_coco_table({t: metrics[t] for t in ("bbox", "segm") if t in metrics}))
        return rec

    def describe(self, data: TaskData) -> str:
        d = self.cfg.data
        return (f"at {d.img_size}x{d.img_size}: {len(data.train)} train / {len(data.val)} val images ({self.root}), "
                f"{len(data.info['classes'])} classes; training data: {data.train.stats}")

    def finish(self, run) -> None:
        keys = [(f"{t}_{k}", f"{t} {k}") for t in ("segm", "bbox") for k in ("AP", "AP50")]
        plot_curves(run.out / "metrics.jsonl", run.out / "curves.png", title=f"{self.cfg.model.name} ({self.cfg.name})",
                    metrics=keys, x="step", ylabel="COCO AP (%)")


def train_detector(cfg: DetTrainConfig, resume: str | None = None, callbacks: Sequence[Callback] = ()) -> dict:
    """Run the detection recipe ``cfg`` (``Trainer.fit``: the final COCO metrics record, or the
    "preempted" record; the errors it raises are listed there)."""
    return Trainer(DetectionTask(cfg), resume, callbacks).fit()


def evaluate_detection_checkpoint(path: str | Checkpoint, data_root: str | None = None, split: str | None = None,
                                  batch_size: int = 2, workers: int = 2, device: str = "auto", output: str | None = None,
                                  max_images: int | None = None, precision: str = "auto") -> dict:
    """COCO metrics of a detection checkpoint on ``data_root``/``split`` (default: its training data's
    validation split); ``path`` may be its ``open_checkpoint``. ``output``: also write the metrics
    and the COCO results JSON there. ``precision``: "auto" (the recipe's ``run.amp`` on CUDA,
    float32 on the CPU), "fp32" or "bf16" (``botnet.models.precision.bf16_detector``)."""
    dev = resolve_device(device)
    ckpt = path if isinstance(path, Checkpoint) else open_checkpoint(path, strict=False)
    model, _ = load_detector(ckpt, dev)
    cfg = config_from_dict(ckpt.config, DetTrainConfig)
    root = Path(data_root) if data_root is not None else det_data_root(cfg)
    split = split or cfg.data.val_split
    ds = build_coco_dataset(root, split, build_det_transforms(False, cfg.data.img_size), train=False, masks=False)
    cat_ids = list(ckpt.get("cat_ids") or [])
    if list(ds.cat_ids) != cat_ids:
        raise ValueError(f"the data's category ids {list(ds.cat_ids)[:8]} differ from the checkpoint's {cat_ids[:8]}")
    loader = eval_loader(ds, DistInfo(), batch_size, workers, collate_detection, max_images=max_images)
    model, amp, name = prepare_inference(model, "detection", precision, dev, cfg.run.amp)
    metrics, results = evaluate_detector(model, loader, ds, dev, amp)
    res = {"checkpoint": ckpt.where, "model": cfg.model.name, "step": ckpt.step, "data": str(root), "split": split,
           "precision": name, **metrics}
    if output:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(res, indent=2))
        (out / "results.json").write_text(json.dumps(results))
    return res
