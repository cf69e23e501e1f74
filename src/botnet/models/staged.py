"""The model contract shared by our classifiers (timm's): a stem, four stages ``layer1``..``layer4``
(c2..c5), optional ``final_features`` (a 1x1 conv in the timm ResNet-T family), global pooling and
``fc``; ``forward_features``, ``forward_head(pre_logits)``, ``reset_classifier``, ``num_features``,
``head_hidden_size``, ``feature_info`` and ``forward_pyramid`` (c2..c5 for detection).

Input checks raise one-line ValueErrors for a wrong channel count or a size the attention
pooling cannot take. They are written so that ``torch.fx`` symbolic tracing keeps them
(``check_input`` is a wrapped leaf function: a traced graph still raises), TorchScript skips them.
"""

# no `from __future__ import annotations` here: torch.fx + TorchScript read the real annotations of forward

import torch
from torch import nn

from ..layers import BoTBlock, Bottleneck, MHSA2d, NonLocal2d

__all__ = ["StagedNet", "check_input", "input_size_error", "GLOBAL_POOLS"]

GLOBAL_POOLS = ("avg", "")


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
