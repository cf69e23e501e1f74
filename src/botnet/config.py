"""Typed run configuration: dataclasses filled from YAML recipes and ``key=value`` overrides.

A recipe is a YAML mapping with the sections of ``TrainConfig`` (``model``, ``data``, ``optim``,
``run``). Unknown keys and values of the wrong type are errors that name the key and what was
expected, raised before any work starts. The resolved config is saved beside every checkpoint.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

__all__ = [
    "ConfigError", "ModelConfig", "DataConfig", "OptimConfig", "RunConfig", "TrainConfig",
    "load_config", "apply_overrides", "config_to_dict", "config_from_dict", "save_config",
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


def config_from_dict(data: dict) -> TrainConfig:
    cfg = TrainConfig()
    _fill(cfg, data or {}, "")
    return cfg


def load_config(path: Union[str, Path, None]) -> TrainConfig:
    """Read a YAML recipe (None: all defaults). ``name`` defaults to the file's stem."""
    if path is None:
        return TrainConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found (expected a YAML recipe, e.g. configs/demo.yaml)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    data.setdefault("name", path.stem)
    return config_from_dict(data)


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` strings; values are parsed as YAML (``0.1``, ``true``, ``[1, 2]``,
    ``null``). ``model.kwargs.NAME=VALUE`` sets one entry of the model's extra options."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=0.2")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        parts = key.strip().split(".")
        if parts[:2] == ["model", "kwargs"] and len(parts) == 3:
            cfg.model.kwargs = {**cfg.model.kwargs, parts[2]: value}
            continue
        nested: dict = {}
        node = nested
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
        _fill(cfg, nested, "")
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: TrainConfig, path: Union[str, Path]) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
