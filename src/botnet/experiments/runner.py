"""Running an experiment's runs: each one ``botnet train --resume auto`` into ``OUTPUT/<run>``.

``OUTPUT/experiment.yaml`` holds the expanded spec (written once; a later command with other
settings for the same run names is refused). A run's state is read from its folder:

- ``done``: ``result.json`` (the final evaluation, written when ``botnet train`` finished);
- ``failed``: ``failed.json`` (exit code and the error line); the next ``run`` retries it;
- ``unfinished``: a run folder with metrics or checkpoints but neither file (killed, preempted);
- ``pending``: nothing yet.

Running the same command again skips ``done`` runs and resumes the others from their newest valid
checkpoint (``--resume auto``: the same global batches, so the same numbers as an uninterrupted run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import yaml

from .spec import Experiment, RunSpec, SpecError

__all__ = ["PLAN_FILE", "prepare", "read_plan", "run_status", "train_command", "run_one", "run_local", "STATUSES"]

PLAN_FILE = "experiment.yaml"
STATUSES = ("done", "failed", "unfinished", "pending")
# exit codes of a training stopped by a preemption signal after saving: 0 at a step boundary, 128 + the
# signal when the watchdog ended a process blocked away from one (botnet.engine.faults)
_STOPPED = (0, 128 + signal.SIGTERM, 128 + signal.SIGUSR1, 128 + signal.SIGINT)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def prepare(exp: Experiment, out: str | Path) -> Path:
    """Create ``out`` and its plan (``experiment.yaml``); an existing plan must agree on every run it
    shares with ``exp`` (same recipe and overrides), else ``SpecError``. Returns ``out``."""
    out = Path(out)
    plan = out / PLAN_FILE
    if plan.is_file():
        old = read_plan(out)
        for run in exp.runs:
            prev = next((r for r in old.runs if r.name == run.name), None)
            if prev is not None and (prev.base, prev.overrides) != (run.base, run.overrides):
                raise SpecError(f"{out} already holds run {run.name!r} with other settings ({prev.base} "
                                f"{' '.join(prev.overrides)}); give another --output")
        known = {r.name for r in exp.runs}
        exp = Experiment(exp.name, exp.description, exp.runs + [r for r in old.runs if r.name not in known],
                         exp.metric, exp.paper_metric, exp.paper_table)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(plan, yaml.safe_dump(exp.to_dict(), sort_keys=False))
    return out


def read_plan(out: str | Path) -> Experiment:
    """The experiment planned in ``out`` (its ``experiment.yaml``)."""
    plan = Path(out) / PLAN_FILE
    if not plan.is_file():
        raise SpecError(f"{out}: no {PLAN_FILE}; expected the --output folder of `botnet experiment run`")
    return Experiment.from_dict(yaml.safe_load(plan.read_text()))


def run_status(run_dir: str | Path) -> str:
    """One of ``STATUSES`` (see the module docstring)."""
    d = Path(run_dir)
    if (d / "result.json").is_file():
        return "done"
    if (d / "failed.json").is_file():
        return "failed"
    if (d / "metrics.jsonl").is_file() or (d / "last.pt").is_file():
        return "unfinished"
    return "pending"


def train_command(run: RunSpec, run_dir: str | Path, nproc: int = 1, python: str = sys.executable) -> list[str]:
    """The ``botnet train`` command line of ``run`` (under torchrun, standalone, when ``nproc > 1``)."""
    if nproc > 1:
        head = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "botnet"]
    else:
        head = [python, "-m", "botnet"]
    return head + ["train", "--config", run.base, "--output", str(run_dir), "--resume", "auto", *run.overrides]


def _ignore_usr2() -> None:
    """In the training process: SIGUSR2 is submitit's preemption signal to the job, handled by the
    job (``slurm.TrainRunJob.checkpoint``), which passes SIGTERM on; by default it would kill."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def run_one(out: str | Path, name: str, nproc: int = 1, on_start: Callable[[subprocess.Popen], None] | None = None) -> str:
    """Train run ``name`` of the experiment in ``out`` to its end (or resume it) in a child process;
    returns its status afterwards: "done", "failed" or "unfinished" (stopped by SIGTERM/SIGUSR1
    after saving: run again to resume). The child's stderr goes to ``OUTPUT/<name>/train.log``.
    ``on_start`` gets the child (the SLURM job uses it to pass a preemption signal on)."""
    out = Path(out)
    run = read_plan(out).run(name)
    run_dir = out / run.name
    if run_status(run_dir) == "done":
        return "done"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "failed.json").unlink(missing_ok=True)
    with open(run_dir / "train.log", "a") as log:
        proc = subprocess.Popen(train_command(run, run_dir, nproc), stdout=subprocess.PIPE, stderr=log, text=True,
                                preexec_fn=_ignore_usr2)
        if on_start is not None:
            on_start(proc)
        stdout, _ = proc.communicate()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else None
    if proc.returncode == 0 and result is not None and not result.get("preempted"):
        _write_atomic(run_dir / "result.json", json.dumps({"name": run.name, "eval": result}, indent=1) + "\n")
        return "done"
    if proc.returncode in _STOPPED or proc.returncode < 0:  # saved and stopped on a signal, or killed: resumable
        return "unfinished"
    errors = [ln for ln in (run_dir / "train.log").read_text().splitlines() if ln.startswith("botnet train:")]
    _write_atomic(run_dir / "failed.json", json.dumps({"name": run.name, "returncode": proc.returncode,
                                                       "error": errors[-1] if errors else ""}) + "\n")
    return "failed"


def run_local(out: str | Path, names: list[str] | None = None, nproc: int = 1,
              report: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> dict[str, str]:
    """Run the experiment's runs (``names``, default all) one after another on this machine, on
    ``nproc`` processes each (torchrun when > 1); done runs are skipped. SIGTERM / SIGUSR1 are passed
    on to the training, which saves and stops; the sweep then stops too (as at any run that ends
    unfinished). Returns {name: status}."""
    exp = read_plan(out)
    statuses, child, stop = {}, [], []

    def on_signal(signum, frame):  # pass it on to the training (it saves and stops), then stop the sweep
        stop.append(signum)
        if child and child[-1].poll() is None:
            child[-1].send_signal(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        _run_all(exp, out, names, nproc, report, statuses, child.append, stop)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return statuses


def _run_all(exp: Experiment, out, names, nproc, report, statuses: dict, on_start, stop: list) -> None:
    for run in exp.runs:
        if stop:
            report(f"stopped by signal {stop[0]}: run the same command again to go on")
            break
        if names is not None and run.name not in names:
            continue
        before = run_status(Path(out) / run.name)
        if before == "done":
            report(f"{run.name}: done (skipped)")
            statuses[run.name] = "done"
            continue
        report(f"{run.name}: {'resuming' if before == 'unfinished' else 'starting'} "
               f"({run.base} {' '.join(run.overrides)})")
        statuses[run.name] = status = run_one(out, run.name, nproc, on_start)
        report(f"{run.name}: {status}")
        if status == "unfinished":
            break
