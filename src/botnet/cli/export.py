"""``botnet export``: a checkpoint (or a randomly initialised model) to ONNX, TorchScript or
safetensors, checked against PyTorch after export; ``--format onnx --quantize int8 --calibration DIR``
writes an ONNX Runtime static int8 model checked by top-1 agreement on held-out images of DIR.
Detection checkpoints go to ``botnet.export.detection.export_checkpoint``."""

from __future__ import annotations

import argparse
import json
import sys

from .paths import check_output_file
from .precision import EXPORT_PRECISIONS, add_precision_argument

FORMATS = ("onnx", "torchscript", "safetensors")
_EXAMPLES = {"onnx": "model.onnx", "torchscript": "model.pt", "safetensors": "model.safetensors"}
_CARD_FIELDS = ("classes", "metrics", "crop_pct", "input_size", "mean", "std", "interpolation", "epoch", "step")


def cmd_export(args: argparse.Namespace) -> int:
    if bool(args.checkpoint) == bool(args.model):
        print("botnet export: give --checkpoint CKPT or --model NAME (random weights)", file=sys.stderr)
        return 2
    problem = _quantize_problem(args)
    if problem:
        print(f"botnet export: {problem}", file=sys.stderr)
        return 2
    from botnet.models import create_model
    from botnet.export import ExportError, export_model
    from botnet.checkpoint import open_checkpoint
    from botnet.models.weights import load_model

    try:
        check_output_file(args.output, "--output", _EXAMPLES.get(args.format, "model.onnx"))
        card = {}
        if args.model:
            kw = {"img_size": args.img_size} if args.img_size else {}
            model = create_model(args.model, num_classes=args.num_classes, **kw)
        else:
            ckpt = open_checkpoint(args.checkpoint)
            if ckpt.task == "detection":
                _check_detection_options(args)
                from botnet.export.detection import describe_checks, export_checkpoint

                name, res = export_checkpoint(ckpt, args.output, args.format, img_size=args.img_size,  # read once
                                              batch_size=args.batch_size, opset=args.opset, use_ema=args.ema)
                return _report(args, name, res, describe_checks(res))
            if ckpt.task != "classification":
                raise ValueError(f"{args.checkpoint} holds a {ckpt.task!r} model; export takes classification "
                                 "checkpoints")
            model, card = load_model(ckpt, use_ema=args.ema)
        options = {"img_size": args.img_size, "batch_size": args.batch_size}
        if args.format == "onnx":
            options["opset"] = args.opset
        else:
            options["precision"] = args.precision
        if args.quantize:
            options.update(quantize=args.quantize, calibration=args.calibration, eval_cfg=card)
        if args.format == "safetensors":
            options["card"] = {k: card[k] for k in _CARD_FIELDS if k in card}
        res = export_model(model, args.output, args.format, kind="classification", **options)
    except ExportError as e:
        print(f"botnet export: FAILED: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"botnet export: {e}", file=sys.stderr)
        return 2
    if args.quantize:
        x = res.extra
        return _report(args, model.model_name, res,
                       f"int8: top-1 agreement with PyTorch {100 * x['agreement']:.1f}% on {x['check_images']} held-out "
                       f"images (at least {100 * x['min_agreement']:.0f}%; {x['calibration_images']} calibrated), max "
                       f"abs logit diff {res.max_abs_diff:.3g}; its float32 graph: max abs diff {x['fp32_max_abs_diff']:.3g}")
    verdict = f"max abs diff vs PyTorch {res.max_abs_diff:.3g} (tolerance {res.tolerance:.3g})"
    if res.extra.get("precision") == "bf16":
        verdict = (f"bfloat16; {verdict}, against the bfloat16 model; logits vs float32: relative L2 difference "
                   f"{res.extra['vs_fp32']:.3g}")
    return _report(args, model.model_name, res, verdict)


def _check_detection_options(args: argparse.Namespace) -> None:
    """ValueError for the options that take classifiers only, given a detection checkpoint."""
    if args.quantize:
        raise ValueError(f"--quantize takes classification models; {args.checkpoint} holds a detector")
    if args.precision != "fp32":
        raise ValueError(f"--precision {args.precision} exports classifiers; a detector runs in bfloat16 "
                         "with botnet eval / predict --precision bf16")


def _quantize_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with --quantize / --calibration, or None."""
    if args.quantize and args.format != "onnx":
        return f"--quantize {args.quantize} needs --format onnx (got --format {args.format})"
    if args.quantize and not args.calibration:
        return f"--quantize {args.quantize} needs --calibration DIR (a folder of images)"
    if args.calibration and not args.quantize:
        return "--calibration goes with --quantize int8"
    if args.precision == "bf16" and args.format == "onnx":
        return ("--precision bf16 exports torchscript or safetensors: ONNX Runtime's CPU provider has no bfloat16 "
                "Conv kernels (for a faster ONNX model use --quantize int8)")
    return None


def _report(args: argparse.Namespace, name: str, res, verdict: str) -> int:
    """The command's one result line (or JSON with --json); 0."""
    if args.json:
        print(json.dumps(res.to_dict()))
        return 0
    shape = "x".join(map(str, res.input_shape))
    opset = f", opset {res.extra['opset']}" if "opset" in res.extra else ""
    print(f"exported {name} to {res.path} ({res.format}{opset}, input {shape}) in {res.seconds:.1f}s; {verdict}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a classifier or detector to ONNX / TorchScript / safetensors, checked "
                                      "against PyTorch",
                       description="Export a checkpoint (or a registered model with random weights) and check the "
                                   "exported file against PyTorch, in ONNX Runtime for ONNX. Classifiers: on a random "
                                   "input, max abs diff <= 1e-4 + 1e-4 x max |logit|; ONNX files have a dynamic batch "
                                   "axis and a fixed H x W. Detectors (det-train checkpoints): on a built-in scene and "
                                   "an empty scene, the same detections with boxes, scores and masks within 1e-4 + "
                                   "1e-4 x max |output|; ONNX takes one (3, S, S) image, TorchScript keeps "
                                   "torchvision's list-of-images API (docs/detection.md).")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="botnet train / det-train checkpoint, or a weight file with its card")
    src.add_argument("--model", help="a registered model name with random weights")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, metavar="FILE", help="e.g. model.onnx, model.pt, model.safetensors")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the checkpoint's / model's)")
    p.add_argument("--batch-size", type=int, default=1, help="batch of the example / check input (default 1)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--num-classes", type=int, default=1000, help="with --model: classifier outputs (default 1000)")
    p.add_argument("--ema", action="store_true", help="export the checkpoint's EMA weights")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="with --format onnx: ONNX Runtime static int8 quantization (QDQ, per-channel weights, "
                        "attention kept float32), checked by top-1 agreement >= 98%% with PyTorch on the "
                        "--calibration images held out from calibration (every fifth)")
    p.add_argument("--calibration", metavar="DIR", default=None,
                   help="with --quantize: a folder of images (searched recursively), read through the model's "
                        "eval transform; at most 256 calibrate")
    add_precision_argument(p, EXPORT_PRECISIONS)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_export)
