"""``botnet recipes``: the YAML recipes shipped in the package, by name, with a one-line description."""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("recipes", help="list the shipped recipes (botnet train --config NAME)",
                       description="The YAML recipes shipped with botnet: pass a name to `botnet train --config NAME` "
                                   "(or copy the file given by --json and edit it).")
    p.add_argument("pattern", nargs="?", default=None, help="only names matching this glob, e.g. 'detection/*'")
    p.add_argument("--json", action="store_true", help="name, description and file path of each, as JSON")
    p.set_defaults(func=cmd_recipes)


def cmd_recipes(args: argparse.Namespace) -> int:
    from ..recipes import find_recipe, list_recipes

    rows = [(n, d) for n, d in list_recipes() if not args.pattern or fnmatch.fnmatch(n, args.pattern)]
    if args.pattern and not rows:
        print(f"botnet recipes: no shipped recipe matches {args.pattern!r} (try `botnet recipes` for all)", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{"name": n, "description": d, "path": str(find_recipe(n))} for n, d in rows]))
        return 0
    width = max(len(n) for n, _ in rows)
    for name, desc in rows:
        print(f"{name:{width}s}  {desc}")
    return 0
