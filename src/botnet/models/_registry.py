"""Model registry: ``register_model`` decorates entry points, ``model_entrypoint`` finds one by name;
``create_model`` (``botnet.models._builder``) builds by name with timm's keywords."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from typing import Callable

from torch import nn

__all__ = ["register_model", "register_variant", "list_models", "is_model", "model_entrypoint"]

_entrypoints: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its ``__name__``; a second model with the same name is an error."""
    name = fn.__name__
    if name in _entrypoints:
        raise ValueError(f"model {name!r} is already registered")
    _entrypoints[name] = fn
    return fn


def register_variant(name: str, build: Callable[..., nn.Module], doc: str, module: str,
                     **defaults) -> Callable[..., nn.Module]:
    """Register ``name``, a preset of ``build`` with other keyword defaults (a resolution, a config
    name): ``name(**kw)`` is ``build(**{**defaults, **kw})``. The entry point's signature shows the
    defaults (timm reads ``img_size`` from it), its docstring is ``doc``, its ``__module__`` ``module``."""

    def entry(**kw):
        return build(**{**defaults, **kw})

    kw_only, var_kw = inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD
    entry.__signature__ = inspect.Signature([inspect.Parameter(k, kw_only, default=v) for k, v in defaults.items()]
                                            + [inspect.Parameter("kw", var_kw)])
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__, entry.__module__ = doc, module
    return register_model(entry)


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
