"""The model contract shared by our classifiers (timm's): a stem, four stages ``layer1``..``layer4``
(c2..c5), optional ``final_features`` (a 1x1 conv in the timm ResNet-T family), global pooling and
``fc``; ``forward_features``, ``forward_head(pre_logits)``, ``reset_classifier``, ``num_features``,
``head_hidden_size``, ``feature_info`` and ``forward_pyramid`` (c2..c5 for detection); timm's current
feature interface, ``forward_intermediates`` and ``prune_intermediate_layers`` (what timm's
``features_only=True, feature_cls="getter"`` and downstream frameworks call), and ``set_input_size``.

Input checks raise one-line ValueErrors for a wrong channel count or a size the attention
pooling cannot take. They are written so that ``torch.fx`` symbolic tracing keeps them
(``check_input`` is a wrapped leaf function: a traced graph still raises), TorchScript skips them.
"""

# no `from __future__ import annotations` here: torch.fx + TorchScript read the real annotations of forward

from functools import partial

import torch
from torch import nn

from ..layers import BoTBlock, Bottleneck, MHSA2d, NonLocal2d
from .features import take_indices

__all__ = ["StagedNet", "check_input", "input_size_error", "GLOBAL_POOLS", "ACT_LAYERS", "inplace_act", "to_pair"]

GLOBAL_POOLS = ("avg", "")
ACT_LAYERS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}  # a recipe's ``act`` name -> its layer class


def inplace_act(name: str):
    """The layer class of ``ACT_LAYERS[name]``, made to work in place where it can (ReLU, SiLU): it
    overwrites its input, the output of a BatchNorm or of a residual sum that nothing else reads,
    instead of allocating a new activation (timm's models do the same; on CPU an out-of-place ReLU
    took 3x the time of the in-place one, docs/benchmarks.md "Whole models against timm")."""
    cls = ACT_LAYERS[name]
    return partial(cls, inplace=True) if cls in (nn.ReLU, nn.SiLU) else cls


def to_pair(size) -> tuple:
    """An image size as (H, W): an int ``s`` is (s, s), a pair is taken as it is (as ints)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _nearest_multiples(n: int, m: int) -> list[int]:
    lo = max(m, n // m * m)
    return sorted({lo, lo + m} - {n})


def input_size_error(h: int, w: int, divisor: int) -> str | None:
    """The message for an (H, W) that a model with ``size_divisor`` cannot take, else None."""
    d = divisor
    if h >= 1 and w >= 1 and not h % d and not w % d:
        return None
    hint = " or ".join(
        f"{name} {', '.join(map(str, _nearest_multiples(v, d)))}" for name, v in (("H", h), ("W", w)) if v < 1 or v % d
    )
    return (f"input size {h}x{w} does not work for this model: H and W must be multiples of {d} "
            f"(its stride-2 BoT block pools the attention output 2x2); nearest that work: {hint}")


@torch.jit.ignore
def check_input(x: torch.Tensor, in_chans: int, divisor: int) -> torch.Tensor:
    """``x`` unchanged if it is (B, in_chans, H, W) with H, W multiples of ``divisor``; else ValueError."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"expected input of shape (B, {in_chans}, H, W), got {tuple(x.shape)}")
    msg = input_size_error(int(x.shape[-2]), int(x.shape[-1]), divisor)
    if msg:
        raise ValueError(msg)
    return x


torch.fx.wrap("check_input")  # a leaf of traced graphs: shapes never enter Python control flow while tracing


