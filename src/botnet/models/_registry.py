"""Model registry: ``register_model`` decorates entry points; ``create_model`` builds by name
(timm's keywords: ``pretrained``, ``features_only``, ``out_indices``, ``checkpoint_path``)."""

from __future__ import annotations

import difflib
import fnmatch
import logging
import os
from collections.abc import Sequence
from typing import Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "is_model", "model_entrypoint"]

log = logging.getLogger("botnet")
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


def create_model(name: str, pretrained: bool | str | os.PathLike = False, *, features_only: bool = False,
                 out_indices: int | Sequence[int] | None = None, checkpoint_path: str | os.PathLike | None = None,
                 use_ema: bool = False, **kwargs) -> nn.Module:
    """Build a registered model, with timm's keywords.

    Args:
        name: a registered name (``list_models()``).
        pretrained: False, or the path of weights to load into the layers that match (our
            .safetensors / .pt files, a ``botnet train`` checkpoint, a torchvision or timm ResNet /
            SE-ResNet state dict); what was loaded is logged and kept as ``model.pretrained_report``.
            True: the published weights of models that have them (timm's BoTNet family:
            ``botnet.models.hub`` finds them in the Hugging Face / torch hub cache or fetches them;
            a timm file is converted on load); an error for the others.
        features_only: return a ``FeatureListNet`` giving the feature maps of ``out_indices``
            (0: stem at stride 2, 1-4: c2..c5; default all five) instead of the classifier.
        checkpoint_path: weights to load strictly after building (every tensor must match), as timm.
        use_ema: read the EMA weights of a ``botnet train`` checkpoint (``pretrained`` /
            ``checkpoint_path``).
        **kwargs: go to the entry point: constructor options (``num_classes``, ``in_chans``,
            ``img_size``, ``drop_rate``, ``drop_path_rate``, ``act_layer``, ``norm_layer``,
            ``zero_init_last``) and any architecture field of ``NetCfg`` (``layers``, ``attn_layers``,
            ``pos_enc``, ``content``, ``num_heads``, ``stride_in_1x1``, ``width``, ...).
    """
    from .convert import load_pretrained
    from .hub import has_weights, pretrained_file
    from .weights import NO_WEIGHTS_MESSAGE, load_weights

    if out_indices is not None and not features_only:
        raise ValueError("out_indices selects feature maps: pass features_only=True with it")
    model = model_entrypoint(name)(**kwargs)
    model.model_name = name
    if pretrained is True:  # the published weights of its pretrained_cfg (cached or fetched)
        if not has_weights(getattr(model, "pretrained_cfg", None)):
            raise ValueError(f"create_model({name!r}, pretrained=True): {NO_WEIGHTS_MESSAGE} (pretrained=PATH loads "
                             "the layers that match, checkpoint_path=PATH all of them)")
        pretrained = pretrained_file(name, model.pretrained_cfg)
    if pretrained:
        model.pretrained_report = load_pretrained(model, pretrained, use_ema=use_ema)
        log.info("%s: pretrained %s: %s", name, pretrained, model.pretrained_report.summary())
    if checkpoint_path:
        load_weights(model, checkpoint_path, strict=True, use_ema=use_ema)
    if features_only:
        from .features import FeatureListNet

        model = FeatureListNet(model, (0, 1, 2, 3, 4) if out_indices is None else out_indices)
    return model
