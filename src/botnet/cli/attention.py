"""``botnet attention``: draw where one query position of an MHSA layer looks, per head."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .paths import check_output_file


def _pair(text: str) -> tuple[float, float]:
    try:
        y, x = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Y,X (e.g. 3,4), got {text!r}") from None
    return y, x


def _load(args):
    """(model, card) from --checkpoint, or a randomly initialised --model with a default card."""
    from botnet.models import create_model
    from botnet.checkpoint import open_checkpoint
    from botnet.models.weights import load_model, model_card

    if args.model:
        kw = {"img_size": args.img_size} if args.img_size else {}
        model = create_model(args.model, **kw).eval()
        return model, model_card(model, crop_pct=1.0)
    ckpt = open_checkpoint(args.checkpoint)
    if ckpt.task != "classification":
        raise ValueError(f"{args.checkpoint} holds a {ckpt.task} model; attention draws classifiers' MHSA layers")
    model, card = load_model(ckpt, use_ema=args.ema)
    if args.img_size:
        card = dict(card, input_size=[card["input_size"][0], args.img_size, args.img_size])
    return model, card


def cmd_attention(args: argparse.Namespace) -> int:
    if bool(args.checkpoint) == bool(args.model):
        print("botnet attention: give --checkpoint CKPT or --model NAME (random weights)", file=sys.stderr)
        return 2
    try:
        from torchvision.transforms import v2

        from botnet.data.folder import load_rgb
        from botnet.inference.attention import attention_maps, draw_attention_grid, pixel_to_feature, resolve_layer
        from botnet.data.transforms import build_eval_transform

        out = check_output_file(args.output or f"{Path(args.image).stem}_attention.png", "--output", "attention.png")
        model, card = _load(args)
        layer, _ = resolve_layer(model, args.layer)
        tf = build_eval_transform(card)
        pil = load_rgb(args.image)
        geometric = v2.Compose([t for t in tf.transforms if isinstance(t, (v2.Resize, v2.CenterCrop))])
        shown = geometric(pil)  # what the model sees, before normalization
        x = tf(pil)
        if args.pixels:
            maps = attention_maps(model, x, layer, query_px=args.query)
            query = pixel_to_feature(args.query, x.shape[-2:], maps.shape[-2:])
        else:
            if any(v != int(v) for v in args.query):
                raise ValueError(f"--query {args.query} must be integer feature cells (or pass --pixels)")
            query = (int(args.query[0]), int(args.query[1]))
            maps = attention_maps(model, x, layer, query)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"botnet attention: {e}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    name = card.get("model_name")
    heads, h, w = maps.shape
    draw_attention_grid(shown, maps, query, out, title=f"{name} {layer}: {heads} heads over {h}x{w} keys")
    top = [int(m.flatten().argmax()) for m in maps]
    peaks = ", ".join(f"({i // w},{i % w})" for i in top)
    print(f"{name} {layer}: query {query} on the {h}x{w} map, {heads} heads (peaks at {peaks}) -> {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("attention", help="draw the attention maps of one query position of an MHSA layer",
                       description="Draw, for one query position, the attention weights of every head of a BoT "
                                   "block's MHSA layer over the input image.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="botnet train checkpoint, or a weight file with its card")
    src.add_argument("--model", help="a registered model name with random weights (for a quick look)")
    p.add_argument("image", help="image file")
    p.add_argument("--query", type=_pair, required=True, metavar="Y,X",
                   help="query position: feature cells of the layer's map (default), or input pixels with --pixels")
    p.add_argument("--pixels", action="store_true",
                   help="--query is in pixels of the model's input (the image after resizing and center-cropping)")
    p.add_argument("--layer", default=None, help="MHSA layer or BoT block name, e.g. layer4.1.attn (default: the last)")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the checkpoint's / model's)")
    p.add_argument("--output", default=None, metavar="PNG", help="default: <image stem>_attention.png")
    p.add_argument("--ema", action="store_true", help="use the checkpoint's EMA weights")
    p.set_defaults(func=cmd_attention)
