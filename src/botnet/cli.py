"""The ``botnet`` command (also ``python -m botnet``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .models import list_models, model_entrypoint

__all__ = ["main", "build_parser"]


def _img_size(text: str) -> int | tuple[int, int]:
    """'224' -> 224, '512x768' -> (512, 768)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts, default=0) < 1:
        raise argparse.ArgumentTypeError(f"expected a size like 224 or 512x768, got {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:+.2f}%"


def cmd_list(args: argparse.Namespace) -> int:
    for name in list_models(args.pattern):
        if args.verbose:
            doc = (model_entrypoint(name).__doc__ or "").strip().splitlines()[0]
            print(f"{name:18s} {doc}")
        else:
            print(name)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    if args.paper:
        return _profile_paper(args)
    if not args.name:
        print("botnet profile: give a model name (see `botnet list`) or --paper", file=sys.stderr)
        return 2
    from .counter import profile_model

    try:
        prof = profile_model(args.name, args.img_size)
    except ValueError as e:
        print(f"botnet profile: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(prof.to_dict()))
    else:
        h, w = prof.img_size
        print(f"{prof.name} at {h}x{w}")
        print(f"  params               {prof.params:>15,d}  ({prof.params / 1e6:.2f}M)")
        print(f"  params without norm  {prof.params_without_norm:>15,d}  ({prof.params_without_norm / 1e6:.2f}M)")
        print(f"  multiply-adds        {prof.madds:>15,d}  ({prof.madds / 1e9:.2f}G per image)")
    return 0


def _profile_paper(args: argparse.Namespace) -> int:
    from .paper import MADDS_TOL, PARAMS_TOL, compare_all

    rows = compare_all()
    if args.json:
        print(json.dumps(rows))
        return 0
    if args.markdown:
        print("| table | row | model | res | params paper (M) | ours | diff | M.Adds paper (G) | ours | diff | status |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['table']} | {r['label']} | {r['model'] or '(EfficientNet)'} | {r['img_size']} | "
                f"{_fmt(r['paper_params_m'], '.2f')} | {_fmt(r['params_m'], '.2f')} | {_pct(r['params_delta'])} | "
                f"{_fmt(r['paper_madds_g'], '.2f')} | {_fmt(r['madds_g'], '.2f')} | {_pct(r['madds_delta'])} | {r['status']} |"
            )
        return 0
    head = f"{'table':5s} {'row':10s} {'model':14s} {'res':>4s} | {'params (M) paper':>16s} {'ours':>7s} {'diff':>8s} | {'M.Adds (G) paper':>16s} {'ours':>7s} {'diff':>8s} | status"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['table']:5s} {r['label']:10s} {r['model'] or '(EfficientNet)':14s} {r['img_size']:>4d} | "
            f"{_fmt(r['paper_params_m'], '.2f'):>16s} {_fmt(r['params_m'], '.2f'):>7s} {_pct(r['params_delta']):>8s} | "
            f"{_fmt(r['paper_madds_g'], '.2f'):>16s} {_fmt(r['madds_g'], '.2f'):>7s} {_pct(r['madds_delta']):>8s} | {r['status']}"
        )
    n_ok = sum(r["status"] == "ok" for r in rows)
    n_doc = sum(r["status"].startswith("differs") for r in rows)
    n_bad = sum(r["status"] == "MISMATCH" for r in rows)
    print(
        f"\n{n_ok} rows reproduce (params within {PARAMS_TOL:.1%}, M.Adds within {MADDS_TOL:.0%}); "
        f"{n_doc} differ as documented in docs/paper-fidelity.md; "
        f"{sum(r['status'] == 'n/a' for r in rows)} are EfficientNets (not built here); {n_bad} unexplained."
    )
    print("Params are counted without normalization layers, the paper's convention (see docs/paper-fidelity.md).")
    notes = [r for r in rows if r["note"] and r["model"]]
    if notes:
        print("\nNotes:")
        for r in notes:
            print(f"  Table {r['table']} {r['label']} @{r['img_size']}: {r['note']}")
    return 1 if n_bad else 0


def load_run_config(args: argparse.Namespace, cls=None):
    """The recipe of a training command (``add_run_arguments``) with --data, --output, --set and
    KEY=VALUE applied; a --resume file that does not exist is a ``ConfigError``."""
    from .config import ConfigError, TrainConfig, apply_overrides, load_config

    cfg = load_config(args.config, cls or TrainConfig)
    overrides = list(args.set or []) + list(args.overrides or [])
    if args.data is not None:
        overrides.append(f"data.root={args.data}")
    if args.output is not None:
        overrides.append(f"run.output={args.output}")
    apply_overrides(cfg, overrides)
    if args.resume is not None and args.resume != "auto" and not Path(args.resume).is_file():
        raise ConfigError(f"--resume {args.resume}: no such checkpoint file (give a checkpoint path or 'auto')")
    return cfg


