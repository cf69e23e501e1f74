"""``botnet shards``: write an ImageFolder or a COCO set as random-access tar shards with a wids
index (``botnet.data.shards``), and verify them; ``botnet train --data OUT`` then reads the shards
(classification, and detection for COCO shards).

Exit codes: 0 written and verified (images that do not decode are written as they are, reported
by their source file, and skipped by training, as from a folder; ``--strict`` makes them exit 2);
2 bad input: a missing source, an output that already holds shards (without ``--overwrite``) or
lies inside the source, damaged shards, one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SPLITS = ("train", "val")


def _check_output(src: Path, out: Path, splits: list[str], overwrite: bool) -> None:
    from botnet.data.shards import shard_files

    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ValueError(f"--output {out} is inside the source {src}: the shards would become part of the data "
                         "they are written from; choose a folder outside it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} is a file; expected a folder")
    existing = [p for split in splits for p in shard_files(out, split)]
    if existing and not overwrite:
        names = ", ".join(p.name for p in existing[:3]) + (", ..." if len(existing) > 3 else "")
        raise ValueError(f"--output {out} already holds shards ({names}); pass --overwrite to replace them, or "
                         "choose another folder")
    for p in existing:  # --overwrite: no stale shard of an earlier, longer write stays behind
        p.unlink()


def _split_name(src: Path, split: str, coco: bool) -> str:
    """The shard split of ``split``: COCO's folder name (train2017 or train), else ``split``."""
    return f"{split}2017" if coco and (src / f"{split}2017").is_dir() else split


def _split_source(src: Path, split: str, coco: bool):
    """(shard split name, meta, samples) of one split of the source."""
    from botnet.data.shards import coco_samples, imagefolder_samples

    if coco:
        coco_split = _split_name(src, split, coco)
        ann = src / "annotations" / f"instances_{coco_split}.json"
        if not ann.is_file():
            raise FileNotFoundError(f"COCO annotations {ann} not found (expected ROOT/annotations/instances_{coco_split}.json)")
        meta, samples = coco_samples(src / coco_split, ann)
        return coco_split, {"kind": "coco", **meta, "source": str(src / coco_split)}, samples
    classes, samples = imagefolder_samples(src / split)
    return split, {"kind": "classification", "classes": classes, "source": str(src / split)}, samples


def _write(args, src: Path, out: Path) -> dict:
    from botnet.data.shards import check_split, write_shards

    _check_output(src, out, [_split_name(src, split, args.coco) for split in args.splits], args.overwrite)
    written = {}
    for split in args.splits:
        name, meta, samples = _split_source(src, split, args.coco)
        sources: list[str] = []  # sample i's source file, to name bad images by it

        def recorded(samples=samples, sources=sources):
            for members, source in samples:
                sources.append(source)
                yield members, source

        t0 = time.monotonic()
        index = write_shards(recorded(), out, name, meta, max_count=args.max_count, max_bytes=args.max_mb * 1e6)
        report, bad = check_split(index, decode=not args.no_decode)
        report["bad_images"] = [f"{sources[int(key)]} ({why})" for key, _, why in bad]  # the source files
        written[name] = {"index": str(index), "seconds": round(time.monotonic() - t0, 2), **report}
    return written


def _verify(args, out: Path) -> dict:
    from botnet.data.shards import INDEX_SUFFIX, index_path, verify_shards

    found = sorted(p.name[: -len(INDEX_SUFFIX)] for p in out.glob(f"*{INDEX_SUFFIX}")) if out.is_dir() else []
    names = [n for n in found if n.rstrip("0123456789") in args.splits] or list(args.splits)
    return {name: verify_shards(index_path(out, name), decode=not args.no_decode) for name in names}


def cmd_shards(args: argparse.Namespace) -> int:
    try:
        if args.max_count < 1 or args.max_mb <= 0:
            raise ValueError("--max-count must be >= 1 and --max-mb > 0")
        out = Path(args.output).expanduser()
        if args.verify_only:
            result = _verify(args, out)
        else:
            if not args.source:
                raise ValueError("give the SOURCE folder to write shards from (or --verify-only to check OUTPUT)")
            src = Path(args.source).expanduser()
            if not src.is_dir():
                raise FileNotFoundError(f"source folder {src} not found")
            result = _write(args, src, out)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"botnet shards: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    bad = [(split, r["bad_images"]) for split, r in result.items() if r["bad_images"]]
    for split, images in bad:
        print(f"botnet shards: {split}: {len(images)} image(s) do not decode and will be skipped in training, first "
              f"{images[0]}" + ("" if args.strict else " (--strict makes this an error)"), file=sys.stderr)
    return 2 if bad and args.strict else 0


def register(sub) -> None:
    p = sub.add_parser("shards", help="write an ImageFolder or COCO set as indexed tar shards, and verify them",
                       description="Write ROOT/{train,val}/<class>/* (or a COCO set with --coco) as "
                                   "OUTPUT/{split}-NNNNNN.tar shards with a wids index OUTPUT/{split}.wids.json "
                                   "(COCO: the split named as its folder, e.g. train2017), then check every shard's "
                                   "MD5 and sample count and decode every image. `botnet train --data OUTPUT` reads "
                                   "them (classification, and detection for COCO shards).")
    p.add_argument("source", nargs="?", help="ImageFolder root (train/, val/), or a COCO root with --coco "
                                             "(not needed with --verify-only)")
    p.add_argument("--output", required=True, help="folder for the shards and their indexes (outside SOURCE)")
    p.add_argument("--coco", action="store_true", help="SOURCE is COCO: {split}2017/*.jpg + annotations/instances_*.json")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    p.add_argument("--max-count", type=int, default=10000, help="samples per shard (default 10000)")
    p.add_argument("--max-mb", type=float, default=1000.0, help="megabytes per shard (default 1000)")
    p.add_argument("--overwrite", action="store_true", help="replace the shards OUTPUT already holds for these splits")
    p.add_argument("--verify-only", action="store_true", help="only verify OUTPUT's shards")
    p.add_argument("--no-decode", action="store_true", help="verify checksums and counts, not the images")
    p.add_argument("--strict", action="store_true", help="exit 2 when an image does not decode (default: report it, "
                                                         "exit 0; training skips it)")
    p.set_defaults(func=cmd_shards)
