"""``botnet shards``: write an ImageFolder or a COCO set as random-access tar shards with a wids
index (``botnet.data.shards``), and verify them; ``botnet train --data OUT`` then reads the shards."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SPLITS = ("train", "val")


def _write(args) -> dict:
    from botnet.data.shards import coco_samples, imagefolder_samples, write_shards

    src = Path(args.source).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} not found")
    written = {}
    for split in args.splits:
        if args.coco:
            coco_split = f"{split}2017" if (src / f"{split}2017").is_dir() else split
            ann = src / "annotations" / f"instances_{coco_split}.json"
            if not ann.is_file():
                raise FileNotFoundError(f"COCO annotations {ann} not found (expected ROOT/annotations/instances_{coco_split}.json)")
            meta, samples = coco_samples(src / coco_split, ann)
            meta = {"kind": "coco", **meta, "source": str(src / coco_split)}
        else:
            classes, samples = imagefolder_samples(src / split)
            meta = {"kind": "classification", "classes": classes, "source": str(src / split)}
        t0 = time.monotonic()
        index = write_shards(samples, args.output, split, meta, max_count=args.max_count,
                             max_bytes=args.max_mb * 1e6)
        written[split] = {"index": str(index), "seconds": round(time.monotonic() - t0, 2)}
    return written


def cmd_shards(args: argparse.Namespace) -> int:
    from botnet.data.shards import index_path, verify_shards

    try:
        if args.max_count < 1 or args.max_mb <= 0:
            raise ValueError("--max-count must be >= 1 and --max-mb > 0")
        result = {} if args.verify_only else _write(args)
        out = Path(args.output).expanduser()
        for split in args.splits:
            report = verify_shards(index_path(out, split), decode=not args.no_decode)
            result.setdefault(split, {}).update(report)
            if report["bad_images"]:
                raise ValueError(f"{split}: {len(report['bad_images'])} image(s) do not decode, first "
                                 f"{report['bad_images'][0]}")
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"botnet shards: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def register(sub) -> None:
    p = sub.add_parser("shards", help="write an ImageFolder or COCO set as indexed tar shards, and verify them",
                       description="Write ROOT/{train,val}/<class>/* (or a COCO set with --coco) as "
                                   "OUTPUT/{split}-NNNNNN.tar shards with a wids index OUTPUT/{split}.wids.json, "
                                   "then check every shard's MD5 and sample count and decode every image. "
                                   "`botnet train --data OUTPUT` reads them.")
    p.add_argument("source", help="ImageFolder root (train/, val/), or a COCO root with --coco")
    p.add_argument("--output", required=True, help="folder for the shards and their indexes")
    p.add_argument("--coco", action="store_true", help="SOURCE is COCO: {split}2017/*.jpg + annotations/instances_*.json")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    p.add_argument("--max-count", type=int, default=10000, help="samples per shard (default 10000)")
    p.add_argument("--max-mb", type=float, default=1000.0, help="megabytes per shard (default 1000)")
    p.add_argument("--verify-only", action="store_true", help="only verify OUTPUT's shards")
    p.add_argument("--no-decode", action="store_true", help="verify checksums and counts, not the images")
    p.set_defaults(func=cmd_shards)
