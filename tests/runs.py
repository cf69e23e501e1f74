"""Helpers the tests that launch training processes or the CLI share: a free TCP port on 127.0.0.1,
a run's per-step losses from its metrics log, ending every process a test started, what the CLI
itself wrote to stderr (without the run logger's lines), and a recipe trained in full."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from botnet.engine.metrics import read_jsonl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_losses(out) -> list[tuple[int, float]]:
    """[(step, loss)] of the "step" records in ``out/metrics.jsonl``."""
    return [(r["step"], r["loss"]) for r in read_jsonl(Path(out) / "metrics.jsonl") if r["kind"] == "step"]


def end_all(procs: list[subprocess.Popen]) -> None:
    """Kill whichever of ``procs`` still runs and reap them all (their pipes closed)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate()


def cli_errors(err: str) -> str:
    """``err`` without the run logger's lines (``HH:MM:SS LEVEL ...``), joined by newlines: what the
    CLI itself printed. The logger's lines come and go with the test order (it writes to stderr once
    any test has given it its handler)."""
    return "\n".join(line for line in err.splitlines() if not re.match(r"\d\d:\d\d:\d\d [A-Z]+ ", line))


def train_recipe(config: Path, tmp_path: Path, timeout: float, *overrides: str, output: str = "run") -> dict:
    """``python -m botnet train --config CONFIG [KEY=VALUE ...]`` in full, built-in data generated into a
    fresh cache under ``tmp_path`` (shared by the runs of one test), into ``tmp_path / output``; returns
    the final evaluation (the JSON line the command prints last)."""
    env = dict(os.environ, BOTNET_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "botnet", "train", "--config", str(config), "--output", str(tmp_path / output),
           *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
