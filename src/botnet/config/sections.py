"""The recipe sections every task shares, and the type of a recipe the training loop runs.

``OptimConfig`` (the ``optim`` section) and ``RunConfig`` (``run``) are one type for every task: a
task's recipe sets its own defaults (``field(default_factory=lambda: OptimConfig(batch_size=64))``).
``Recipe``, the base dataclass of every task's recipe, is the type the ``Trainer``
(``botnet.engine.trainer``) reads: these two sections, and a ``model`` / ``data`` section with the
few fields of ``ModelFields`` / ``DataFields``.
``run_ranges`` / ``optim_ranges`` are the range checks of the shared sections; ``left_at_default``
rejects the fields of a section another task reads (``optim.steps`` in a classification recipe).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Union

from .fields import in_range

__all__ = ["OptimConfig", "RunConfig", "Recipe", "ModelFields", "DataFields", "run_ranges", "optim_ranges",
           "left_at_default", "EPOCH_SCHEDULE", "STEP_SCHEDULE"]

_AMP = ("bf16", "fp16", "none")
_OPTIMIZERS = ("sgd", "adamw")


@dataclass
class OptimConfig:
    """The optimizer, the global batch and the LR schedule. The schedule is per task: classification
    reads ``EPOCH_SCHEDULE`` (epochs, warmup + cosine), detection ``STEP_SCHEDULE`` (steps, warmup +
    steps at ``milestones``); a recipe leaves the other task's fields at their defaults."""

    name: str = "sgd"  # "sgd" (the paper: SGD with momentum) or "adamw"
    epochs: int = 100  # classification: length of the run
    batch_size: int = 1024  # global batch, all devices and accumulation steps together
    micro_batch: Union[int, None] = None  # per device and step; None: batch_size / world size
    lr: float = 0.1  # classification: per 256 images, scaled linearly to the global batch; detection: as given
    momentum: float = 0.9  # SGD only
    nesterov: bool = False
    betas: list = field(default_factory=lambda: [0.9, 0.999])  # AdamW only
    weight_decay: float = 1e-4  # L2 on everything but normalization parameters
    warmup_epochs: float = 5.0  # classification
    warmup_start_factor: float = 0.0  # classification: the first warmup LR as a fraction of lr
    label_smoothing: float = 0.0  # classification
    clip_grad_norm: Union[float, None] = None
    steps: int = 22_500  # detection: total optimizer steps (Table 15 1x)
    milestones: list = field(default_factory=lambda: [15_000, 17_500])  # detection: LR x gamma at these steps
    gamma: float = 0.1  # detection
    warmup_steps: int = 500  # detection
    warmup_start_lr: float = 0.0067  # detection: the first warmup LR


EPOCH_SCHEDULE = ("epochs", "warmup_epochs", "warmup_start_factor", "label_smoothing")  # classification's optim fields
STEP_SCHEDULE = ("steps", "milestones", "gamma", "warmup_steps", "warmup_start_lr")  # detection's


@dataclass
class RunConfig:
    """How a run executes, whatever its task: everything here is read by the ``Trainer``."""

    output: Union[str, None] = None  # default: runs/<recipe name>
    seed: int = 0
    amp: str = "bf16"  # "bf16", "fp16" (with a grad scaler) or "none"
    ema: bool = False
    ema_decay: float = 0.9999
    log_every: int = 20  # steps between step records / log lines
    eval_every: int = 1  # epochs (0: not at epoch ends)
    eval_every_steps: int = 0  # also evaluate every N optimizer steps (0: never by steps)
    eval_max_images: Union[int, None] = None  # evaluate on the first N validation images (quick checks)
    ckpt_every_steps: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends only)
    keep_checkpoints: int = 3  # step checkpoints kept in the run folder (newest first; >= 1)
    max_nonfinite_skips: int = 0  # optimizer steps with a NaN/Inf loss or gradient skipped before the run stops
    dist_timeout_s: float = 600.0  # a collective waiting longer than this for another rank fails (DDP)
    max_steps: Union[int, None] = None  # stop after this many optimizer steps (smoke runs)
    deterministic: bool = False
    device: str = "auto"  # "auto", "cpu", "cuda"


class ModelFields(Protocol):
    """What the trainer reads of a recipe's ``model`` section."""

    name: str
    sync_bn: bool
    compile: bool
    compile_shapes: str
    channels_last: bool


class DataFields(Protocol):
    """What the trainer reads of a recipe's ``data`` section."""

    workers: int
    img_size: int


