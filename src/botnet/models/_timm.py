"""Our models in timm's registry: ``timm.create_model("botnet50", num_classes=10)`` after ``import botnet.models``
(before or after ``import timm``).

Names. A name that starts with "botnet" keeps it (``botnet50``, ``botnet_s1_128``, ``botnet_t7``);
every other name gets the prefix ``botnet_`` (our ``resnet50`` is timm's ``botnet_resnet50``,
``seresnet50`` is ``botnet_seresnet50``), because timm has its own ``resnet50``, ``seresnet50``, ...
So the timm name of a model never depends on the timm version, and timm's own models are never
replaced: a name timm already has (a future timm adding ``botnet50``, say) is skipped with a warning.
``timm_name(name)`` gives the timm name of one of ours.

Entry points go through timm's ``build_model_with_cfg``, so timm's keywords behave as for its own
models: ``features_only`` / ``out_indices`` give timm's ``FeatureListNet``, ``checkpoint_path``
loads after building, the ``pretrained_cfg`` holds input size, crop and mean/std for
``timm.data.resolve_data_config``. ``pretrained=True`` raises (no weights are downloadable) unless a
weight file is given the timm way, ``pretrained_cfg_overlay=dict(file=PATH)``.

Registration. ``import botnet.models`` (which any use of a model does: ``botnet.create_model``,
``from botnet import ResNet``, ...) registers our models with timm when timm is already imported;
when timm is installed but not imported, it puts a one-shot finder on ``sys.meta_path`` that lets
``import timm`` run as usual, then registers our models and removes itself. Either import order
works, and a process that never imports timm never pays for it. ``import botnet`` alone imports
neither torch nor timm (``botnet --help``). ``register_timm_models()`` registers models added
later. Without timm this costs one ``find_spec``.

Why lazy, measured 2026-12-07 on the 2-core development machine (AMD EPYC, torch 2.14, timm 1.0.31,
``python -X importtime``, idle): ``import botnet.models`` takes 1.7 s; ``import timm.models`` after
it adds 1.5 s, because timm imports torchvision (``timm.layers._fx``), which imports
``torch._dynamo`` (1.0 s), while botnet's layers and models import torchvision only when used.
Registering our 35 models takes 1-2 ms. ``botnet list`` therefore runs in about 2 s instead of 3.7 s
(docs/benchmarks.md, "CLI start-up").
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import warnings
from functools import partial

from ._builder import create_model
from ._registry import list_models, model_entrypoint
from .convert import timm_filter_fn
from .timm_botnets import IMAGENET_MEAN, IMAGENET_STD
from .timm_cfg import TIMM_OWN_NAMES, finish_timm_model, register_fx_leaves, timm_pretrained_cfg
from .weights import NO_WEIGHTS_MESSAGE

__all__ = ["TIMM_PREFIX", "timm_name", "register_timm_models", "install"]

TIMM_PREFIX = "botnet_"
default_cfgs: dict[str, dict] = {}  # read by timm's register_model (old-style per-name cfg dicts)
_registered: dict[str, str | None] = {}  # our name -> timm name (None: skipped, timm has the name)


def timm_name(name: str) -> str:
    """The name of our model ``name`` in timm's registry."""
    return name if name.startswith("botnet") and name not in TIMM_OWN_NAMES else TIMM_PREFIX + name


def _default_cfg(fn) -> dict:
    p = inspect.signature(fn).parameters.get("img_size")
    size = p.default if p is not None and isinstance(p.default, int) else 224
    return dict(url="", num_classes=1000, input_size=(3, size, size), crop_pct=0.875, interpolation="bilinear",
                mean=IMAGENET_MEAN, std=IMAGENET_STD, first_conv="conv1", classifier="fc", license="apache-2.0",
                pool_size=(-(-size // 32),) * 2)


def _timm_entry(our_name: str, name: str, pretrained: bool = False, **kwargs):
    from timm.models import build_model_with_cfg, resolve_pretrained_cfg

    if pretrained:
        cfg = resolve_pretrained_cfg(name, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay"))
        if not cfg.has_weights:
            raise ValueError(f"timm.create_model({name!r}, pretrained=True): {NO_WEIGHTS_MESSAGE} (with timm: "
                             "checkpoint_path=PATH, or pretrained=True with pretrained_cfg_overlay=dict(file=PATH))")
    model = build_model_with_cfg(partial(create_model, our_name), name, pretrained, pretrained_filter_fn=timm_filter_fn,
                                 **kwargs)
    return finish_timm_model(model)


def _make_entry(ours: str, name: str, doc: str | None):
    def entry_fn(pretrained=False, **kwargs):
        return _timm_entry(ours, name, pretrained, **kwargs)

    entry_fn.__name__ = entry_fn.__qualname__ = name
    entry_fn.__module__ = __name__
    entry_fn.__doc__ = f"botnet.{ours}: {(doc or '').strip()}"
    entry_fn.botnet_name = ours
    return entry_fn


def register_timm_models() -> dict[str, str]:
    """Register every model of ours not yet in timm's registry; returns {our name: timm name}.
    Safe to call again (e.g. after registering more models of your own)."""
    import timm.models

    module = sys.modules[__name__]
    register_fx_leaves()
    for ours in list_models():
        if ours in _registered:
            continue
        name = timm_name(ours)
        if timm.models.is_model(name):
            warnings.warn(f"botnet: timm already has a model {name!r}; ours ({ours}) is not registered with timm", stacklevel=2)
            _registered[ours] = None
            continue
        entry = model_entrypoint(ours)
        entry_fn = _make_entry(ours, name, entry.__doc__)
        default_cfgs[name] = {**_default_cfg(entry), **timm_pretrained_cfg(ours)}
        setattr(module, name, entry_fn)
        timm.models.register_model(entry_fn)
        _registered[ours] = name
    return {k: v for k, v in _registered.items() if v}


def _register_quietly() -> None:
    try:
        register_timm_models()
    except Exception as e:  # never break `import timm` for its other users
        warnings.warn(f"botnet: could not register its models with timm ({type(e).__name__}: {e})", stacklevel=2)


class _AfterTimmImport:
    """A ``sys.meta_path`` finder that lets ``import timm`` run as usual (the next finder finds it),
    then registers our models and removes itself: it acts on the one name "timm", once."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_register(module):
            exec_module(module)
            _remove_hook()
            _register_quietly()

        spec.loader.exec_module = exec_and_register
        return spec


_hook = _AfterTimmImport()


def _remove_hook() -> None:
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


def install() -> None:
    """Register our models with timm: now when timm is imported, right after ``import timm`` when it
    is installed but not yet imported (a one-shot ``sys.meta_path`` hook), never without timm."""
    if "timm" in sys.modules:
        if sys.modules["timm"] is not None:  # None: import blocked (as if not installed)
            _register_quietly()
    elif importlib.util.find_spec("timm") is not None and _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)
