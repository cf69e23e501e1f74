"""Model registry: ``register_model`` decorates entry points, ``model_entrypoint`` finds one by name;
``create_model`` (``botnet.models._builder``) builds by name with timm's keywords."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable

from torch import nn

__all__ = ["register_model", "list_models", "is_model", "model_entrypoint"]

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
