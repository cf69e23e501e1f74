"""Measurements that need a fresh process (started by ``suite.spawn``): ``python -m suite.worker`` reads a JSON list of
jobs on stdin and prints a JSON list of results on stdout.

A job is ``{"kind": "mhsa", ...}`` (peak memory of one MHSA implementation at one case, see
``suite.mhsa.memory_job``) or ``{"kind": "model", ...}`` (peak memory of one train step of a
whole model, see ``suite.models.model_job``) or ``{"kind": "compile", ...}`` (seconds of a
``dynamic=True`` compile, see ``suite.compiled.compile_job``; the parent's time limit bounds it). A job that raises gives ``{"error": "..."}``
instead of stopping the others. The child runs with glibc's mmap threshold fixed at 64 KiB, so that
its resident set follows its live tensors (see ``suite.timing``); timings are never taken
there.
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["run_job"]


def run_job(job: dict) -> dict:
    try:
        if job["kind"] == "mhsa":
            from .mhsa import memory_job

            return memory_job(job)
        if job["kind"] == "model":
            from .models import model_job

            return model_job(job)
        if job["kind"] == "compile":
            from .compiled import compile_job

            return compile_job(job)
        raise ValueError(f"unknown job kind {job['kind']!r}")
    except Exception as e:  # reported to the parent, which prints it in the table
        return {"error": f"{type(e).__name__}: {e}"}


def main() -> int:
    jobs = json.load(sys.stdin)
    results = [run_job(j) for j in jobs]
    sys.stdout.write(json.dumps(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
