"""BoTNet: Bottleneck Transformers for Visual Recognition (Srinivas et al., arXiv:2101.11605).

``import botnet`` imports no torch: the names below and the subpackages (``botnet.models``,
``botnet.layers``, ...) are imported on first use, so the ``botnet`` command's help path stays
light (``botnet.cli``). ``botnet.create_model(...)`` imports ``botnet.models``, which registers our
models with timm when timm is installed.
"""

from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.1.0"
__all__ = ["NetCfg", "ResNet", "create_model", "list_models", "load_model", "__version__"]

_FROM_MODELS = frozenset(__all__) - {"__version__"}


def __getattr__(name: str):
    if name in _FROM_MODELS:
        value = getattr(importlib.import_module(".models", __name__), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | _FROM_MODELS)
