"""Typed run configuration: dataclasses filled from YAML recipes and ``key=value`` overrides.

A recipe is a YAML mapping with the sections of ``TrainConfig`` (``model``, ``data``, ``optim``,
``run``) and the ``task`` it is for ("classification" by default; "detection" recipes fill a
``botnet.detection.config.DetTrainConfig``; ``recipe_task`` reads it). Unknown keys and values of the wrong type are errors that name the key and what was
expected, raised before any work starts. The resolved config is saved beside every checkpoint.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .recipes import find_recipe

__all__ = [
    "ConfigError", "ModelConfig", "DataConfig", "OptimConfig", "RunConfig", "TrainConfig",
    "load_config", "recipe_task", "apply_overrides", "in_range", "run_ranges", "optim_ranges", "config_to_dict", "config_from_dict", "save_config", "validate_config",
]


class ConfigError(ValueError):
    """A recipe or override that cannot be used; the message names the key and what was expected."""


@dataclass
class ModelConfig:
    name: str = "botnet50"
    kwargs: dict = field(default_factory=dict)  # extra create_model options (e.g. se_stages, act)
    drop_rate: float = 0.0  # dropout on the pooled features (the "dropout on the logits" of Table 14)
    drop_path_rate: float = 0.0  # DropConnect
    pretrained: Union[str, None] = None  # ImageNet ResNet checkpoint (ours, torchvision or timm)
    sync_bn: bool = False
    channels_last: bool = False
    compile: bool = False


@dataclass
class DataConfig:
    root: Union[str, None] = None  # ROOT/train/<class>/*, ROOT/val/<class>/*; None: built-in shapes
    img_size: int = 224
    eval_size: Union[int, None] = None  # defaults to img_size
    crop_pct: float = 0.875
    scale_min: float = 0.08  # RandomResizedCrop lower scale
    hflip: float = 0.5
    randaug_magnitude: Union[int, None] = None  # RandAugment (2 layers) when set: 10, 15 or 24
    randaug_layers: int = 2
    workers: int = 4


@dataclass
class OptimConfig:
    name: str = "sgd"  # "sgd" (the paper: SGD with momentum) or "adamw"
    epochs: int = 100
    batch_size: int = 1024  # global batch, all devices and accumulation steps together
    micro_batch: Union[int, None] = None  # per device and step; None: batch_size / world size
    lr: float = 0.1  # per 256 images; scaled linearly to the global batch
    momentum: float = 0.9  # SGD only
    nesterov: bool = False
    betas: list = field(default_factory=lambda: [0.9, 0.999])  # AdamW only
    weight_decay: float = 1e-4  # L2 on everything but normalization parameters
    warmup_epochs: float = 5.0
    warmup_start_factor: float = 0.0
    label_smoothing: float = 0.0
    clip_grad_norm: Union[float, None] = None


@dataclass
class RunConfig:
    output: Union[str, None] = None  # default: runs/<recipe name>
    seed: int = 0
    amp: str = "bf16"  # "bf16", "fp16" (with a grad scaler) or "none"
    ema: bool = False
    ema_decay: float = 0.9999
    log_every: int = 20  # steps between step records / log lines
    eval_every: int = 1  # epochs
    ckpt_every_steps: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends only)
    keep_checkpoints: int = 3  # step checkpoints kept in the run folder (newest first; >= 1)
    max_nonfinite_skips: int = 0  # optimizer steps with a NaN/Inf loss or gradient skipped before the run stops
    dist_timeout_s: float = 600.0  # a collective waiting longer than this for another rank fails (DDP)
    max_steps: Union[int, None] = None  # stop after this many optimizer steps (smoke runs)
    deterministic: bool = False
    device: str = "auto"  # "auto", "cpu", "cuda"


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    name: str = "run"
    task: str = "classification"

    def ranges(self) -> list[tuple[str, object, str, bool]]:
        """(key, value, what is expected, ok) for every bounded field (``validate_config``)."""
        return _check_range(self)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(value: Any, tp, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is list:
        if isinstance(value, (list, tuple)):
            return list(value)
    else:
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _fill(obj, data: dict, prefix: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown key {full!r}; expected one of: {', '.join(prefix + n for n in names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _fill(current, value, full + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def config_from_dict(data: dict, cls: type = TrainConfig):
    """``cls`` (a config dataclass: ``TrainConfig``, or ``DetTrainConfig`` for detection) filled from ``data``."""
    cfg = cls()
    _fill(cfg, data or {}, "")
    return cfg


def recipe_file(name_or_path: Union[str, Path]) -> Path:
    """The file of a recipe given by path or by shipped name (``demo``, ``detection/coco_3x_1024``)."""
    found = find_recipe(name_or_path)
    if found is None:
        raise ConfigError(f"recipe {str(name_or_path)!r} not found: expected a YAML file or a shipped recipe name "
                          f"(`botnet recipes` lists them, e.g. demo, detection/demo)")
    return found


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    """A recipe's mapping; ``base: other.yaml`` (relative to the file, or a shipped name) is read first
    and deep-merged under it."""
    path = recipe_file(path)
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself ({' -> '.join(str(p) for p in seen)})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, optim, run), got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    relative = path.parent / str(base)
    return _merge(_read_yaml(relative if relative.is_file() else Path(str(base)), seen + (path.resolve(),)), data)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def recipe_task(path: Union[str, Path, None], overrides: list[str] = (), default: str = "classification") -> str:
    """The ``task`` a recipe names (a ``task=NAME`` override wins); ``default`` when it names none."""
    for item in reversed(list(overrides)):
        if item.strip().startswith("task="):
            return str(yaml.safe_load(item.split("=", 1)[1]))
    if path is None:
        return default
    task = _read_yaml(Path(path)).get("task", default)
    if not isinstance(task, str):
        raise ConfigError(f"{path}: task: expected a task name (classification, detection), got {task!r}")
    return task


def load_config(path: Union[str, Path, None], cls: type = TrainConfig):
    """Read a YAML recipe into ``cls`` (None: all defaults). ``name`` defaults to the file's stem; a
    ``base: FILE`` key names a recipe (relative path) whose values this one overrides."""
    if path is None:
        return cls()
    path = recipe_file(path)
    data = _read_yaml(path)
    data["name"] = data.get("name") or path.stem
    return config_from_dict(data, cls)


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` strings; values are parsed as YAML (``0.1``, ``true``, ``[1, 2]``,
    ``null``). ``model.kwargs.NAME=VALUE`` (or any other dict field of ``model``, e.g. ``model.backbone_kwargs``) sets one entry."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=0.2")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        parts = key.strip().split(".")
        if len(parts) == 3 and parts[0] == "model" and isinstance(getattr(cfg.model, parts[1], None), dict):
            setattr(cfg.model, parts[1], {**getattr(cfg.model, parts[1]), parts[2]: value})  # model.kwargs.NAME=...
            continue
        nested: dict = {}
        node = nested
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
        _fill(cfg, nested, "")
    return cfg


_AMP = ("bf16", "fp16", "none")
_OPTIMIZERS = ("sgd", "adamw")


def in_range(v, lo, hi, lo_open=False, hi_open=False) -> bool:
    """lo <= v <= hi (strict at an open end)."""
    return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)


def run_ranges(r) -> list[tuple[str, object, str, bool]]:
    """The checks of the ``run`` fields the training loop reads (every task's recipe has them)."""
    return [
        ("run.amp", r.amp, f"one of {', '.join(_AMP)}", r.amp in _AMP),
        ("run.log_every", r.log_every, "an int >= 1", r.log_every >= 1),
        ("run.ckpt_every_steps", r.ckpt_every_steps, "an int >= 0 (0: at epoch ends only)", r.ckpt_every_steps >= 0),
        ("run.keep_checkpoints", r.keep_checkpoints, "an int >= 1", r.keep_checkpoints >= 1),
        ("run.max_nonfinite_skips", r.max_nonfinite_skips, "an int >= 0", r.max_nonfinite_skips >= 0),
        ("run.dist_timeout_s", r.dist_timeout_s, "a number of seconds > 0", r.dist_timeout_s > 0),
        ("run.max_steps", r.max_steps, "null or an int >= 1", r.max_steps is None or r.max_steps >= 1),
        ("run.device", r.device, "auto, cpu, cuda or cuda:N", _device_ok(r.device)),
    ]


def optim_ranges(o) -> list[tuple[str, object, str, bool]]:
    """The checks of the optimizer fields every task's recipe has."""
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


def _check_range(cfg: TrainConfig) -> list[tuple[str, object, str, bool]]:
    """(key, value, what is expected, ok) for every bounded field of a classification recipe."""
    m, d, o, r = cfg.model, cfg.data, cfg.optim, cfg.run
    between = in_range
    return [
        ("model.name", m.name, "a model name (see `botnet list`)", bool(m.name)),
        ("model.drop_rate", m.drop_rate, "a probability in [0, 1)", between(m.drop_rate, 0, 1, hi_open=True)),
        ("model.drop_path_rate", m.drop_path_rate, "a probability in [0, 1)", between(m.drop_path_rate, 0, 1, hi_open=True)),
        ("data.img_size", d.img_size, "an int >= 8 (pixels)", d.img_size >= 8),
        ("data.eval_size", d.eval_size, "null or an int >= 8", d.eval_size is None or d.eval_size >= 8),
        ("data.crop_pct", d.crop_pct, "a fraction in (0, 1]", between(d.crop_pct, 0, 1, lo_open=True)),
        ("data.scale_min", d.scale_min, "a fraction in (0, 1]", between(d.scale_min, 0, 1, lo_open=True)),
        ("data.hflip", d.hflip, "a probability in [0, 1]", between(d.hflip, 0, 1)),
        ("data.randaug_magnitude", d.randaug_magnitude, "null or an int in [0, 30]",
         d.randaug_magnitude is None or between(d.randaug_magnitude, 0, 30)),
        ("data.randaug_layers", d.randaug_layers, "an int >= 1", d.randaug_layers >= 1),
        ("data.workers", d.workers, "an int >= 0", d.workers >= 0),
        ("optim.epochs", o.epochs, "an int >= 1", o.epochs >= 1),
        *optim_ranges(o),
        ("optim.warmup_epochs", o.warmup_epochs, "a number >= 0", o.warmup_epochs >= 0),
        ("optim.warmup_start_factor", o.warmup_start_factor, "a number in [0, 1]", between(o.warmup_start_factor, 0, 1)),
        ("optim.label_smoothing", o.label_smoothing, "a number in [0, 1)", between(o.label_smoothing, 0, 1, hi_open=True)),
        *run_ranges(r),
        ("run.ema_decay", r.ema_decay, "a number in (0, 1)", between(r.ema_decay, 0, 1, True, True)),
        ("run.eval_every", r.eval_every, "an int >= 1", r.eval_every >= 1),
    ]


def _device_ok(name: str) -> bool:
    if name == "auto":
        return True
    import torch

    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True


def validate_config(cfg):
    """Check every value of a recipe (``TrainConfig``, ``DetTrainConfig``, any config with a
    ``ranges()`` method) is in its range (types are checked when the config is filled).

    Raises ``ConfigError`` naming the first bad key, its value and what was expected; returns
    ``cfg``. Whether the model accepts ``data.img_size`` is checked by the engine (it depends on
    the model)."""
    for key, value, expected, ok in cfg.ranges():
        if not ok:
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: TrainConfig, path: Union[str, Path]) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
