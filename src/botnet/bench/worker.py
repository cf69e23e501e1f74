"""Measurements that need a fresh process: ``python -m botnet.bench.worker`` reads a JSON list of
jobs on stdin and prints a JSON list of results on stdout.

A job is ``{"kind": "mhsa", ...}`` (peak memory of one MHSA implementation at one case, see
``botnet.bench.mhsa.memory_job``) or ``{"kind": "model", ...}`` (peak memory of one train step of a
whole model, see ``botnet.bench.models.model_job``). A job that raises gives ``{"error": "..."}``
instead of stopping the others. The child runs with glibc's mmap threshold fixed at 64 KiB, so that
its resident set follows its live tensors (see ``botnet.bench.timing``); timings are never taken
there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["run_job", "run_in_subprocess"]


def run_job(job: dict) -> dict:
    try:
        if job["kind"] == "mhsa":
            from .mhsa import memory_job

            return memory_job(job)
        if job["kind"] == "model":
            from .models import model_job

            return model_job(job)
        raise ValueError(f"unknown job kind {job['kind']!r}")
    except Exception as e:  # reported to the parent, which prints it in the table
        return {"error": f"{type(e).__name__}: {e}"}


def run_in_subprocess(jobs: list[dict], fresh: bool = True, timeout: float = 1800) -> list[dict]:
    """Run ``jobs`` in child processes: one process per job (``fresh``) or one for all of them."""
    if not jobs:
        return []
    if fresh and len(jobs) > 1:
        return [r for job in jobs for r in run_in_subprocess([job], fresh=False, timeout=timeout)]
    src = str(Path(__file__).resolve().parents[2])  # the directory that holds the botnet package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
               MALLOC_MMAP_THRESHOLD_="65536")
    try:
        proc = subprocess.run([sys.executable, "-m", "botnet.bench.worker"], input=json.dumps(jobs),
                              capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"error": f"timed out after {timeout:.0f} s"} for _ in jobs]
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        reason = "killed (out of memory?)" if proc.returncode < 0 else f"exit code {proc.returncode}"
        return [{"error": f"worker {reason}: {tail}"} for _ in jobs]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    jobs = json.load(sys.stdin)
    results = [run_job(j) for j in jobs]
    sys.stdout.write(json.dumps(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
