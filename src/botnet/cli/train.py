"""``botnet train`` and ``botnet eval`` for every task; ``det-train`` / ``det-eval`` are aliases.

The recipe names its task (``task: detection``; classification by default), the checkpoint its
kind, so one command trains and evaluates classifiers, detectors and any registered task.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .paths import check_output_folder
from .precision import add_precision_argument, note_precision

__all__ = ["register", "add_run_arguments", "load_run_config", "run_training"]


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options of a training command: --config, --data, --output, --set, --resume, KEY=VALUE..."""
    p.add_argument("--config", required=True,
                   help="YAML recipe, a shipped recipe name (`botnet recipes`: demo, table14_t7, detection/coco_3x_1024) or a YAML file (its 'task' says which)")
    p.add_argument("--data", default=None, help="dataset root (default: the recipe's): ROOT/{train,val}/<class>/* for "
                                                "classification, ROOT/<split>/ + ROOT/annotations/instances_<split>.json "
                                                "for detection")
    p.add_argument("--output", default=None, help="run folder (default: runs/<recipe name>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe value, e.g. --set optim.lr=0.2")
    p.add_argument("--resume", default=None, metavar="CKPT|auto",
                   help="continue from a checkpoint (auto: the newest valid one in OUTPUT, if any)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more overrides, as --set (anywhere on the line)")


def load_run_config(args: argparse.Namespace, default_task: str = "classification"):
    """(task class, recipe) of a training command with --data, --output, --set and KEY=VALUE
    applied (the recipe file is parsed once); a --resume file that does not exist is a ``ConfigError``."""
    from ..config import ConfigError, apply_overrides, config_from_dict, read_recipe, recipe_task
    from ..engine.task import get_task

    overrides = list(args.set or []) + list(args.overrides or [])
    recipe = read_recipe(args.config)
    name = recipe_task(recipe, overrides, default=default_task)
    task_cls = get_task(name)
    cfg = config_from_dict(recipe, task_cls.config_class)
    cfg.task = name
    if args.data is not None:
        overrides.append(f"data.root={args.data}")
    if args.output is not None:
        check_output_folder(args.output, "--output")
        overrides.append(f"run.output={args.output}")
    apply_overrides(cfg, [o for o in overrides if not o.strip().startswith("task=")])
    if args.resume is not None and args.resume != "auto" and Path(args.resume).is_dir():
        raise ConfigError(f"--resume {args.resume} is a folder; give a checkpoint file in it ({Path(args.resume) / 'last.pt'}), "
                          f"or --resume auto with --output {args.resume}")
    if args.resume is not None and args.resume != "auto" and not Path(args.resume).is_file():
        raise ConfigError(f"--resume {args.resume}: no such checkpoint file (give a checkpoint path or 'auto')")
    return task_cls, cfg


