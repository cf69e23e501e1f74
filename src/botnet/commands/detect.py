"""``botnet det-train`` and ``botnet det-eval``: Mask R-CNN / Faster R-CNN on COCO-format data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register"]


def cmd_det_train(args: argparse.Namespace) -> int:
    """Exit codes as ``botnet.cli.run_training``; a bad recipe or option exits 2 before any work."""
    from ..cli import load_run_config, run_training
    from ..config import ConfigError
    from ..detection import parse_detector_name
    from ..detection.config import DetTrainConfig

    try:
        cfg = load_run_config(args, DetTrainConfig)
        root = cfg.data.root
        if root is not None:
            for split in (cfg.data.train_split, cfg.data.val_split):
                ann = Path(root) / "annotations" / f"instances_{split}.json"
                if not (Path(root) / split).is_dir() or not ann.is_file():
                    raise ConfigError(f"data folder {root!r} lacks {split}/ or annotations/instances_{split}.json "
                                      f"(expected ROOT/<split>/<images> and ROOT/annotations/instances_<split>.json)")
        parse_detector_name(cfg.model.name)
    except (ConfigError, ValueError) as e:
        print(f"botnet det-train: {e}", file=sys.stderr)
        return 2
    from ..engine.detect import train_detector

    return run_training("botnet det-train", train_detector, cfg, args.resume)


def cmd_det_eval(args: argparse.Namespace) -> int:
    from ..detection.evaluate import format_coco_table
    from ..engine.detect import evaluate_detection_checkpoint

    try:
        res = evaluate_detection_checkpoint(args.checkpoint, args.data, args.split, args.batch_size, args.workers,
                                            args.device, args.output, args.max_images)
    except (ValueError, FileNotFoundError) as e:
        print(f"botnet det-eval: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['model']} ({res['checkpoint']}, step {res['step']}) on {res['count']} {res['split']} images of {res['data']}")
        print(format_coco_table({t: res[t] for t in ("bbox", "segm") if t in res}))
        if args.output:
            print(f"metrics and COCO results written to {args.output}/")
    return 0


def register(sub) -> None:
    from ..cli import add_run_arguments

    p = sub.add_parser("det-train", help="train a Mask R-CNN / Faster R-CNN with a BoTNet backbone (works under torchrun)")
    add_run_arguments(p, "configs/detection/demo.yaml or configs/detection/coco_3x_1024.yaml",
                      "COCO-format root: ROOT/<split>/ images + ROOT/annotations/instances_<split>.json (default: the recipe's)")
    p.set_defaults(func=cmd_det_train)

    e = sub.add_parser("det-eval", help="COCO AP (bbox, segm) of a detection checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", default=None, help="COCO-format root (default: the checkpoint's training data)")
    e.add_argument("--split", default=None, help="split to evaluate (default: the recipe's val split)")
    e.add_argument("--batch-size", type=int, default=2)
    e.add_argument("--workers", type=int, default=2)
    e.add_argument("--max-images", type=int, default=None, help="evaluate the first N images only")
    e.add_argument("--device", default="auto")
    e.add_argument("--output", default=None, help="folder for metrics.json and results.json (COCO results format)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_det_eval)
