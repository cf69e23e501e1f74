"""Input checks that stay in torch.fx graphs and out of TorchScript.

Each check is a ``torch.fx.wrap``-ped function (a leaf of traced graphs: symbolic tracing never
puts tensor shapes in Python control flow, and a traced graph still raises the same ValueError) and
``torch.jit.ignore``-d (a scripted graph calls it in Python). No ``from __future__ import annotations``
here: TorchScript reads these signatures.
"""

import torch

__all__ = ["check_even"]


@torch.jit.ignore
def check_even(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) unchanged, or ValueError when H or W is odd (the input of a stride-2 BoT block)."""
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"a stride-2 BoTBlock needs an even input height and width, got {x.shape[-2]}x{x.shape[-1]}")
    return x


torch.fx.wrap("check_even")
