"""A two-variant sweep of a few steps on the tiny data (``sweep_spec``), and what the tests that run
it need: the child processes' environment (with the BOTNET_TEST_HOLD hook), the CLI, its report
without the timing column, and waiting for a run to reach a step."""

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

HOOKS = Path(__file__).parent / "hooks"  # sitecustomize: BOTNET_TEST_HOLD pauses a run at a step
STEPS = 6


def sweep_spec(tiny_data: str, path: Path, steps: int = STEPS) -> Path:
    """Two runs of botnet_tiny at 32 px (relative and absolute position encodings), ``steps`` steps of
    16 images, a checkpoint every step, one evaluation at the end; run 'abs' names a paper row."""
    spec = {
        "base": "demo",
        "paper_table": "4",
        "metric": "top1",
        "paper_metric": "AP^bb",
        "overrides": [f"data.root={tiny_data}", "model.name=botnet_tiny", "data.img_size=32", "data.workers=0",
                      "optim.batch_size=16", "optim.epochs=2", f"run.max_steps={steps}", "run.eval_every=100",
                      "run.log_every=1", "run.ckpt_every_steps=1", "run.keep_checkpoints=2", "run.amp=none",
                      "run.device=cpu"],
        "runs": {"rel": ["model.kwargs.pos_enc=relative"],
                 "abs": {"overrides": ["model.kwargs.pos_enc=absolute"], "paper": "BoT50 qk^T + qr^T abs"}},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def child_env(hold: Path | None = None, **extra) -> dict:
    """The environment of the processes a test launches: this checkout first, the hooks before it,
    one thread each (2 cores shared by the runs)."""
    src = str(Path(__file__).parents[1] / "src")
    paths = [str(HOOKS), src, os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p), OMP_NUM_THREADS="1", **extra)
    env.pop("BOTNET_TEST_HOLD", None)
    if hold is not None:
        env["BOTNET_TEST_HOLD"] = str(hold)
    return env


def experiment(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "botnet", "experiment", *map(str, args)], env=env or child_env(),
                          capture_output=True, text=True, timeout=timeout)


def report_rows(out: Path, drop=("step_ms",)) -> list[dict]:
    """report.csv of ``out`` (written by ``botnet experiment report``) without the timing columns."""
    proc = experiment("report", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def logged_step(run_dir: Path, step: int) -> bool:
    """Whether ``run_dir/metrics.jsonl`` has the step record of ``step`` (a run held there by
    BOTNET_TEST_HOLD has saved the checkpoint of the step before, not yet this one's)."""
    path = run_dir / "metrics.jsonl"
    return path.is_file() and f'"kind": "step", "step": {step},' in path.read_text()


def wait_for(cond, timeout: float = 240.0, what: str = "", proc=None):
    t0 = time.monotonic()
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before {what}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
