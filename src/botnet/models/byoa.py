"""The ResNet-T family of timm's BoTNets (``byoanet.py``: BoTNet, arXiv:2101.11605, on a "tiered" stem),
described as data: a ``ByoaCfg`` with one ``StageCfg`` per stage, built by ``ByoaNet``.

- stem: three 3x3 convs of 3/8, 1/2 and all of ``stem_chs`` channels (the first with stride 2), then
  a 3x3 max pool, or, without pool, stride 2 on the third conv;
- stages c2..c5: bottleneck blocks of ``out_chs`` with a 3x3 conv of ``out_chs * bottle_ratio``
  channels (rounded to a multiple of 8 as timm does), grouped with ``group_size`` channels a group,
  and channel attention (SE or ECA) after it; a block flagged in ``attn`` has MHSA in place of the
  3x3 conv; a stride-2 attention block attends at full resolution then average-pools 2x2 (Fig. 12);
- an optional final 1x1 conv + BN + act to ``num_features`` channels, then average pooling and ``fc``.

Module names follow ours (``conv1``/``bn1``/``act1`` ..., ``layer1``..``layer4``, ``fc``), so the model
contract, features, counter and detection work as for ``ResNet``; ``botnet.models.convert`` maps
timm's state dicts onto them.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from ..layers import BoTBlock, Bottleneck, EcaModule, SEModule
from .staged import ACT_LAYERS, StagedNet, inplace_act, to_pair

__all__ = ["StageCfg", "ByoaCfg", "ByoaNet", "build_byoa", "round_channels"]

BLOCK_ATTNS = ("", "se", "eca")


def round_channels(v: float, divisor: int = 8) -> int:
    """``v`` to the nearest multiple of ``divisor`` (never below it, nor below 90% of ``v``): timm's
    ``make_divisible``, which sets the bottleneck widths of these models."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


@dataclass(frozen=True)
class StageCfg:
    """One stage: ``depth`` blocks of ``out_chs`` output channels, the first with ``stride``.

    Attributes:
        bottle_ratio: width of the 3x3 conv / attention relative to ``out_chs``.
        group_size: channels per group of the 3x3 conv (0: dense).
        attn: which blocks have MHSA in place of the 3x3 conv, one 0/1 flag per block, or "all".
    """

    depth: int
    out_chs: int
    stride: int = 2
    bottle_ratio: float = 0.25
    group_size: int = 0
    attn: tuple[int, ...] | str = ()

    def __post_init__(self):
        if self.depth < 1 or self.out_chs < 1 or self.stride not in (1, 2):
            raise ValueError(f"a stage needs depth >= 1, out_chs >= 1 and stride 1 or 2, got {self}")
        if self.attn != "all" and self.attn and len(self.attn) != self.depth:
            raise ValueError(f"attn has {len(self.attn)} flags for a stage of {self.depth} blocks (one 0/1 per block, or 'all')")

    def mid_chs(self) -> int:
        return round_channels(self.out_chs * self.bottle_ratio)

    def attn_flags(self) -> tuple[bool, ...]:
        if self.attn == "all":
            return (True,) * self.depth
        return tuple(bool(f) for f in self.attn) or (False,) * self.depth


@dataclass(frozen=True)
class ByoaCfg:
    """Architecture of a tiered-stem BoTNet (see the module docstring).

    Attributes:
        stages: the four stages c2..c5.
        stem_chs: output channels of the stem; stem_pool: max pool (True) or a strided third conv.
        act: "relu", "silu" or "gelu" (``act_layer`` of the constructor overrides it).
        block_attn: channel attention in the conv blocks: "" (none), "se" or "eca".
        num_features: channels of the final 1x1 conv (0: none).
        num_heads: MHSA heads; qk_head_dim: width of the query/key heads (None: the value width).
    """

    stages: tuple[StageCfg, StageCfg, StageCfg, StageCfg]
    stem_chs: int = 64
    stem_pool: bool = True
    act: str = "relu"
    block_attn: str = ""
    num_features: int = 0
    num_heads: int = 4
    qk_head_dim: int | None = None

    def __post_init__(self):
        if len(self.stages) != 4:
            raise ValueError(f"a ByoaCfg has 4 stages (c2..c5), got {len(self.stages)}")
        if self.act not in ACT_LAYERS:
            raise ValueError(f"act must be one of {sorted(ACT_LAYERS)}, got {self.act!r}")
        if self.block_attn not in BLOCK_ATTNS:
            raise ValueError(f"block_attn must be one of {BLOCK_ATTNS}, got {self.block_attn!r}")
        for s in self.stages:
            if any(s.attn_flags()) and s.mid_chs() % self.num_heads:
                raise ValueError(f"attention width {s.mid_chs()} of a stage is not divisible by {self.num_heads} heads")
            if s.group_size and s.mid_chs() % s.group_size:
                raise ValueError(f"width {s.mid_chs()} is not divisible by group_size {s.group_size}")

    def stem_widths(self) -> tuple[int, int, int]:
        return 3 * self.stem_chs // 8, self.stem_chs // 2, self.stem_chs


