"""``create_model``: build a registered model by name, with timm's keywords (``pretrained``,
``features_only``, ``out_indices``, ``checkpoint_path``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from torch import nn

from ._registry import model_entrypoint
from .convert import load_pretrained
from .features import FeatureListNet
from .hub import has_weights, pretrained_file
from .weights import NO_WEIGHTS_MESSAGE, load_weights

__all__ = ["create_model"]

log = logging.getLogger("botnet")


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
        model = FeatureListNet(model, (0, 1, 2, 3, 4) if out_indices is None else out_indices)
    return model
