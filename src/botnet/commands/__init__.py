"""Subcommands of ``botnet`` that live beside their code.

Each module here has ``register(subparsers)``, which adds its subparser(s) and sets ``func`` to a
handler ``(args) -> exit code``. Modules import only argparse at import time and the heavy parts
(torch, torchvision, the engines) inside their handlers, so ``botnet --help`` stays quick.
Add a module to ``COMMAND_MODULES`` to add it to the CLI.
"""

COMMAND_MODULES: tuple[str, ...] = ("detect", "bench", "predict", "attention", "export", "shards")
