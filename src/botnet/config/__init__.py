"""Typed recipes: dataclasses filled from YAML files and ``key=value`` overrides.

A recipe is a YAML mapping with the sections ``model``, ``data``, ``optim`` and ``run``, and the
``task`` it is for ("classification" by default). The ``optim`` (``OptimConfig``) and ``run``
(``RunConfig``) sections are one type for every task (``.sections``); ``model`` and ``data`` are the
task's: ``TrainConfig`` (``.classification``) and ``DetTrainConfig`` (``.detection``) sit side by
side. ``Recipe`` is the type the training loop reads. Unknown keys and values of the wrong type are
errors that name the key and what was expected, raised before any work starts (``.fields``). The
resolved config is saved beside every checkpoint.
"""

from .classification import DataConfig, ModelConfig, TrainConfig
from .detection import DetDataConfig, DetModelConfig, DetTrainConfig
from .fields import (ConfigError, apply_overrides, config_to_dict, fill, in_range, read_recipe, recipe_file, save_config,
                     validate_config)
from .load import config_from_dict, load_config, recipe_task
from .sections import OptimConfig, Recipe, RunConfig, optim_ranges, run_ranges

__all__ = [
    "ConfigError", "ModelConfig", "DataConfig", "OptimConfig", "RunConfig", "TrainConfig", "Recipe",
    "DetModelConfig", "DetDataConfig", "DetTrainConfig",
    "load_config", "read_recipe", "recipe_task", "recipe_file", "apply_overrides", "fill", "in_range", "run_ranges",
    "optim_ranges", "config_to_dict", "config_from_dict", "save_config", "validate_config",
]