class ByoaNet(StagedNet):
    """Tiered-stem BoTNet classifier with the timm model contract (``StagedNet``).

    Args:
        cfg: the architecture (``ByoaCfg``).
        num_classes, in_chans, drop_rate, drop_path_rate, act_layer, norm_layer, zero_init_last,
        global_pool: as ``ResNet``.
        img_size: (H, W) or int the attention position tables are built for; other sizes (multiples
            of ``size_divisor``) resize them.

    Shapes: forward (B, in_chans, H, W) -> (B, num_classes); forward_features -> (B, num_features, H/32, W/32).
    """

    ceil_sizes = False  # the tables are built for floor(H / stride) (timm's byoanet)

    def __init__(self, cfg: ByoaCfg, num_classes: int = 1000, in_chans: int = 3, img_size: int | tuple[int, int] = 256,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, act_layer: Callable[..., nn.Module] | None = None,
                 norm_layer: Callable[..., nn.Module] | None = None, zero_init_last: bool = True, global_pool: str = "avg"):
        super().__init__()
        act_layer = act_layer or inplace_act(cfg.act)
        norm_layer = norm_layer or nn.BatchNorm2d
        self.cfg, self.num_classes, self.in_chans, self.img_size = cfg, num_classes, in_chans, to_pair(img_size)
        self.drop_rate = drop_rate
        self.size_divisor = self._size_divisor(cfg)
        self.check_input_size(self.img_size)

        prev = in_chans
        for i, (ch, stride) in enumerate(zip(cfg.stem_widths(), (2, 1, 1 if cfg.stem_pool else 2)), 1):
            self.add_module(f"conv{i}", nn.Conv2d(prev, ch, 3, stride=stride, padding=1, bias=False))
            self.add_module(f"bn{i}", norm_layer(ch))
            self.add_module(f"act{i}", act_layer())
            prev = ch
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if cfg.stem_pool else nn.Identity()
        stem_feat = "act3" if cfg.stem_pool else "act2"
        self.feature_info = [dict(num_chs=cfg.stem_widths()[2 if cfg.stem_pool else 1], reduction=2, module=stem_feat)]
        self._build_stages(cfg, prev, act_layer, norm_layer, drop_path_rate)

        prev = self.feature_info[-1]["num_chs"]
        if cfg.num_features:
            self.final_features = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(prev, cfg.num_features, 1, bias=False), bn=norm_layer(cfg.num_features), act=act_layer()))
            prev = cfg.num_features
        else:
            self.final_features = nn.Identity()
        self.init_head(prev, num_classes, drop_rate, global_pool)
        self.init_weights(zero_init_last)

    def _block_attn(self, cfg: ByoaCfg) -> Callable[[int], nn.Module] | None:
        if cfg.block_attn == "se":  # timm's SEModule: ReLU inside, reduced width a multiple of 8
            return partial(SEModule, rd_ratio=1 / 16, act_layer=inplace_act("relu"), rd_divisor=8)
        return EcaModule if cfg.block_attn == "eca" else None

    def _build_stages(self, cfg: ByoaCfg, in_chs: int, act_layer, norm_layer, drop_path_rate: float) -> None:
        feat = (self.img_size[0] // 4, self.img_size[1] // 4)
        n_blocks = sum(s.depth for s in cfg.stages)
        reduction, idx = 4, 0
        for i, stage in enumerate(cfg.stages):
            blocks = []
            mid = stage.mid_chs()
            for j, attn in enumerate(stage.attn_flags()):
                stride = stage.stride if j == 0 else 1
                common = dict(act_layer=act_layer, norm_layer=norm_layer, out_chs=stage.out_chs,
                              drop_path=drop_path_rate * idx / max(n_blocks - 1, 1))
                if attn:
                    blocks.append(BoTBlock(in_chs, mid, stride, feat_size=feat, num_heads=cfg.num_heads,
                                           qk_head_dim=cfg.qk_head_dim, **common))
                else:
                    groups = mid // stage.group_size if stage.group_size else 1
                    blocks.append(Bottleneck(in_chs, mid, stride, groups=groups, mid_attn=self._block_attn(cfg), **common))
                in_chs = stage.out_chs
                feat = (feat[0] // stride, feat[1] // stride)
                idx += 1
            reduction *= stage.stride
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"layer{i + 1}"))

    @staticmethod
    def _size_divisor(cfg: ByoaCfg) -> int:
        """Sides must be multiples of the stride at the input of the deepest stride-2 attention block."""
        total, divisor = 4, 1
        for s in cfg.stages:
            total *= s.stride
            if s.stride == 2 and s.attn_flags()[0]:
                divisor = total
        return divisor

    def run_stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, stem_chs, H/4, W/4)."""
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.maxpool(self.act3(self.bn3(self.conv3(x))))


_CTOR_KEYS = {"num_classes", "in_chans", "img_size", "drop_rate", "drop_path_rate", "act_layer", "norm_layer", "zero_init_last",
              "global_pool"}


def _as_stage(s) -> StageCfg:
    if isinstance(s, StageCfg):
        return s
    s = dict(s)
    if isinstance(s.get("attn"), list):
        s["attn"] = tuple(s["attn"])
    return StageCfg(**s)


def build_byoa(cfg: ByoaCfg, img_size: int | tuple[int, int] = 256, **kwargs) -> ByoaNet:
    """Build ``ByoaNet``; keyword arguments naming ``ByoaCfg`` fields override them (``stages`` may be
    dicts, as in a model card)."""
    fields = {f.name for f in dataclasses.fields(ByoaCfg)}
    unknown = set(kwargs) - fields - _CTOR_KEYS
    if unknown:
        raise TypeError(f"unknown model option(s) {sorted(unknown)}; expected constructor options {sorted(_CTOR_KEYS)} "
                        f"or architecture fields {sorted(fields)}")
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
    if "stages" in overrides:
        overrides["stages"] = tuple(_as_stage(s) for s in overrides["stages"])
    return ByoaNet(dataclasses.replace(cfg, **overrides), img_size=img_size, **kwargs)
