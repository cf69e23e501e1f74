"""Recipes from files and dicts into their dataclasses.

``read_recipe(path)`` parses a file once; ``recipe_task(mapping)`` says which task it is for and
``config_from_dict(mapping, cls)`` fills that task's recipe type (``TrainConfig`` by default).
``load_config(path, cls)`` is the two in one, for a caller that knows the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import yaml

from .classification import TrainConfig
from .fields import fill, read_recipe

__all__ = ["config_from_dict", "load_config", "recipe_task"]


def config_from_dict(data: dict, cls: type = TrainConfig):
    """``cls`` (a recipe dataclass: ``TrainConfig``, or ``DetTrainConfig`` for detection) filled from ``data``."""
    cfg = cls()
    fill(cfg, data or {})
    return cfg


def recipe_task(recipe: Union[str, Path, dict, None], overrides: list[str] = (), default: str = "classification") -> str:
    """The ``task`` a recipe names (a ``task=NAME`` override wins); ``default`` when it names none.
    ``recipe``: the mapping ``read_recipe`` gave, or a file (read here)."""
    for item in reversed(list(overrides)):
        if item.strip().startswith("task="):
            return str(yaml.safe_load(item.split("=", 1)[1]))
    if recipe is None:
        return default
    data = recipe if isinstance(recipe, dict) else read_recipe(recipe)
    return data.get("task") or default


def load_config(path: Union[str, Path, None], cls: type = TrainConfig):
    """Read a YAML recipe into ``cls`` (None: all defaults). ``name`` defaults to the file's stem; a
    ``base: FILE`` key names a recipe (relative path) whose values this one overrides."""
    return cls() if path is None else config_from_dict(read_recipe(path), cls)
