"""``--precision`` of ``botnet eval``, ``botnet predict`` and ``botnet export``
(``botnet.models.precision``: float32, or bfloat16 where the hardware has it)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["PRECISIONS", "EXPORT_PRECISIONS", "add_precision_argument", "note_precision"]

# botnet.models.precision.PRECISIONS, repeated so that --help imports no torch (tests/cli checks they match)
PRECISIONS = ("auto", "fp32", "bf16")
EXPORT_PRECISIONS = ("fp32", "bf16")


def add_precision_argument(p: argparse.ArgumentParser, choices: tuple[str, ...] = PRECISIONS) -> None:
    """``--precision`` with ``choices`` (the first is the default)."""
    auto = "auto: the recipe's run.amp on CUDA, float32 on the CPU; " if "auto" in choices else ""
    p.add_argument("--precision", choices=choices, default=choices[0],
                   help=f"{auto}bf16: bfloat16 compute, fast on CPUs with avx512_bf16 / AMX and on recent GPUs "
                        f"(default {choices[0]})")


def note_precision(prog: str, precision: str, device: str) -> None:
    """One line on stderr when bf16 is asked for on a device without native bfloat16 (it then runs
    emulated: right, but slower than float32)."""
    if precision != "bf16":
        return
    from ..engine.launch import resolve_device
    from ..models.precision import native_bf16

    dev = resolve_device(device)
    if not native_bf16(dev):
        print(f"{prog}: note: {dev.type} has no native bfloat16 (avx512_bf16 / AMX / a bf16 GPU); bf16 runs "
              "emulated, slower than fp32", file=sys.stderr)
