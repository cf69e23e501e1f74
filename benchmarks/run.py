"""Run the benchmark suite (``suite/``) and write its tables into docs/benchmarks.md (between the markers).

    python benchmarks/run.py                    # all parts, on CUDA if there is one
    python benchmarks/run.py mhsa --device cpu  # one part
    python benchmarks/run.py --quick --no-doc   # a one-minute smoke test, document untouched
    python benchmarks/run.py mhsa --json --no-doc

The suite (MHSA against timm and lucidrains, whole-model train steps, the targets each table is
checked against, the document writer) lives here, outside the installed package; it needs the
``bench`` extra (timm, bottleneck-transformer-pytorch). Every table records this command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

PARTS = ("mhsa", "models", "r50-vs-bot50-1024", "vs-timm", "compile")  # suite.PARTS, repeated so --help needs no torch
DEFAULT_DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("parts", nargs="*", metavar="PART", help=f"parts to run (default: all): {', '.join(PARTS)}")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 5; 3 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 2 for mhsa, else 1)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda if available")
    p.add_argument("--batch", type=int, default=None, help="batch of the models part (default 2 on CPU, 32 on CUDA)")
    p.add_argument("--models", default=None, help="vs-timm: comma-separated model names (default: all three)")
    p.add_argument("--quick", action="store_true", help="reduced cases and runs (about a minute on CPU): a smoke test")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--no-doc", action="store_true", help="print the tables only; leave the document alone")
    p.add_argument("--doc", type=Path, default=DEFAULT_DOC, help=f"document to write (default {DEFAULT_DOC})")


def run(args: argparse.Namespace, command: str) -> int:
    """Run the parts named in ``args``; ``command`` is how the run is shown in the document."""
    from suite import run_part, resolve_device
    from suite.report import render_part, write_doc

    parts = args.parts or list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"benchmarks/run.py: unknown part(s) {', '.join(unknown)}; expected {', '.join(PARTS)}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"benchmarks/run.py: {e}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[bench {time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    results = {}
    for part in parts:
        try:
            results[part] = run_part(part, device, args.repeats, args.warmup, args.quick, args.batch, command, log=log,
                                     models=args.models.split(",") if args.models else None)
        except ValueError as e:
            print(f"benchmarks/run.py: {e}", file=sys.stderr)
            return 2
        if not args.json:
            print(f"\n## {part}\n\n{render_part(results[part])}\n", flush=True)
    if args.json:
        print(json.dumps(results, default=str))
    if not args.no_doc:
        path = write_doc(args.doc, {f"{p}:{r['machine']['device']}": render_part(r) for p, r in results.items()})
        log(f"wrote {', '.join(results)} into {path}")
    return 0


def command_line(prog: list[str], args: argparse.Namespace) -> str:
    """The command that repeats this run: ``prog``, the parts and the options given."""
    words = list(prog) + list(args.parts)
    for opt in ("repeats", "warmup", "batch", "models"):
        if getattr(args, opt) is not None:
            words += [f"--{opt}", str(getattr(args, opt))]
    if args.device != "auto":
        words += ["--device", args.device]
    words += [f"--{flag.replace('_', '-')}" for flag in ("quick", "json", "no_doc") if getattr(args, flag)]
    if args.doc != DEFAULT_DOC:
        words += ["--doc", str(args.doc)]
    return shlex.join(words)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    return run(args, command=command_line(["python", "benchmarks/run.py"], args))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the suite package beside this script
    sys.exit(main())
