"""Model registry: ``register_model`` decorates entry points; ``create_model`` builds by name."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "is_model", "model_entrypoint"]

_entrypoints: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its ``__name__``; a second model with the same name is an error."""
    name = fn.__name__
    if name in _entrypoints:
        raise ValueError(f"model {name!r} is already registered")
    _entrypoints[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _entrypoints if fnmatch.fnmatchcase(n, pattern))


def is_model(name: str) -> bool:
    return name in _entrypoints


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    if name not in _entrypoints:
        close = difflib.get_close_matches(name, _entrypoints, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (`botnet list` shows all {len(_entrypoints)} names)")
    return _entrypoints[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model. Keyword arguments go to the entry point: constructor options
    (``num_classes``, ``in_chans``, ``img_size``, ``drop_rate``, ``drop_path_rate``, ``act_layer``,
    ``norm_layer``, ``zero_init_last``) and any architecture field of ``NetCfg``
    (``layers``, ``attn_layers``, ``pos_enc``, ``content``, ``num_heads``, ``stride_in_1x1``, ...).
    """
    model = model_entrypoint(name)(**kwargs)
    model.model_name = name
    return model
