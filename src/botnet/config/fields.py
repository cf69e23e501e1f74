"""Filling recipe dataclasses from YAML and ``key=value`` overrides: types checked, unknown keys named.

``read_recipe(path)`` parses a recipe file once (``base:`` chains merged, ``name`` filled in);
``fill`` puts a mapping into a dataclass, ``apply_overrides`` puts ``section.key=value`` strings;
``validate_config`` runs a recipe's range checks (``ranges()``). Knows no recipe's fields: those are
in ``botnet.config.sections`` (shared), ``.classification`` and ``.detection``.
"""

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from ..recipes import find_recipe

__all__ = ["ConfigError", "fill", "recipe_file", "read_recipe", "apply_overrides", "in_range", "validate_config",
           "config_to_dict", "save_config"]


class ConfigError(ValueError):
    """A recipe or override that cannot be used; the message names the key and what was expected."""


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


def fill(obj, data: dict, prefix: str = "") -> None:
    """Set the fields of the dataclass ``obj`` (nested ones too) from ``data``; ``prefix`` starts the key names in errors."""
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
            fill(current, value, full + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


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


def read_recipe(path: Union[str, Path]) -> dict:
    """The mapping of a recipe file (a path or a shipped name), ``base`` chain merged, parsed once:
    ``name`` defaults to the file's stem, and a ``task`` must be a name."""
    path = recipe_file(path)
    data = _read_yaml(path)
    data["name"] = data.get("name") or path.stem
    task = data.get("task")
    if task is not None and not isinstance(task, str):
        raise ConfigError(f"{path}: task: expected a task name (classification, detection), got {task!r}")
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(cfg, overrides: list[str]):
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
        fill(cfg, nested)
    return cfg


def in_range(v, lo, hi, lo_open=False, hi_open=False) -> bool:
    """lo <= v <= hi (strict at an open end)."""
    return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)


def validate_config(cfg):
    """Check every value of a recipe (``TrainConfig``, ``DetTrainConfig``, any ``Recipe``) is in its range (types are checked when the config is filled).

    Raises ``ConfigError`` naming the first bad key, its value and what was expected; returns
    ``cfg``. Whether the model accepts ``data.img_size`` is checked by the engine (it depends on
    the model)."""
    for key, value, expected, ok in cfg.ranges():
        if not ok:
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    return cfg


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg, path: Union[str, Path]) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
