"""timm's BoTNet family (``timm/models/byoanet.py``), in our model description, under timm's names:
``botnet26t_256``, ``sebotnet33ts_256``, ``eca_botnext26ts_256`` and ``botnet50ts_256``.

These are not models of the paper (arXiv:2101.11605): they are Ross Wightman's BoTNets on ResNet-T
backbones, and the only BoTNet-family ImageNet weights that are public. ``PRETRAINED_CFGS`` holds,
per name, where timm publishes the weights (Hugging Face Hub id and GitHub release URL), the eval
preprocessing of timm's pretrained config (crop, interpolation, mean / std) and the source's own
ImageNet-1k top-1 (timm ``results/results-imagenet.csv``) and licence: the source's numbers, not
measured here. ``create_model(name, pretrained=True)`` fetches and converts them
(``botnet.models.hub``, ``botnet.models.convert``).
"""

from __future__ import annotations

import copy
from functools import partial

from ._registry import register_variant
from .byoa import ByoaCfg, StageCfg, build_byoa

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MODEL_CFGS", "PRETRAINED_CFGS", "DOCS", "build_timm_botnet", "pretrained_cfg",
           "card_fields"]

# timm's IMAGENET_DEFAULT_MEAN / _STD: the mean / std of these configs and of the timm configs of all
# our models (botnet.models._timm), and the default of every model card (models.weights) and of
# botnet.data.transforms, which imports them from here
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_RELEASE = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-attn-weights/"
_RESULTS = "timm results/results-imagenet.csv (ImageNet-1k val, 256 px)"

MODEL_CFGS = {
    "botnet26t_256": ByoaCfg(stages=(
        StageCfg(2, 256, stride=1), StageCfg(2, 512), StageCfg(2, 1024, attn=(0, 1)), StageCfg(2, 2048, attn="all"))),
    "sebotnet33ts_256": ByoaCfg(stages=(
        StageCfg(2, 256, stride=1), StageCfg(3, 512, attn=(0, 0, 1)), StageCfg(3, 1024, attn=(0, 0, 1)),
        StageCfg(2, 1536, bottle_ratio=0.333, attn="all")), stem_pool=False, act="silu", block_attn="se", num_features=1280),
    "botnet50ts_256": ByoaCfg(stages=(
        StageCfg(3, 256, stride=1), StageCfg(4, 512, attn=(0, 0, 0, 1)), StageCfg(6, 1024, attn=(0, 1, 0, 1, 0, 1)),
        StageCfg(3, 2048, attn=(0, 1, 0))), act="silu"),
    "eca_botnext26ts_256": ByoaCfg(stages=(
        StageCfg(2, 256, stride=1, group_size=16), StageCfg(2, 512, group_size=16),
        StageCfg(2, 1024, group_size=16, attn=(0, 1)), StageCfg(2, 2048, group_size=16, attn="all")),
        act="silu", block_attn="eca", qk_head_dim=16),
}


def _cfg(tag: str = "", file: str = "", top1: float | None = None, crop_pct: float = 0.95) -> dict:
    return dict(
        tag=tag, hf_hub_id="", url=_RELEASE + file if file else "", input_size=(3, 256, 256), pool_size=(8, 8),
        crop_pct=crop_pct, crop_mode="center", interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        num_classes=1000, first_conv="conv1", classifier="fc", license="apache-2.0",
        weights_source="timm (huggingface/pytorch-image-models), byoanet.py", top1=top1, top1_source=_RESULTS if top1 else None,
    )


PRETRAINED_CFGS = {
    "botnet26t_256": _cfg("c1_in1k", "botnet26t_c1_256-167a0e9f.pth", 79.256),
    "sebotnet33ts_256": _cfg("a1h_in1k", "sebotnet33ts_a1h2_256-957e3c3e.pth", 81.156, crop_pct=0.94),
    "eca_botnext26ts_256": _cfg("c1_in1k", "eca_botnext26ts_c_256-95a898f6.pth", 79.262),
    "botnet50ts_256": _cfg(),  # timm publishes the architecture only (botnet50ts_256.untrained)
}
for _name, _c in PRETRAINED_CFGS.items():
    if _c["tag"]:
        _c["hf_hub_id"] = f"timm/{_name}.{_c['tag']}"


def pretrained_cfg(name: str) -> dict | None:
    """A copy of the pretrained config of one of these models (None for other names)."""
    c = PRETRAINED_CFGS.get(name)
    return copy.deepcopy(c) if c is not None else None


def card_fields(name: str) -> dict:
    """Model-card fields for ``save_weights(model, path, card=card_fields(name))``: timm's eval
    preprocessing, the weights' source and licence, and the source's top-1, labelled as the source's."""
    c = PRETRAINED_CFGS[name]
    return {
        "crop_pct": c["crop_pct"], "interpolation": c["interpolation"], "mean": list(c["mean"]), "std": list(c["std"]),
        "license": c["license"], "weights_source": c["weights_source"], "hf_hub_id": c["hf_hub_id"] or None,
        "published_metrics": ({"imagenet1k_top1": c["top1"], "reported_by": c["top1_source"]} if c["top1"] else {}),
    }


def build_timm_botnet(cfg_name: str, img_size=256, **kw):
    """One of ``MODEL_CFGS`` (timm's BoTNet family) built by ``models.byoa``, with its pretrained config."""
    model = build_byoa(MODEL_CFGS[cfg_name], img_size=img_size, **kw)
    model.pretrained_cfg = model.default_cfg = pretrained_cfg(cfg_name)
    return model


DOCS = {
    "botnet26t_256": "timm's BoTNet-26T at 256: ResNet-26-T, MHSA in the last c4 block and all of c5 (not a paper model).",
    "sebotnet33ts_256": "timm's SE-BoTNet-33TS at 256: ResNet-33-T, SE, SiLU, a 1280 final conv (not a paper model).",
    "eca_botnext26ts_256": ("timm's ECA-BoTNeXt-26TS at 256: grouped 3x3 (16 a group), ECA, SiLU, q/k heads of 16 "
                            "(not a paper model)."),
    "botnet50ts_256": "timm's BoTNet-50TS at 256: ResNet-50-T, SiLU, MHSA interleaved in c3-c5 (no published weights).",
}
for _name in MODEL_CFGS:  # registered as botnet.create_model(name), e.g. "botnet26t_256"
    register_variant(_name, partial(build_timm_botnet, _name), DOCS[_name], __name__, img_size=256)
