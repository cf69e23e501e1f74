"""Converting timm's state dicts of its BoTNet family (``timm/models/byoanet.py``) to ours (``ByoaNet``).

Names: timm's ``stem.conv{i}.conv/bn`` -> ``conv{i}`` / ``bn{i}``; ``stages.{s}.{b}`` ->
``layer{s+1}.{b}``; in a block ``conv1_1x1`` / ``conv2_kxk`` / ``conv3_1x1`` (conv + bn) ->
``conv1/bn1``, ``conv2/bn2``, ``conv3/bn3``; ``shortcut.conv/bn`` -> ``downsample.0/1``; the channel
attention ``attn`` -> ``mid_se``; ``self_attn.qkv`` -> ``attn.qkv`` and ``post_attn`` -> ``bn2``;
``final_conv`` -> ``final_features``; ``head.fc`` -> ``fc``.

Values: timm's ``BottleneckAttn`` (``scale_pos_embed=False``) adds the position logits of the
*unscaled* q, q . R, to (q k^T) * d^-0.5; ours scales q by d^-0.5 before both terms. So the relative
tables are multiplied by d^0.5 (d: the q/k head width) on the way in; everything else is copied
(the [q | k | v] channel order of ``qkv``, heads contiguous within each, is the same).
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from .byoa import ByoaNet
from .weights import LoadReport, load_weights, match_weights, read_state_dict

__all__ = ["TIMM_RULES", "is_timm_byoa", "convert_timm_state_dict", "load_pretrained", "require_fit", "CLASSIFIER_PREFIXES"]

TIMM_RULES: tuple[tuple[str, str], ...] = (
    (r"^stem\.conv(\d)\.conv\.", r"conv\1."),
    (r"^stem\.conv(\d)\.bn\.", r"bn\1."),
    (r"^stages\.(\d+)\.", lambda m: f"layer{int(m.group(1)) + 1}."),
    (r"\.shortcut\.conv\.", ".downsample.0."),
    (r"\.shortcut\.bn\.", ".downsample.1."),
    (r"\.conv1_1x1\.conv\.", ".conv1."),
    (r"\.conv1_1x1\.bn\.", ".bn1."),
    (r"\.conv2_kxk\.conv\.", ".conv2."),
    (r"\.conv2_kxk\.bn\.", ".bn2."),
    (r"\.conv3_1x1\.conv\.", ".conv3."),
    (r"\.conv3_1x1\.bn\.", ".bn3."),
    (r"\.attn\.", ".mid_se."),
    (r"\.self_attn\.qkv\.", ".attn.qkv."),
    (r"\.self_attn\.pos_embed\.height_rel$", ".attn.pos.rel_height"),
    (r"\.self_attn\.pos_embed\.width_rel$", ".attn.pos.rel_width"),
    (r"\.post_attn\.", ".bn2."),
    (r"^final_conv\.", "final_features."),
    (r"^head\.fc\.", "fc."),
)
_TABLES = (".attn.pos.rel_height", ".attn.pos.rel_width")
_HEAD = ("fc.weight", "fc.bias")


def is_timm_byoa(sd: dict[str, torch.Tensor]) -> bool:
    """Whether ``sd`` is in the layout of timm's ``ByobNet`` (``stem.conv1.conv.weight``, ``stages.*``)."""
    return "stem.conv1.conv.weight" in sd and any(k.startswith("stages.") for k in sd)


def convert_timm_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ``byoanet`` state dict -> ours: renamed, relative tables scaled by head_dim^0.5."""
    out = {}
    for k, v in sd.items():
        for pattern, repl in TIMM_RULES:
            k = re.sub(pattern, repl, k)
        if k.endswith(_TABLES):  # (2L-1, d): timm's logits use the unscaled q
            v = v * v.shape[1] ** 0.5
        out[k] = v
    return out


def timm_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn`` for our models: converts timm-layout files, passes ours through."""
    return convert_timm_state_dict(state_dict) if is_timm_byoa(state_dict) else state_dict


CLASSIFIER_PREFIXES = ("fc.",)  # a classifier of another number of classes is left out when fine-tuning


def require_fit(report: LoadReport, where: str, model_name: str) -> LoadReport:
    """Raise ``ValueError`` (one line naming ``where``) when initial weights do not fit a model: no
    tensor of the file matched, or a tensor other than the classifier has another shape (weights
    of another width or depth). Returns ``report``."""
    offered = len(report.loaded) + len(report.unexpected) + len(report.shape_mismatch)
    wrong = [m for m in report.shape_mismatch if not m[0].startswith(CLASSIFIER_PREFIXES)]
    if wrong:
        name, theirs, ours = wrong[0]
        more = f" (and {len(wrong) - 1} more tensors)" if len(wrong) > 1 else ""
        raise ValueError(f"{where} does not fit {model_name}: {name} is {tuple(theirs)} in the file but "
                         f"{tuple(ours)} in the model{more}; expected weights of a model of the same width and depth")
    if not report.loaded:
        seen = ", ".join(report.unexpected[:3]) or "nothing"
        raise ValueError(f"{where} fits no tensor of {model_name} (of its {offered} tensors, e.g. {seen}); expected a "
                         "state dict or checkpoint in the torchvision ResNet layout (conv1.weight, layer1.0.conv1.weight, ...)")
    return report


def load_pretrained(model: nn.Module, source: str | os.PathLike | dict, use_ema: bool = False) -> LoadReport:
    """Load ``source`` into ``model``: a timm BoTNet-family file is converted and loaded strictly (a
    classifier of another size is left out, as timm does); any other file loads into the layers
    that match, with a report, and must fit (``require_fit``: a file of another width, or one that
    matches nothing, is a ``ValueError`` naming the file and the tensor)."""
    sd = read_state_dict(source, use_ema)
    where = str(source) if not isinstance(source, dict) else "the state dict"
    if not is_timm_byoa(sd):
        usable, report = match_weights(model, sd)
        require_fit(report, where, getattr(model, "model_name", type(model).__name__))
        model.load_state_dict(usable, strict=False)
        return report
    if not isinstance(model, ByoaNet):
        raise ValueError(f"{where} is a timm ResNet-T / BoTNet state dict (stem.conv1.conv, stages.*): load it into "
                         f"botnet26t_256, sebotnet33ts_256, eca_botnext26ts_256 or botnet50ts_256")
    sd = convert_timm_state_dict(sd)
    own = model.state_dict()
    dropped = [k for k in _HEAD if k in sd and (k not in own or sd[k].shape != own[k].shape)]
    for k in dropped:
        sd.pop(k)
    report = load_weights(model, sd, strict=not dropped, key_map=None)
    if dropped and (report.unexpected or report.shape_mismatch or set(report.missing) - set(_HEAD)):
        raise ValueError(f"{where} does not match {getattr(model, 'model_name', type(model).__name__)}: {report.summary()}")
    return report
