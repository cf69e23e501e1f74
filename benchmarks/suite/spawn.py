"""Start ``suite.worker`` in child processes: the parent side of the fresh-process measurements."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["run_in_subprocess"]


def run_in_subprocess(jobs: list[dict], fresh: bool = True, timeout: float = 1800) -> list[dict]:
    """Run ``jobs`` in child processes: one process per job (``fresh``) or one for all of them."""
    if not jobs:
        return []
    if fresh and len(jobs) > 1:
        return [r for job in jobs for r in run_in_subprocess([job], fresh=False, timeout=timeout)]
    here = Path(__file__).resolve().parents[1]  # benchmarks/, which holds this package
    src = here.parent / "src"  # the checkout's botnet package, when there is one
    path = [str(here)] + ([str(src)] if (src / "botnet").is_dir() else []) + [os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)),
               MALLOC_MMAP_THRESHOLD_="65536")
    try:
        proc = subprocess.run([sys.executable, "-m", "suite.worker"], input=json.dumps(jobs),
                              capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"error": f"timed out after {timeout:.0f} s"} for _ in jobs]
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        reason = "killed (out of memory?)" if proc.returncode < 0 else f"exit code {proc.returncode}"
        return [{"error": f"worker {reason}: {tail}"} for _ in jobs]
    return json.loads(proc.stdout.strip().splitlines()[-1])
