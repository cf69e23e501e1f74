"""Typed detection recipes (``task: detection``; ``botnet train`` / ``det-train``): the same YAML +
``key=value`` machinery and range checks as the classification ``TrainConfig``, with the paper's
COCO settings (A.2, Table 15) as defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..config import in_range, optim_ranges, run_ranges

__all__ = ["DetModelConfig", "DetDataConfig", "DetOptimConfig", "DetRunConfig", "DetTrainConfig"]


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


@dataclass
class DetOptimConfig:
    name: str = "sgd"
    batch_size: int = 64  # global batch over devices and accumulation steps
    micro_batch: Union[int, None] = None  # per device and step; None: batch_size / world size
    lr: float = 0.1  # for the global batch as given (not rescaled)
    momentum: float = 0.9
    nesterov: bool = False
    betas: list = field(default_factory=lambda: [0.9, 0.999])  # AdamW only
    weight_decay: float = 4e-5
    steps: int = 22_500  # total optimizer steps (Table 15 1x)
    milestones: list = field(default_factory=lambda: [15_000, 17_500])
    gamma: float = 0.1
    warmup_steps: int = 500
    warmup_start_lr: float = 0.0067
    clip_grad_norm: Union[float, None] = None


@dataclass
class DetRunConfig:
    output: Union[str, None] = None  # default: runs/<recipe name>
    seed: int = 0
    amp: str = "bf16"  # "bf16", "fp16" or "none"
    log_every: int = 20
    eval_every_steps: int = 0  # 0: evaluate at the end only
    ckpt_every_steps: int = 1000
    max_steps: Union[int, None] = None
    eval_max_images: Union[int, None] = None  # evaluate on the first N validation images (quick checks)
    deterministic: bool = False
    device: str = "auto"
    keep_checkpoints: int = 3  # step checkpoints kept (ckpt_<step>.pt); last.pt points at the newest
    max_nonfinite_skips: int = 0  # non-finite steps skipped before the run stops (bf16 spikes)
    dist_timeout_s: float = 600.0  # a rank that died or hangs makes the others fail after this long


@dataclass
class DetTrainConfig:
    model: DetModelConfig = field(default_factory=DetModelConfig)
    data: DetDataConfig = field(default_factory=DetDataConfig)
    optim: DetOptimConfig = field(default_factory=DetOptimConfig)
    run: DetRunConfig = field(default_factory=DetRunConfig)
    name: str = "det"
    task: str = "detection"

    def ranges(self) -> list[tuple[str, object, str, bool]]:
        """(key, value, what is expected, ok) for every bounded field (``botnet.config.validate_config``)."""
        d, o, r = self.data, self.optim, self.run
        ms = o.milestones
        return [
            ("model.name", self.model.name, "a detector name ({maskrcnn,fasterrcnn}_<backbone>_fpn)", bool(self.model.name)),
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
            *run_ranges(r),
            ("run.eval_every_steps", r.eval_every_steps, "an int >= 0 (0: at the end only)", r.eval_every_steps >= 0),
            ("run.eval_max_images", r.eval_max_images, "null or an int >= 1", r.eval_max_images is None or r.eval_max_images >= 1),
        ]
