"""The detection recipe (``task: detection``; ``botnet train`` / ``det-train``): the paper's COCO
settings (A.2, Table 15) as defaults, in the shared ``optim`` / ``run`` sections and its own
``model`` / ``data``. Importing it imports no detection model (nor torchvision)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .fields import in_range
from .sections import EPOCH_SCHEDULE, OptimConfig, Recipe, RunConfig, compile_ranges, left_at_default, optim_ranges, run_ranges

__all__ = ["DetModelConfig", "DetDataConfig", "DetTrainConfig", "det_optim", "det_run"]


@dataclass
class DetModelConfig:
    name: str = "maskrcnn_botnet50_fpn"  # {maskrcnn,fasterrcnn}_<backbone>_fpn
    kwargs: dict = field(default_factory=dict)  # create_detector options (mask_head_convs, fpn_channels, rpn_*, box_*)
    backbone_kwargs: dict = field(default_factory=dict)  # options of the backbone model (pos_enc, width, ...)
    backbone_weights: Union[str, None] = None  # ImageNet checkpoint for the backbone (ours, torchvision, timm)
    bn_momentum: Union[float, None] = None  # every BatchNorm's momentum (paper: 0.003 = TF's 0.997); None: 0.1
    bn_eps: Union[float, None] = None  # every BatchNorm's eps (paper: 1e-4); None: 1e-5
    sync_bn: bool = False  # SyncBatchNorm under DDP (the paper; GPUs only)
    compile: bool = False
    compile_shapes: str = "static"  # with compile: "static" (a graph per shape) or "batch" (batch axis dynamic)
    channels_last: bool = False  # the model's weights (and 4-D inputs) in channels_last memory format


@dataclass
class DetDataConfig:
    root: Union[str, None] = None  # ROOT/<split>/ images + ROOT/annotations/instances_<split>.json; None: built-in
    train_split: str = "train"
    val_split: str = "val"
    img_size: int = 1024  # fixed square input, a multiple of 32
    scale_min: float = 0.8  # scale jitter range: [0.8, 1.25] canonical, [0.5, 2.0], [0.1, 2.0]
    scale_max: float = 1.25
    hflip: float = 0.5
    workers: int = 4
    builtin_train: int = 1000  # built-in data only: number of training / validation images and their size
    builtin_val: int = 200
    builtin_img_size: int = 128


def det_optim() -> OptimConfig:
    """The ``optim`` section's detection defaults: a batch of 64 at LR 0.1 (not rescaled), decay 4e-5."""
    return OptimConfig(batch_size=64, weight_decay=4e-5)


def det_run() -> RunConfig:
    """The ``run`` section's detection defaults: a checkpoint every 1000 steps, evaluation by steps / at the end."""
    return RunConfig(ckpt_every_steps=1000, eval_every=0)


@dataclass
class DetTrainConfig(Recipe):
    """A detection recipe: the shared ``optim`` / ``run`` sections at detection's defaults."""

    model: DetModelConfig = field(default_factory=DetModelConfig)
    data: DetDataConfig = field(default_factory=DetDataConfig)
    optim: OptimConfig = field(default_factory=det_optim)
    run: RunConfig = field(default_factory=det_run)
    name: str = "det"
    task: str = "detection"

    def ranges(self) -> list[tuple[str, object, str, bool]]:
        d, o, r = self.data, self.optim, self.run
        ms = o.milestones
        return [
            ("model.name", self.model.name, "a detector name ({maskrcnn,fasterrcnn}_<backbone>_fpn)", bool(self.model.name)),
            *compile_ranges(self.model),
            ("data.img_size", d.img_size, "a multiple of 32, at least 64", d.img_size >= 64 and d.img_size % 32 == 0),
            ("data.scale_min", d.scale_min, "a number > 0, at most data.scale_max", 0 < d.scale_min <= d.scale_max),
            ("data.hflip", d.hflip, "a probability in [0, 1]", in_range(d.hflip, 0, 1)),
            ("data.workers", d.workers, "an int >= 0", d.workers >= 0),
            ("data.builtin_train", d.builtin_train, "an int >= 1", d.builtin_train >= 1),
            ("data.builtin_val", d.builtin_val, "an int >= 1", d.builtin_val >= 1),
            ("data.builtin_img_size", d.builtin_img_size, "an int >= 32", d.builtin_img_size >= 32),
            *optim_ranges(o),
            ("optim.steps", o.steps, "an int >= 1", o.steps >= 1),
            ("optim.milestones", ms, "increasing ints >= 1",
             all(isinstance(m, int) and m >= 1 for m in ms) and list(ms) == sorted(set(ms))),
            ("optim.gamma", o.gamma, "a number in (0, 1]", in_range(o.gamma, 0, 1, lo_open=True)),
            ("optim.warmup_steps", o.warmup_steps, "an int >= 0", o.warmup_steps >= 0),
            ("optim.warmup_start_lr", o.warmup_start_lr, "a number >= 0", o.warmup_start_lr >= 0),
            *left_at_default("optim", o, EPOCH_SCHEDULE, "detection recipes are scheduled in steps (optim.steps, "
                                                        "optim.warmup_steps)"),
            *run_ranges(r),
            ("run.eval_every", r.eval_every, "an int >= 0 (0: not at epoch ends)", r.eval_every >= 0),
        ]
