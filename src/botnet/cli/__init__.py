"""The ``botnet`` command (also ``python -m botnet``): every subcommand lives in this package.

Each module of ``COMMANDS`` has ``register(subparsers)``, which adds its subparser(s) and sets
``func`` to a handler ``(args) -> exit code``. Building the parser imports every module of
``COMMANDS`` (and ``botnet/__init__``, which imports nothing heavy), so at import time they import
only the standard library; torch, timm and the engines are imported inside the handlers. So
``botnet --help`` and ``botnet CMD --help`` import no torch (tests/cli/test_startup.py;
docs/benchmarks.md, "CLI start-up", has the timings). To add a subcommand, write a module here with
``register`` and add its name to ``COMMANDS``.

Exit codes: 0 done; 1 the work failed (a run diverged, an export does not match PyTorch); 2 bad
input (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import importlib

from .. import __version__

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS: tuple[str, ...] = ("models", "train", "recipes", "predict", "attention", "export", "shards", "experiment")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="botnet", description="BoTNet models: build, count, train, evaluate, export.")
    p.add_argument("--version", action="version", version=f"botnet {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand. ``KEY=VALUE`` overrides may stand anywhere after a
    training command's name (``botnet train --config X --output Y optim.lr=0.1``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + extra
    return args.func(args)