@dataclass
class Recipe:
    """The type of every task's recipe, as the ``Trainer`` reads it (``TrainConfig``,
    ``DetTrainConfig``, yours): a subclass gives ``model`` and ``data`` their dataclasses (with at
    least the fields of ``ModelFields`` / ``DataFields``), the shared sections their defaults, its
    ``task`` name, and ``ranges()``."""

    model: ModelFields = None  # a subclass gives its own
    data: DataFields = None  # a subclass gives its own
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    name: str = "run"
    task: str = ""

    def ranges(self) -> list[tuple[str, object, str, bool]]:
        """(key, value, what is expected, ok) for every bounded field (``validate_config``)."""
        raise NotImplementedError


def run_ranges(r: RunConfig) -> list[tuple[str, object, str, bool]]:
    """The checks of the ``run`` fields every task shares (``eval_every``'s lower bound is the task's)."""
    return [
        ("run.amp", r.amp, f"one of {', '.join(_AMP)}", r.amp in _AMP),
        ("run.ema_decay", r.ema_decay, "a number in (0, 1)", in_range(r.ema_decay, 0, 1, True, True)),
        ("run.log_every", r.log_every, "an int >= 1", r.log_every >= 1),
        ("run.eval_every_steps", r.eval_every_steps, "an int >= 0 (0: never by steps)", r.eval_every_steps >= 0),
        ("run.eval_max_images", r.eval_max_images, "null or an int >= 1", r.eval_max_images is None or r.eval_max_images >= 1),
        ("run.ckpt_every_steps", r.ckpt_every_steps, "an int >= 0 (0: at epoch ends only)", r.ckpt_every_steps >= 0),
        ("run.keep_checkpoints", r.keep_checkpoints, "an int >= 1", r.keep_checkpoints >= 1),
        ("run.max_nonfinite_skips", r.max_nonfinite_skips, "an int >= 0", r.max_nonfinite_skips >= 0),
        ("run.dist_timeout_s", r.dist_timeout_s, "a number of seconds > 0", r.dist_timeout_s > 0),
        ("run.max_steps", r.max_steps, "null or an int >= 1", r.max_steps is None or r.max_steps >= 1),
        ("run.device", r.device, "auto, cpu, cuda or cuda:N", _device_ok(r.device)),
    ]


def optim_ranges(o: OptimConfig) -> list[tuple[str, object, str, bool]]:
    """The checks of the optimizer fields every task reads."""
    return [
        ("optim.name", o.name, f"one of {', '.join(_OPTIMIZERS)}", o.name in _OPTIMIZERS),
        ("optim.batch_size", o.batch_size, "an int >= 1", o.batch_size >= 1),
        ("optim.micro_batch", o.micro_batch, "null or an int >= 1", o.micro_batch is None or o.micro_batch >= 1),
        ("optim.lr", o.lr, "a number > 0", o.lr > 0),
        ("optim.momentum", o.momentum, "a number in [0, 1)", in_range(o.momentum, 0, 1, hi_open=True)),
        ("optim.betas", o.betas, "two numbers in [0, 1)",
         len(o.betas) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) and in_range(b, 0, 1, hi_open=True)
                                   for b in o.betas)),
        ("optim.weight_decay", o.weight_decay, "a number >= 0", o.weight_decay >= 0),
        ("optim.clip_grad_norm", o.clip_grad_norm, "null or a number > 0", o.clip_grad_norm is None or o.clip_grad_norm > 0),
    ]


def left_at_default(section: str, obj, names: tuple[str, ...], why: str) -> list[tuple[str, object, str, bool]]:
    """A check per field of ``names`` that it still has the default of ``type(obj)``: a recipe that
    sets a field only another task reads (``why`` says what to set instead) is an error."""
    default = type(obj)()
    return [(f"{section}.{n}", getattr(obj, n), f"no value: {why}", getattr(obj, n) == getattr(default, n))
            for n in names]


def compile_ranges(m: ModelFields) -> list[tuple[str, object, str, bool]]:
    """The check of ``model.compile_shapes`` (``botnet.compiling.COMPILE_SHAPES``), which every task reads."""
    from ..compiling import COMPILE_SHAPES

    return [("model.compile_shapes", m.compile_shapes, f"one of {', '.join(COMPILE_SHAPES)}",
             m.compile_shapes in COMPILE_SHAPES)]


def _device_ok(name: str) -> bool:
    if name == "auto":
        return True
    import torch

    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True
