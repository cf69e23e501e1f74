"""``botnet experiment run SPEC --output DIR`` and ``botnet experiment report DIR``: the paper's tables
(and any sweep of recipes) as commands; the work is done by ``botnet.experiments``."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]

_LAUNCHERS = ("local", "torchrun", "slurm")


def cmd_run(args: argparse.Namespace) -> int:
    """Exit codes: 0 every run done (or submitted, for slurm without --wait); 1 a run failed or was
    stopped unfinished; 2 a bad spec or option."""
    from ..experiments import SpecError, load_spec
    from ..experiments.runner import prepare, read_plan, run_local, run_status

    try:
        if args.nproc < 1:
            raise SpecError(f"--nproc: expected an int >= 1, got {args.nproc}")
        if args.launcher == "local" and args.nproc != 1:
            raise SpecError("--nproc > 1 needs --launcher torchrun (or slurm)")
        exp = load_spec(args.spec)
        names = [r.name for r in exp.runs]
        unknown = sorted(set(args.only or []) - set(names))
        if unknown:
            raise SpecError(f"--only: no run(s) {unknown} in {exp.name!r}; its runs: {', '.join(names)}")
        out = prepare(exp, args.output)
    except SpecError as e:
        print(f"botnet experiment run: {e}", file=sys.stderr)
        return 2
    selected = [n for n in names if not args.only or n in args.only]
    if args.launcher == "slurm":
        try:
            from ..experiments import slurm
        except ImportError:
            print("botnet experiment run: --launcher slurm needs submitit: pip install 'botnet[slurm]'", file=sys.stderr)
            return 2

        todo = [n for n in selected if run_status(out / n) != "done"]
        try:
            for n, job in slurm.queued(out).items():
                if n in todo:
                    print(f"{n}: already queued as SLURM job {job}", file=sys.stderr)
            new = slurm.submit(out, todo, args.nproc, cpus_per_task=args.cpus_per_task, timeout_min=args.time_min,
                               partition=args.partition) if todo else {}
        except slurm.SlurmQueryError as e:
            print(f"botnet experiment run: {e}", file=sys.stderr)
            return 2
        if new:
            print(f"submitted {len(new)} run(s) as SLURM job array {next(iter(new.values())).split('_')[0]}: "
                  + ", ".join(f"{n}={i}" for n, i in new.items()), file=sys.stderr)
        if not args.wait:
            return 0
        status = slurm.wait(out, selected)
    else:
        status = run_local(out, selected, args.nproc if args.launcher == "torchrun" else 1)
    bad = {n: s for n, s in status.items() if s != "done"}
    plan = read_plan(out)
    print(f"{plan.name}: {len(status) - len(bad)}/{len(status)} runs done in {out}"
          + (f"; not done: {', '.join(f'{n} ({s})' for n, s in bad.items())}" if bad else ""), file=sys.stderr)
    return 1 if bad else 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..experiments import SpecError
    from ..experiments.report import write_report

    try:
        res = write_report(args.dir)
    except SpecError as e:
        print(f"botnet experiment report: {e}", file=sys.stderr)
        return 2
    print(res["markdown"], end="")
    print(f"written: {args.dir}/report.md, {args.dir}/report.csv, {res['plot']}", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..experiments import list_specs

    for name, what in list_specs():
        print(f"{name:16s} {what}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("experiment", help="the paper's tables (or your sweep) as runs, and their report beside the paper")
    esub = p.add_subparsers(dest="experiment_command", required=True)
    r = esub.add_parser("run", help="train every run of an experiment (skips finished runs, resumes unfinished ones)")
    r.add_argument("spec", help="a shipped experiment (`botnet experiment list`: table5, cpu_table4, ...) or a YAML spec "
                                "(base, overrides, runs, grid)")
    r.add_argument("--output", required=True, help="experiment folder: one botnet train run folder per run")
    r.add_argument("--launcher", choices=_LAUNCHERS, default="local",
                   help="local: one run after another here; torchrun: each run on --nproc processes; slurm: a job array")
    r.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun, slurm)")
    r.add_argument("--only", action="append", metavar="RUN", help="run only these runs (repeatable)")
    r.add_argument("--wait", action="store_true", help="slurm: wait until every run is done or failed")
    r.add_argument("--cpus-per-task", type=int, default=None, help="slurm: CPUs per run (default: --nproc)")
    r.add_argument("--time-min", type=int, default=24 * 60, help="slurm: time limit of each job in minutes")
    r.add_argument("--partition", default=None, help="slurm: partition (default: the cluster's default)")
    r.set_defaults(func=cmd_run)
    rep = esub.add_parser("report", help="DIR/report.md, DIR/report.csv and DIR/speed_accuracy.png, beside the paper")
    rep.add_argument("dir", help="the --output folder of `botnet experiment run`")
    rep.set_defaults(func=cmd_report)
    ls = esub.add_parser("list", help="the shipped experiments")
    ls.set_defaults(func=cmd_list)