def run_training(prog: str, fit) -> int:
    """Run ``fit()`` and print its result as JSON. Exit codes: 0 done (or preempted by
    SIGTERM/SIGUSR1 after saving a checkpoint); 2 bad setup found before training, or a full disk; 1 the run failed
    (non-finite loss, another rank died). Errors are one line on stderr, no traceback."""
    from ..checkpoint import DiskFullError
    from ..engine.distributed import DistributedError
    from ..engine.faults import NonFiniteError

    try:
        result = fit()
    except (ValueError, FileNotFoundError, DiskFullError) as e:  # bad setup, full disk: one line, no traceback
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
    """Exit codes as ``run_training``; a bad recipe or option exits 2 before any work (the task's
    ``check()`` runs once, in ``Trainer.fit``: its ``ValueError`` exits 2 there)."""
    from ..config import ConfigError

    prog = f"botnet {args.command}"
    try:
        task_cls, cfg = load_run_config(args, "detection" if args.command == "det-train" else "classification")
        task = task_cls(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    from ..engine.trainer import Trainer

    return run_training(prog, Trainer(task, args.resume).fit)


def _eval_checkpoint(args: argparse.Namespace) -> tuple[str, dict]:
    """(task, metrics) of --checkpoint, read once; a file that is no botnet checkpoint goes to the
    classification reader, which says what is wrong with it."""
    from ..checkpoint import open_checkpoint

    ckpt = open_checkpoint(args.checkpoint, strict=False)
    kind = "detection" if args.command == "det-eval" or ckpt.task == "detection" else "classification"
    return kind, (_eval_detection if kind == "detection" else _eval_classification)(args, ckpt)


def _eval_detection(args: argparse.Namespace, ckpt) -> dict:
    from ..engine.detect import evaluate_detection_checkpoint

    if args.ema:
        raise ValueError("--ema: detection checkpoints hold no EMA weights")
    return evaluate_detection_checkpoint(ckpt, args.data, args.split, args.batch_size or 2, args.workers,
                                         args.device, args.output, args.max_images, args.precision)


def _eval_classification(args: argparse.Namespace, ckpt) -> dict:
    from ..engine.classify import evaluate_checkpoint

    return evaluate_checkpoint(ckpt, args.data, args.batch_size or 64, args.workers, args.ema, args.device,
                               args.precision)


def _eval_pretrained(args: argparse.Namespace) -> dict:
    from ..engine.pretrained import evaluate_pretrained

    if args.data is None:
        raise ValueError("--model needs --data (an ImageFolder, e.g. ImageNet-1k val)")
    return evaluate_pretrained(args.model, args.data, args.weights, args.batch_size or 64, args.workers, args.device,
                               precision=args.precision)


def cmd_eval(args: argparse.Namespace) -> int:
    prog = f"botnet {args.command}"
    try:
        if (args.checkpoint is None) == (args.model is None):
            raise ValueError("give --checkpoint (a botnet train checkpoint) or --model NAME (published weights), not both")
        note_precision(prog, args.precision, args.device)
        if args.model is not None:
            kind, res = "classification", _eval_pretrained(args)
        else:
            kind, res = _eval_checkpoint(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res))
    elif kind == "detection":
        from ..detection.evaluate import format_coco_table

        print(f"{res['model']} ({res['checkpoint']}, step {res['step']}, {res['precision']}) on {res['count']} "
              f"{res['split']} images of {res['data']}")
        print(format_coco_table({t: res[t] for t in ("bbox", "segm") if t in res}))
        if args.output:
            print(f"metrics and COCO results written to {args.output}/")
    else:
        epoch = f", {res['epoch']} epoch(s) done" if res.get("epoch") is not None else ""
        print(f"{res['model']} ({res['checkpoint']}{epoch}{', EMA' if res['ema'] else ''}, {res['precision']}): "
              f"top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  loss {res['loss']:.4f}  on {res['count']} images"
              + (f" ({res['skipped_images']} unreadable skipped)" if res["skipped_images"] else ""))
    return 0


def _eval_arguments(e: argparse.ArgumentParser) -> None:
    e.add_argument("--checkpoint", default=None)
    e.add_argument("--model", default=None,
                   help="a model with published weights (botnet26t_256, ...), preprocessed as its source does")
    e.add_argument("--weights", default=None, help="with --model: a weight file instead of the published one")
    e.add_argument("--data", default=None, help="dataset root (default: the one the checkpoint was trained on)")
    e.add_argument("--batch-size", type=int, default=None, help="default 64 (classification), 2 (detection)")
    e.add_argument("--workers", type=int, default=2)
    e.add_argument("--device", default="auto")
    add_precision_argument(e)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--ema", action="store_true", help="classification: evaluate the EMA weights")
    e.add_argument("--split", default=None, help="detection: split to evaluate (default: the recipe's val split)")
    e.add_argument("--max-images", type=int, default=None, help="detection: evaluate the first N images only")
    e.add_argument("--output", default=None, help="detection: folder for metrics.json and results.json (COCO format)")


def register(sub) -> None:
    for name, what in (("train", "train with any recipe: classifier, detector, ... (works under torchrun)"),
                       ("det-train", "alias of train (a recipe that names no task is a detection recipe)")):
        p = sub.add_parser(name, help=what)
        add_run_arguments(p)
        p.set_defaults(func=cmd_train)
    for name, what in (("eval", "evaluate a checkpoint: top-1/top-5/loss, or COCO AP (bbox, segm) for a detector"),
                       ("det-eval", "alias of eval for detection checkpoints")):
        e = sub.add_parser(name, help=what)
        _eval_arguments(e)
        e.set_defaults(func=cmd_eval)
