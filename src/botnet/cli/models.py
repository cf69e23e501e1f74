"""``botnet list`` and ``botnet profile``: the registered models, their sizes beside the paper's."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register"]


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
    from ..models import list_models, model_entrypoint

    for name in list_models(args.pattern):
        if args.verbose:
            doc = (model_entrypoint(name).__doc__ or "").strip().splitlines()[0]
            print(f"{name:18s} {doc}")
        else:
            print(name)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    if args.paper:
        return _profile_paper(args.json, args.markdown)
    if not args.name:
        print("botnet profile: give a model name (see `botnet list`) or --paper", file=sys.stderr)
        return 2
    from ..counter import profile_model

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


def _markdown(rows: list[dict]) -> None:
    print("| table | row | model | res | params paper (M) | ours | diff | M.Adds paper (G) | ours | diff | status |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['table']} | {r['label']} | {r['model'] or '(EfficientNet)'} | {r['img_size']} | "
            f"{_fmt(r['paper_params_m'], '.2f')} | {_fmt(r['params_m'], '.2f')} | {_pct(r['params_delta'])} | "
            f"{_fmt(r['paper_madds_g'], '.2f')} | {_fmt(r['madds_g'], '.2f')} | {_pct(r['madds_delta'])} | {r['status']} |"
        )


def _profile_paper(as_json: bool, markdown: bool) -> int:
    from ..paper import MADDS_TOL, PARAMS_TOL, compare_all

    rows = compare_all()
    if as_json:
        print(json.dumps(rows))
        return 0
    if markdown:
        _markdown(rows)
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


def register(sub) -> None:
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
