"""``botnet predict``: top-k classes of images with a classifier, or detections with a detector.

The checkpoint says which: a ``botnet train`` checkpoint or a weight file with its model card
(kind "classification") prints the top-k classes of every image; a detection checkpoint draws its detections
(``botnet.detection.predict.predict_to_folder``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .paths import check_output_folder
from .precision import add_precision_argument, note_precision


def cmd_predict(args: argparse.Namespace) -> int:
    from ..checkpoint import open_checkpoint

    try:
        if args.topk < 1 or args.batch_size < 1:
            raise ValueError(f"--topk and --batch-size must be >= 1, got {args.topk} and {args.batch_size}")
        check_output_folder(args.output or "predictions", "--output")
        ckpt = open_checkpoint(args.checkpoint)
    except (ValueError, FileNotFoundError) as e:
        print(f"botnet predict: {e}", file=sys.stderr)
        return 2
    if ckpt.task == "detection":
        return _predict_detection(args, ckpt)
    if ckpt.task != "classification":
        print(f"botnet predict: {args.checkpoint} holds a {ckpt.task!r} model; predict runs classification and "
              "detection checkpoints", file=sys.stderr)
        return 2
    from ..inference.classify import predict_classifier

    try:
        note_precision("botnet predict", args.precision, args.device)
        res = predict_classifier(ckpt, args.images, topk=args.topk, batch_size=args.batch_size,
                                 device=args.device, use_ema=args.ema, precision=args.precision)
    except (ValueError, FileNotFoundError) as e:
        print(f"botnet predict: {e}", file=sys.stderr)
        return 2
    if res["skipped"] and not res["predictions"]:
        first = res["skipped"][0]
        print(f"botnet predict: none of the {len(res['skipped'])} images could be read (first: {first['image']}: "
              f"{first['error']}); expected image files PIL can decode", file=sys.stderr)
        return 2
    res["checkpoint"] = str(args.checkpoint)
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "predictions.json").write_text(json.dumps(res, indent=1) + "\n")
    if args.json:
        print(json.dumps(res))
    else:
        for rec in res["predictions"]:
            print(f"{rec['image']}: " + ", ".join(f"{t['label']} {t['score']:.3f}" for t in rec["topk"]))
        note = f"; {len(res['skipped'])} unreadable skipped" if res["skipped"] else ""
        where = f" -> {Path(args.output) / 'predictions.json'}" if args.output else ""
        print(f"{len(res['predictions'])} images classified by {res['model']}{note}{where}", file=sys.stderr)
    return 0


def _predict_detection(args: argparse.Namespace, ckpt) -> int:
    """Detections of every image (``ckpt``: the opened detection checkpoint): OUTPUT/<stem>_pred.png
    per image and OUTPUT/detections.json."""
    from ..detection.loading import load_detector
    from ..detection.predict import predict_to_folder, recall_summary
    from ..engine.launch import resolve_device
    from ..inference.classify import expand_image_paths
    from ..models.precision import prepare_inference

    try:
        device = resolve_device(args.device or "auto")
        note_precision("botnet predict", args.precision, args.device or "auto")
        model, info = load_detector(ckpt, device)
        model, amp, _ = prepare_inference(model, "detection", args.precision, device, ((ckpt.config or {}).get("run") or {}).get("amp", "none"))
        paths = expand_image_paths(args.images)
    except (ValueError, FileNotFoundError) as e:
        print(f"botnet predict: {e}", file=sys.stderr)
        return 2
    out = Path(args.output or "predictions")
    thresh = 0.5 if args.score_thresh is None else args.score_thresh
    records = []
    for rec in predict_to_folder(model, paths, info["classes"], out, thresh, device,
                                 progress=sys.stderr.isatty() and len(paths) > 1, amp_dtype=amp):
        records.append(rec)
        if "error" not in rec and not args.json:
            found = ", ".join(f"{d['label']} {d['score']:.2f}" for d in rec["detections"]) or "nothing"
            gt = rec.get("ground_truth")
            truth = f"; found {gt['found']} of {gt['counted']} ground-truth objects > 16 px" if gt else ""
            print(f"{rec['image']}: {len(rec['detections'])} detections ({found}){truth} -> {rec['drawn']}")
    if args.json:
        print(json.dumps(records))
    else:
        print(f"detections of {len(records)} images: {out / 'detections.json'}")
        recall = recall_summary(records)
        if recall is not None and recall["counted"]:
            print(f"ground truth: {recall['found']} of the {recall['counted']} objects larger than 16 x 16 px in "
                  f"{recall['images']} images found ({100 * recall['recall']:.1f} %) at IoU >= 0.5, score >= {thresh:g}")
    if records and all("error" in r for r in records):
        print(f"botnet predict: none of the {len(records)} images could be read (first: {records[0]['image']}: "
              f"{records[0]['error']}); expected image files PIL can decode", file=sys.stderr)
        return 2
    return 0


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify images (top-k), or detect objects with a detection checkpoint",
                       description="Classify images with a classification checkpoint (top-k classes), or run a "
                                   "detection checkpoint on them. Folders are searched recursively; unreadable "
                                   "images are skipped and counted (exit code 2 when no image could be read).")
    p.add_argument("--checkpoint", required=True,
                   help="botnet train / det-train checkpoint, or a .safetensors/.pt weight file with its card")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders")
    p.add_argument("--topk", type=int, default=5, help="classes per image (classification; default 5)")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="write predictions.json there (detection: also the drawn images)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=16)
    add_precision_argument(p)
    p.add_argument("--score-thresh", type=float, default=None, metavar="T",
                   help="detection: keep detections scoring at least T (default 0.5)")
    p.add_argument("--ema", action="store_true", help="classification: use the checkpoint's EMA weights")
    p.set_defaults(func=cmd_predict)