class StagedNet(nn.Module):
    """Base of ``ResNet`` and ``ByoaNet``. Subclasses build the stem (``run_stem``), ``layer1``..``layer4``
    and ``final_features``, and call ``init_head``.

    Shapes: forward (B, in_chans, H, W) -> (B, num_classes), (B, num_features) with num_classes=0,
    or (B, num_features, h, w) with num_classes=0 and global_pool="".
    """

    ceil_sizes: bool = True  # map sizes round up through strides (ResNet), or down (ByoaNet's tables)

    def check_input_size(self, size: tuple[int, int]) -> None:
        """Raise ValueError naming the sizes that work when (H, W) cannot."""
        msg = input_size_error(size[0], size[1], self.size_divisor)
        if msg:
            raise ValueError(msg)

    def init_weights(self, zero_init_last: bool = True) -> None:
        """Kaiming-normal convs, unit BN, the attention layers' own init; with ``zero_init_last`` the
        last BN of every residual branch is zero (each block starts as its shortcut)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, (MHSA2d, NonLocal2d)):
                m.reset_parameters()
            elif zero_init_last and isinstance(m, (Bottleneck, BoTBlock)):
                m.zero_init_last()

    def init_head(self, num_features: int, num_classes: int, drop_rate: float, global_pool: str = "avg") -> None:
        self.num_features = num_features
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes, global_pool)

    @property
    def head_hidden_size(self) -> int:
        """Width of ``forward_head(pre_logits=True)`` (timm's attribute): ``num_features``."""
        return self.num_features

    def run_stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, C, H/4, W/4), checking the input first (not in TorchScript)."""
        if not torch.jit.is_scripting():
            x = check_input(x, self.in_chans, self.size_divisor)
        return self.run_stem(x)

    def forward_pyramid(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The c2..c5 maps for detection: {"c2": (B, C2, H/4, W/4), ..., "c5": (B, C5, H/s, W/s)}."""
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return {"c2": c2, "c3": c3, "c4": c4, "c5": self.layer4(c4)}  # stage by stage: TorchScript has no getattr

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, num_features, H/s, W/s)."""
        x = self.stem(x)
        return self.final_features(self.layer4(self.layer3(self.layer2(self.layer1(x)))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, num_features, h, w) -> (B, num_classes), or the pooled (B, num_features) features."""
        x = self.head_drop(self.global_pool(x).flatten(1) if self.pooled else x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new ``fc`` for ``num_classes`` (0: none); ``global_pool`` "avg" or "" (no pooling, with
        num_classes=0 only: forward then returns the (B, num_features, h, w) map)."""
        if global_pool is not None:
            if global_pool not in GLOBAL_POOLS:
                raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
            self.pooled = global_pool == "avg"
            self.global_pool = nn.AdaptiveAvgPool2d(1) if self.pooled else nn.Identity()
        if num_classes > 0 and not self.pooled:
            raise ValueError("global_pool='' (no pooling) needs num_classes=0: the classifier takes pooled features")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    # timm's feature interface (timm/models/resnet.py, byobnet.py): index 0 is the stem feature
    # (feature_info[0]), 1-4 are layer1..layer4 (c2..c5), as features_only's out_indices.

    def stem_layers(self) -> list[tuple[str, nn.Module]]:
        """The stem's modules in order (every top-level child before ``layer1``)."""
        out = []
        for name, module in self.named_children():
            if name == "layer1":
                break
            out.append((name, module))
        return out

    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's ``forward_intermediates``: the feature maps of ``indices`` (None: all 5; int k: the
        last k; a list: those, negative from the end) in forward order, with the final features.

        Args:
            x: (B, in_chans, H, W).
            norm: no final norm layer in these models: nothing to apply (accepted as timm's resnet does).
            stop_early: stop after the last stage asked for (the returned features are then that map).
            output_fmt: "NCHW" only.
            intermediates_only: return only the list.
        Returns:
            (forward_features(x), [(B, channels_i, H / reduction_i, W / reduction_i), ...]) or the list.
            Index 4 is ``layer4`` as ``feature_info`` says (before a ``final_features`` conv, which the
            returned features include: timm's byobnet with ``exclude_final_conv=True``).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take, max_index = take_indices(len(self.feature_info), indices)
        x = check_input(x, self.in_chans, self.size_divisor)
        tap = self.feature_info[0]["module"]
        intermediates = []
        for name, module in self.stem_layers():
            x = module(x)
            if name == tap and 0 in take:
                intermediates.append(x)
        stages = [self.layer1, self.layer2, self.layer3, self.layer4]
        if stop_early:
            stages = stages[:max_index]
        for i, stage in enumerate(stages, 1):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return (self.final_features(x) if len(stages) == 4 else x), intermediates

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """timm's ``prune_intermediate_layers``: drop the stages after the last index kept (empty
        ``nn.Sequential``), the stem layers after its tap when only the stem is kept, and the final
        conv; ``num_features`` becomes the last kept map's width. The classifier goes (``num_classes``
        0, no pooling) with ``prune_head`` or when the end was pruned. ``prune_norm``: no final norm
        here. Returns the kept indices (absolute)."""
        take, max_index = take_indices(len(self.feature_info), indices)
        for i in range(max_index + 1, 5):
            setattr(self, f"layer{i}", nn.Sequential())
        if max_index == 0:
            names = [n for n, _ in self.stem_layers()]
            for name in names[names.index(self.feature_info[0]["module"]) + 1:]:
                setattr(self, name, nn.Identity())
        prune_end = max_index < 4
        if prune_end:
            self.final_features = nn.Identity()
            self.num_features = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take

    def set_input_size(self, img_size) -> None:
        """Rebuild the model for ``img_size`` ((H, W) or int) in place: the position tables of every
        attention layer are resized to the map it sees at that size (as ``load_state_dict`` of the old
        weights into a model built at ``img_size`` would), ``img_size`` is updated. Other sizes still
        run (the tables are resized per call); this makes ``img_size`` the one that needs no resize."""
        size = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))
        self.check_input_size(size)

        def down(s: tuple[int, int], stride: int) -> tuple[int, int]:
            return (-(-s[0] // stride), -(-s[1] // stride)) if self.ceil_sizes else (s[0] // stride, s[1] // stride)

        feat = down(size, 4)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                pos = getattr(getattr(block, "attn", None), "pos", None)
                if pos is not None:
                    pos.set_feat_size(feat)
                feat = down(feat, getattr(block, "stride", 1))
        self.img_size = size
