"""The SLURM launcher: one job array (submitit), one array task per unfinished run.

Each task runs ``runner.run_one`` (``botnet train --resume auto`` in a child process). Preemption
and time limits: SLURM sends the job SIGUSR2 ``signal_delay_s`` seconds before it ends it;
submitit calls ``TrainRunJob.checkpoint``, which passes SIGTERM on to the training (it saves the
current step and exits 0) and returns the same job, which submitit requeues (``scontrol requeue``).
A job requeued from outside (``scontrol requeue``, a preempting partition) runs the same function
again and ``--resume auto`` continues from the newest checkpoint.

No accounting storage is needed: ``wait`` watches submitit's result files, never ``sacct``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import submitit

from .runner import read_plan, run_one, run_status

__all__ = ["SlurmQueryError", "TrainRunJob", "job_state", "queued", "squeue", "submit", "wait"]


class SlurmQueryError(RuntimeError):
    """``squeue`` failed for a reason other than an unknown job id (e.g. a busy slurmctld's socket
    timeout, or no SLURM here): what the queue holds is unknown, so nothing may be read into it."""


class TrainRunJob(submitit.helpers.Checkpointable):
    """The job of one run: ``run_one(out, name, nproc)``; requeued on preemption (see module doc)."""

    def __init__(self, out: str, name: str, nproc: int = 1, grace_s: float = 60.0):
        self.out, self.name, self.nproc, self.grace_s = str(out), name, nproc, grace_s
        self._proc: subprocess.Popen | None = None

    def __call__(self) -> str:
        status = run_one(self.out, self.name, self.nproc, on_start=self._started)
        if status == "failed":
            raise RuntimeError(f"run {self.name} failed: see {Path(self.out) / self.name / 'failed.json'}")
        return status

    def _started(self, proc: subprocess.Popen) -> None:
        self._proc = proc

    def checkpoint(self, *args, **kwargs):
        proc = self._proc
        if proc is not None and proc.poll() is None:  # the training saves its step on SIGTERM and exits
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._proc = None
        return super().checkpoint(*args, **kwargs)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}

    def __setstate__(self, state):
        self.__dict__.update(state, _proc=None)


def squeue(args: list[str], attempts: int = 3, pause_s: float = 2.0) -> str | None:
    """stdout of ``squeue ARGS``; None when squeue answers "Invalid job id" (the job has left the queue).
    Any other failure is retried ``attempts`` times (a busy slurmctld times out now and then), then
    raises SlurmQueryError with squeue's first line: a failed query never reads as an empty queue."""
    why = ""
    for i in range(attempts):
        try:
            res = subprocess.run(["squeue", *args], capture_output=True, text=True)
        except OSError as e:  # no squeue on PATH
            raise SlurmQueryError(f"squeue could not run: {e.strerror or e}") from None
        if res.returncode == 0:
            return res.stdout
        if "Invalid job id" in res.stderr:
            return None
        why = next((ln.strip() for ln in res.stderr.splitlines() if ln.strip()), f"exit code {res.returncode}")
        if i + 1 < attempts:
            time.sleep(pause_s)
    raise SlurmQueryError(f"squeue failed {attempts} times ({why}); is slurmctld up (scontrol ping)?")


def job_state(job: str) -> str:
    """squeue's state of ``job`` (PENDING, RUNNING, ...), or "" once it has left the queue."""
    out = squeue(["-h", "-j", job, "-o", "%T"])
    return "" if out is None else out.strip()


def queued(out: str | Path) -> dict[str, str]:
    """{run: job id} of the jobs submitted for ``out`` that SLURM still holds (pending, running,
    requeued), from ``OUT/slurm_jobs.json`` and ``squeue`` (no accounting storage needed). Raises
    SlurmQueryError when squeue fails: then which runs are queued is unknown, and resubmitting
    would run a queued run twice."""
    path = Path(out) / "slurm_jobs.json"
    if not path.is_file():
        return {}
    jobs = json.loads(path.read_text())
    alive = set((squeue(["-h", "-r", "--me", "-o", "%i"]) or "").split())
    return {name: job for name, job in jobs.items() if job in alive}


def submit(out: str | Path, names: list[str], nproc: int = 1, *, cpus_per_task: int | None = None,
           timeout_min: int = 60 * 24, partition: str | None = None, signal_delay_s: int = 120,
           max_parallel: int = 64, extra: dict | None = None) -> dict[str, str]:
    """Submit ``names`` (runs of the experiment in ``out``) as one job array, leaving out runs whose
    job is still queued or running; returns {run: SLURM job id (``ARRAYID_INDEX``)} of the new jobs.
    ``OUT/slurm_jobs.json`` keeps every run's newest job; job files are in ``OUT/slurm/``."""
    out = Path(out).resolve()
    read_plan(out)  # the plan must exist
    active = queued(out)
    names = [n for n in names if n not in active]
    if not names:
        return {}
    executor = submitit.AutoExecutor(folder=out / "slurm" / "%j", cluster="slurm")
    params = {"requeue": True, **(extra or {})}
    executor.update_parameters(name=f"botnet-{out.name}", timeout_min=timeout_min, nodes=1, tasks_per_node=1,
                               cpus_per_task=cpus_per_task or nproc, slurm_signal_delay_s=signal_delay_s,
                               slurm_array_parallelism=max_parallel, slurm_additional_parameters=params,
                               **({"slurm_partition": partition} if partition else {}))
    jobs = []
    with executor.batch():
        for name in names:
            jobs.append(executor.submit(TrainRunJob(str(out), name, nproc)))
    new = {name: j.job_id for name, j in zip(names, jobs)}
    path = out / "slurm_jobs.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**known, **new}, indent=1) + "\n")
    return new


def wait(out: str | Path, names: list[str], poll_s: float = 2.0, timeout_s: float | None = None) -> dict[str, str]:
    """Block until every run in ``names`` is done or failed (or ``timeout_s`` passes); {name: status}."""
    out = Path(out)
    start = time.monotonic()
    while True:
        status = {n: run_status(out / n) for n in names}
        if all(s in ("done", "failed") for s in status.values()):
            return status
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            return status
        time.sleep(poll_s)
