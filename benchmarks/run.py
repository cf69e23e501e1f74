"""Run the benchmark suite and write its tables into docs/benchmarks.md (between the markers).

    python benchmarks/run.py                    # all parts, on CUDA if there is one
    python benchmarks/run.py mhsa --device cpu  # one part
    python benchmarks/run.py --quick --no-doc   # a one-minute smoke test, document untouched

The same library code as ``botnet bench`` (botnet.bench); this script only writes the document by
default and records itself as the command.
"""

from __future__ import annotations

import argparse
import sys

from botnet.commands.bench import add_arguments, command_line, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--no-doc", action="store_true", help="print the tables only; leave the document alone")
    args = p.parse_args(argv)
    args.write_doc = not args.no_doc
    prog = ["python", "benchmarks/run.py"]
    cmd = command_line(prog, args).replace(" --write-doc", "") + (" --no-doc" if args.no_doc else "")
    return run(args, command=cmd)


if __name__ == "__main__":
    sys.exit(main())
