"""ResNet-family network built from an architecture config: ResNet, SENet, BoTNet, BoTNet-S1,
and the placement / Non-Local / SE ablations of BoTNet (arXiv:2101.11605, Tables 1, 5, 8, 13, 17).

One class, ``ResNet``, reads a frozen ``NetCfg``; the registered entry points in ``botnet.py`` are a
few lines each. Attribute names follow torchvision (conv1, bn1, maxpool, layer1..layer4, fc).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..layers import BoTBlock, Bottleneck, NonLocal2d, POS_ENCODINGS
from .staged import ACT_LAYERS, StagedNet, to_pair

__all__ = ["NetCfg", "ResNet", "build_model"]

_STAGES = ("c2", "c3", "c4", "c5")
_WIDTHS = (64, 128, 256, 512)


@dataclass(frozen=True)
class NetCfg:
    """Architecture of a ResNet-family network.

    Attributes:
        layers: bottleneck blocks in c2, c3, c4, c5 (ResNet-50: (3, 4, 6, 3)).
        attn_layers: which c5 blocks have MHSA in place of the 3x3 conv: one 0/1 flag per block
            (BoT50: (1, 1, 1); Table 5 ablations: (0, 0, 1) ...), or "all".
        c5_stride: stride of c5; 1 gives BoTNet-S1 (Fig. 6).
        se_stages: SE modules in the blocks of c2, c3, c4, c5.
        se_attn: whether BoT blocks in an SE stage get SE too.
        insert: blocks inserted before the last block of a stage, Non-Local style (Fig. 13):
            ("nl", "c4") a Non-Local block, ("bot", "c4") a BoT block.
        act: activation, "relu" or "silu" (the constructor's ``act_layer`` overrides it).
        num_heads, pos_enc, content: MHSA options (4 heads, relative encoding, q k^T on).
        stride_in_1x1: ResNet v1 (stride on the first 1x1 conv of conv blocks) instead of v1.5.
        width: multiplier of the stem and stage widths (1.0 in the paper; small values make
            CPU-sized models for demos and tests).
    """

    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    attn_layers: tuple[int, ...] | str = ()
    c5_stride: int = 2
    se_stages: tuple[bool, bool, bool, bool] = (False, False, False, False)
    se_attn: bool = False
    insert: tuple[tuple[str, str], ...] = ()
    act: str = "relu"
    num_heads: int = 4
    pos_enc: str = "relative"
    content: bool = True
    stride_in_1x1: bool = False
    width: float = 1.0

    def __post_init__(self):
        if len(self.layers) != 4 or min(self.layers) < 1:
            raise ValueError(f"layers must be 4 positive block counts (c2..c5), got {self.layers}")
        if self.attn_layers != "all":
            if self.attn_layers and len(self.attn_layers) != self.layers[3]:
                raise ValueError(
                    f"attn_layers has {len(self.attn_layers)} flags but c5 has {self.layers[3]} blocks "
                    f"(give one 0/1 flag per c5 block, or 'all')"
                )
        if self.c5_stride not in (1, 2):
            raise ValueError(f"c5_stride must be 1 or 2, got {self.c5_stride}")
        if len(self.se_stages) != 4:
            raise ValueError(f"se_stages needs 4 flags (c2..c5), got {self.se_stages}")
        for kind, stage in self.insert:
            if kind not in ("nl", "bot") or stage not in _STAGES:
                raise ValueError(f"insert entries are (kind, stage) with kind 'nl'|'bot', stage c2..c5; got {(kind, stage)}")
        if self.act not in ACT_LAYERS:
            raise ValueError(f"act must be one of {sorted(ACT_LAYERS)}, got {self.act!r}")
        if self.pos_enc not in POS_ENCODINGS:
            raise ValueError(f"pos_enc must be one of {POS_ENCODINGS}, got {self.pos_enc!r}")
        if min(self.widths()) < self.num_heads or self.widths()[3] % self.num_heads:
            raise ValueError(f"width={self.width} gives stage widths {self.widths()}, too narrow for {self.num_heads} heads")

    def widths(self) -> tuple[int, int, int, int]:
        """Bottleneck widths (planes) of c2..c5; outputs are 4x these."""
        return tuple(max(1, int(round(w * self.width))) for w in _WIDTHS)

    def stem_width(self) -> int:
        return max(1, int(round(64 * self.width)))

    def c5_attn_flags(self) -> tuple[bool, ...]:
        if self.attn_layers == "all":
            return (True,) * self.layers[3]
        return tuple(bool(f) for f in self.attn_layers) or (False,) * self.layers[3]

    def stage_kinds(self, stage: int) -> list[str]:
        """Block kinds of stage 0..3 in order: "conv", "bot" or "nl"."""
        kinds = ["bot" if a else "conv" for a in self.c5_attn_flags()] if stage == 3 else ["conv"] * self.layers[stage]
        for kind, name in self.insert:
            if name == _STAGES[stage]:
                kinds.insert(len(kinds) - 1, kind)
        return kinds


class ResNet(StagedNet):
    """ResNet-family classifier with the timm model contract.

    Args:
        cfg: the architecture (``NetCfg``).
        num_classes: classifier outputs; 0 leaves the head out (``fc`` is Identity).
        in_chans: input image channels.
        img_size: (H, W) or int the attention position tables are built for; the model also runs at
            other sizes (divisible by ``size_divisor``) by resizing them.
        drop_rate: dropout on the pooled features before ``fc`` (EfficientNet regime).
        drop_path_rate: DropConnect (stochastic depth), rising linearly over the blocks to this value.
        act_layer, norm_layer: callables building the activation / normalization (e.g. nn.SiLU,
            torchvision.ops.FrozenBatchNorm2d); ``act_layer`` overrides ``cfg.act``.
        zero_init_last: zero-initialise the last BN of every residual branch.
        global_pool: "avg", or "" (with num_classes=0: forward returns the unpooled c5 map).

    Shapes: forward (B, in_chans, H, W) -> (B, num_classes);
        forward_features -> (B, 2048, H/s, W/s) with s = 32 (16 for c5_stride=1).
    """

    def __init__(
        self,
        cfg: NetCfg,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 224,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act_layer: Callable[..., nn.Module] | None = None,
        norm_layer: Callable[..., nn.Module] | None = None,
        zero_init_last: bool = True,
        global_pool: str = "avg",
    ):
        super().__init__()
        act_layer = act_layer or ACT_LAYERS[cfg.act]
        norm_layer = norm_layer or nn.BatchNorm2d
        self.cfg = cfg
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = to_pair(img_size)
        self.drop_rate = drop_rate
        self.size_divisor = self._size_divisor(cfg)
        self.check_input_size(self.img_size)

        stem = cfg.stem_width()
        self.conv1 = nn.Conv2d(in_chans, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(stem)
        self.act1 = act_layer()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info = [dict(num_chs=stem, reduction=2, module="act1")]

        strides = (1, 2, 2, cfg.c5_stride)
        kinds = [cfg.stage_kinds(i) for i in range(4)]
        n_blocks = sum(len(k) - k.count("nl") for k in kinds)
        feat = (-(-self.img_size[0] // 4), -(-self.img_size[1] // 4))  # ceil, as the stem computes
        in_chs, reduction, idx = stem, 4, 0
        for i in range(4):
            planes = cfg.widths()[i]
            blocks = []
            for j, kind in enumerate(kinds[i]):
                stride = strides[i] if j == 0 else 1
                dp = drop_path_rate * idx / max(n_blocks - 1, 1)
                if kind == "nl":
                    blocks.append(NonLocal2d(in_chs, norm_layer=norm_layer))
                    continue
                common = dict(act_layer=act_layer, norm_layer=norm_layer, drop_path=dp)
                blocks.append(self._block(cfg, i, kind, in_chs, planes, stride, feat, common))
                in_chs = planes * 4
                feat = (-(-feat[0] // stride), -(-feat[1] // stride))
                idx += 1
            reduction *= strides[i]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"layer{i + 1}"))

        self.final_features = nn.Identity()
        self.init_head(in_chs, num_classes, drop_rate, global_pool)
        self.init_weights(zero_init_last)

    @staticmethod
    def _block(cfg: NetCfg, stage: int, kind: str, in_chs: int, planes: int, stride: int,
               feat: tuple[int, int], common: dict) -> nn.Module:
        """One residual block of stage ``stage`` (0-3): a BoT block (MHSA at ``feat``, its input map
        size) for kind "bot", else a bottleneck; output width ``planes * 4``."""
        if kind == "bot":
            return BoTBlock(in_chs, planes, stride, feat_size=feat, num_heads=cfg.num_heads, pos_enc=cfg.pos_enc,
                            content=cfg.content, se=cfg.se_stages[stage] and cfg.se_attn, **common)
        return Bottleneck(in_chs, planes, stride, stride_in_1x1=cfg.stride_in_1x1, se=cfg.se_stages[stage], **common)

    @staticmethod
    def _size_divisor(cfg: NetCfg) -> int:
        """Input sides must be multiples of this: a stride-2 BoT block pools 2x2 after attention,
        so everything up to it must divide evenly. Models without one accept any size."""
        strides = (4, 2, 2, cfg.c5_stride)
        total = 1
        divisor = 1
        for i in range(4):
            total *= strides[i]
            if strides[i] == 2 and cfg.stage_kinds(i)[0] == "bot":
                divisor = total
        return divisor

    def run_stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, 64, H/4, W/4)."""
        return self.maxpool(self.act1(self.bn1(self.conv1(x))))


_CTOR_KEYS = {"num_classes", "in_chans", "img_size", "drop_rate", "drop_path_rate", "act_layer", "norm_layer", "zero_init_last",
              "global_pool"}


def build_model(cfg: NetCfg, img_size: int | tuple[int, int] = 224, **kwargs) -> ResNet:
    """Build ``ResNet`` from ``cfg``; keyword arguments that name ``NetCfg`` fields override them."""
    fields = {f.name for f in dataclasses.fields(NetCfg)}
    unknown = set(kwargs) - fields - _CTOR_KEYS
    if unknown:
        raise TypeError(
            f"unknown model option(s) {sorted(unknown)}; expected constructor options {sorted(_CTOR_KEYS)} "
            f"or architecture fields {sorted(fields)}"
        )
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
    for k in ("layers", "attn_layers", "se_stages", "insert"):
        if k in overrides and isinstance(overrides[k], list):
            overrides[k] = tuple(tuple(v) if isinstance(v, list) else v for v in overrides[k])
    cfg = dataclasses.replace(cfg, **overrides)
    return ResNet(cfg, img_size=img_size, **kwargs)
