"""``botnet bench``: the benchmark suite (botnet.bench); prints Markdown tables, or JSON."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

PARTS = ("mhsa", "models", "r50-vs-bot50-1024")  # botnet.bench.PARTS, repeated so --help needs no torch
DEFAULT_DOC = Path(__file__).resolve().parents[3] / "docs" / "benchmarks.md"  # the source checkout's


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("parts", nargs="*", metavar="PART", help=f"parts to run (default: all): {', '.join(PARTS)}")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 5; 3 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 2 for mhsa, else 1)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if available")
    p.add_argument("--batch", type=int, default=None, help="batch of the models part (default 2 on CPU, 32 on CUDA)")
    p.add_argument("--quick", action="store_true", help="reduced cases and runs (about a minute on CPU): a smoke test")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--write-doc", action="store_true", help="write the tables into --doc between their markers")
    p.add_argument("--doc", type=Path, default=DEFAULT_DOC, help=f"document to write (default {DEFAULT_DOC})")


def run(args: argparse.Namespace, command: str) -> int:
    """Run the parts named in ``args``; ``command`` is how the run is shown in the document."""
    from botnet.bench import run_part, resolve_device
    from botnet.bench.report import render_part, write_doc

    parts = args.parts or list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"botnet bench: unknown part(s) {', '.join(unknown)}; expected {', '.join(PARTS)}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"botnet bench: {e}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[bench {time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    results = {}
    for part in parts:
        try:
            results[part] = run_part(part, device, args.repeats, args.warmup, args.quick, args.batch, command, log=log)
        except ValueError as e:
            print(f"botnet bench: {e}", file=sys.stderr)
            return 2
        if not args.json:
            print(f"\n## {part}\n\n{render_part(results[part])}\n", flush=True)
    if args.json:
        print(json.dumps(results, default=str))
    if args.write_doc:
        path = write_doc(args.doc, {f"{p}:{r['machine']['device']}": render_part(r) for p, r in results.items()})
        log(f"wrote {', '.join(results)} into {path}")
    return 0


def command_line(prog: list[str], args: argparse.Namespace) -> str:
    """The command that repeats this run: ``prog``, the parts and the options given."""
    words = list(prog) + list(args.parts)
    for opt in ("repeats", "warmup", "batch"):
        if getattr(args, opt) is not None:
            words += [f"--{opt}", str(getattr(args, opt))]
    if args.device != "auto":
        words += ["--device", args.device]
    words += [f"--{flag.replace('_', '-')}" for flag in ("quick", "json", "write_doc") if getattr(args, flag)]
    if args.doc != DEFAULT_DOC:
        words += ["--doc", str(args.doc)]
    return shlex.join(words)


def cmd_bench(args: argparse.Namespace) -> int:
    return run(args, command=command_line(["botnet", "bench"], args))


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: MHSA vs timm/lucidrains, model train steps (docs/benchmarks.md)",
                       description="Run the benchmark suite or some of its parts and print the tables.")
    add_arguments(p)
    p.set_defaults(func=cmd_bench)