def run_training(prog: str, train_fn, cfg, resume) -> int:
    """Run ``train_fn(cfg, resume=...)`` and print its result as JSON. Exit codes: 0 done (or
    preempted by SIGTERM/SIGUSR1 after saving a checkpoint); 2 bad setup found before training; 1 the
    run failed (non-finite loss, another rank died). Errors are one line on stderr, no traceback."""
    from .engine.distributed import DistributedError
    from .engine.faults import NonFiniteError

    try:
        result = train_fn(cfg, resume=resume)
    except (ValueError, FileNotFoundError) as e:  # bad setup: one line, no traceback
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except (NonFiniteError, DistributedError) as e:  # the run failed; the message says where and what is kept
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    if result:  # one write of one line: under torchrun every rank prints into the same pipe
        sys.stdout.flush()
        sys.stdout.write(json.dumps({k: v for k, v in result.items() if k != "kind"}) + "\n")
        sys.stdout.flush()
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Exit codes as ``run_training``; a bad recipe or option exits 2 before any work."""
    from .config import ConfigError, validate_config

    try:
        cfg = load_run_config(args)
        validate_config(cfg)
        if cfg.data.root is not None and not Path(cfg.data.root).is_dir():
            raise ConfigError(f"data folder {cfg.data.root!r} not found (expected ROOT/train/<class>/* and ROOT/val/<class>/*)")
        model_entrypoint(cfg.model.name)  # an unknown name raises, with suggestions
    except (ConfigError, ValueError) as e:
        print(f"botnet train: {e}", file=sys.stderr)
        return 2
    from .engine.classify import train

    return run_training("botnet train", train, cfg, args.resume)


def cmd_eval(args: argparse.Namespace) -> int:
    from .engine.classify import evaluate_checkpoint
    from .engine.pretrained import evaluate_pretrained

    try:
        if (args.checkpoint is None) == (args.model is None):
            raise ValueError("give --checkpoint (a botnet train checkpoint) or --model NAME (published weights), not both")
        if args.model is not None:
            if args.data is None:
                raise ValueError("--model needs --data (an ImageFolder, e.g. ImageNet-1k val)")
            res = evaluate_pretrained(args.model, args.data, args.weights, args.batch_size, args.workers, args.device)
        else:
            res = evaluate_checkpoint(args.checkpoint, args.data, args.batch_size, args.workers, args.ema, args.device)
    except (ValueError, FileNotFoundError) as e:
        print(f"botnet eval: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res))
    else:
        epoch = f", epoch {res['epoch']}" if res.get("epoch") is not None else ""
        print(f"{res['model']} ({res['checkpoint']}{epoch}{', EMA' if res['ema'] else ''}): "
              f"top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  loss {res['loss']:.4f}  on {res['count']} images"
              + (f" ({res['skipped_images']} unreadable skipped)" if res["skipped_images"] else ""))
    return 0


def add_run_arguments(p: argparse.ArgumentParser, config_example: str, data_help: str) -> None:
    """The options of a training command: --config, --data, --output, --set, --resume, KEY=VALUE..."""
    p.add_argument("--config", required=True, help=f"YAML recipe, e.g. {config_example}")
    p.add_argument("--data", default=None, help=data_help)
    p.add_argument("--output", default=None, help="run folder (default: runs/<recipe name>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe value, e.g. --set optim.lr=0.2")
    p.add_argument("--resume", default=None, metavar="CKPT|auto",
                   help="continue from a checkpoint (auto: the newest valid one in OUTPUT, if any)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more overrides, as --set")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="botnet", description="BoTNet models: build, count, compare with the paper.")
    p.add_argument("--version", action="version", version=f"botnet {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    pl = sub.add_parser("list", help="list registered model names")
    pl.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'botnet*'")
    pl.add_argument("-v", "--verbose", action="store_true", help="show each model's description")
    pl.set_defaults(func=cmd_list)

    pp = sub.add_parser("profile", help="count parameters and multiply-adds (or compare with the paper)")
    pp.add_argument("name", nargs="?", help="registered model name")
    pp.add_argument("--img-size", type=_img_size, default=None, help="input size, e.g. 224 or 512x768 (default: the model's)")
    pp.add_argument("--json", action="store_true", help="print one JSON object (a list with --paper)")
    pp.add_argument("--paper", action="store_true", help="our counts beside every row of the paper's Tables 1, 10 and 14")
    pp.add_argument("--markdown", action="store_true", help="with --paper: print the comparison as a Markdown table")
    pp.set_defaults(func=cmd_profile)

    pt = sub.add_parser("train", help="train a classifier with a recipe (works under torchrun)")
    add_run_arguments(pt, "configs/demo.yaml", "dataset root with train/ and val/ class folders (default: the recipe's)")
    pt.set_defaults(func=cmd_train)

    pe = sub.add_parser("eval", help="evaluate a classification checkpoint (top-1/top-5/loss)")
    pe.add_argument("--checkpoint", default=None)
    pe.add_argument("--model", default=None, help="a model with published weights (botnet26t_256, ...), preprocessed as its source does")
    pe.add_argument("--weights", default=None, help="with --model: a weight file instead of the published one")
    pe.add_argument("--data", default=None, help="dataset root (default: the one the checkpoint was trained on)")
    pe.add_argument("--batch-size", type=int, default=64)
    pe.add_argument("--workers", type=int, default=2)
    pe.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    pe.add_argument("--device", default="auto")
    pe.add_argument("--json", action="store_true")
    pe.set_defaults(func=cmd_eval)

    import importlib

    from .commands import COMMAND_MODULES

    for mod in COMMAND_MODULES:
        importlib.import_module(f"botnet.commands.{mod}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
