"""Kill-and-recover cycles under torchrun: how often does an elastic restart recover?

Each cycle runs ``torchrun --nproc-per-node 2 --max-restarts 1`` (gloo, CPU) on `botnet train`
(botnet_tiny at 32 px on a small copy of the built-in data, checkpoints every 2 steps,
``--resume auto``), SIGKILLs rank 1 after step ``--kill-at`` of the first attempt, and checks that
the restarted round finishes: torchrun exits 0, the run reaches its last step, and the steps after
the restart carry the losses of an uninterrupted run (same step, same loss to 1e-6).

    python benchmarks/restart_cycle.py              # 20 cycles; writes its table into docs/benchmarks.md
    python benchmarks/restart_cycle.py --cycles 3 --no-doc

The suite runs a few cycles through ``run_cycles`` (tests/engine/test_elastic.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the suite package beside this script
from suite.report import machine_info, measured_on, write_doc  # noqa: E402

KEEP = Path(tempfile.gettempdir()) / "restart_cycle_failures"  # the logs of failed cycles are kept here
RDZV = os.environ.get("CYCLE_RDZV", "static")  # torchrun's default (static, --master-port) or c10d
BLOCK = "restart-cycle-c10d:cpu" if RDZV == "c10d" else "restart-cycle:cpu"  # one table per rendezvous
OVERRIDES = ["model.name=botnet_tiny", "data.img_size=32", "data.workers=0", "optim.batch_size=16",
             "optim.micro_batch=8", "run.amp=none", "run.log_every=1", "optim.warmup_epochs=1", "optim.epochs=2",
             "run.ckpt_every_steps=2", "run.keep_checkpoints=2", "run.deterministic=true", "run.dist_timeout_s=30"]

# patched into the worker before botnet.cli.main: SIGKILL this rank after a chosen step, first attempt only
RUNNER = r"""
import os, signal, sys
from botnet.engine import metrics
kill_at = int(os.environ.get("CYCLE_KILL_AT_STEP", "0"))
first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
victim = os.environ.get("RANK") == os.environ.get("CYCLE_KILL_RANK", "1")
real_log = metrics.MetricsLogger.log
def log(self, rec):
    real_log(self, rec)
    if first and victim and rec.get("kind") == "step" and rec["step"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
metrics.MetricsLogger.log = log
from botnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    src = str(REPO / "src")
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": src + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}


def _steps(out: Path) -> dict[int, float]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return {}
    steps = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind") == "step":
            steps[rec["step"]] = rec["loss"]  # a resumed run logs the replayed steps again: keep the last
    return steps


def _train_cmd(runner: Path, out: Path, data: str) -> list[str]:
    return [str(runner), "train", "--config", "demo", "--output", str(out),
            "--data", data, "--resume", "auto", *OVERRIDES]


def reference_run(workdir: Path, data: str, timeout: float = 600) -> dict[int, float]:
    """The uninterrupted run (same torchrun, no kill): {step: loss}."""
    return one_cycle(workdir / "reference", data, kill_at=0, timeout=timeout)["steps"]


def one_cycle(out: Path, data: str, kill_at: int, timeout: float = 600) -> dict:
    """One torchrun launch with rank 1 SIGKILLed after step ``kill_at`` (0: no kill)."""
    runner = out.parent / "restart_runner.py"
    runner.write_text(RUNNER)
    rdzv = (["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}"] if RDZV == "c10d"
            else ["--master-port", str(free_port())])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts", "1", *rdzv,
           "--monitor-interval", "0.5", *_train_cmd(runner, out, data)]
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, env={**_env(), "CYCLE_KILL_AT_STEP": str(kill_at)}, capture_output=True, text=True,
                           timeout=timeout)
        rc, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = "timeout", (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    (out / "torchrun.log").write_text(err)
    return {"rc": rc, "seconds": time.monotonic() - t0, "steps": _steps(out), "stderr_tail": err[-3000:],
            "errors": [ln for ln in err.splitlines() if not ln.startswith("frame #")
                       and ("botnet" in ln or "Error:" in ln or "terminate called" in ln or "SIG" in ln)][:8]}


def _verdict(res: dict, reference: dict[int, float]) -> str:
    if res["rc"] != 0:
        hint = res["errors"][-1] if res["errors"] else "(no error line)"
        return f"failed (exit {res['rc']}): {hint.strip()[:200]}"
    last = max(reference)
    if max(res["steps"], default=0) != last:
        return f"stopped at step {max(res['steps'], default=0)} of {last}"
    bad = [s for s, v in reference.items() if abs(res["steps"].get(s, float("nan")) - v) > 1e-6]
    return "recovered" if not bad else f"losses differ from the uninterrupted run at steps {bad[:5]}"


def run_cycles(n: int, kill_at: int = 3, workdir: str | Path | None = None, log=print) -> dict:
    """Run the reference and ``n`` kill-and-recover cycles; returns {"recovered", "cycles", "rows", ...}."""
    from botnet.data import builtin_dataset_root

    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="restart_cycle_")) if own else Path(workdir)
    try:
        log(f"work folder: {work}")
        data = str(builtin_dataset_root(work / "cache", per_class_train=8, per_class_val=2))
        t0 = time.monotonic()
        reference = reference_run(work, data)
        log(f"reference: {len(reference)} steps in {time.monotonic() - t0:.0f} s")
        rows = []
        for i in range(n):
            res = one_cycle(work / f"cycle{i:02d}", data, kill_at)
            verdict = _verdict(res, reference)
            rows.append({"cycle": i + 1, "seconds": res["seconds"], "verdict": verdict})
            log(f"cycle {i + 1}/{n}: {verdict} ({res['seconds']:.0f} s)")
            if verdict != "recovered":
                log("\n".join(res["errors"]))
                kept = KEEP / f"cycle{i + 1:02d}_{int(time.time())}.log"
                KEEP.mkdir(parents=True, exist_ok=True)
                shutil.copy(work / f"cycle{i:02d}" / "torchrun.log", kept)
                log(f"full log kept: {kept}")
        return {"cycles": n, "recovered": sum(r["verdict"] == "recovered" for r in rows), "rows": rows,
                "kill_at": kill_at, "steps": len(reference)}
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def render(res: dict, command: str, machine: dict) -> str:
    """The table; ``machine`` is suite.report.machine_info's dict, taken when the cycles ended."""
    lines = [measured_on(machine, f"load average {machine['load1']:.1f} at the end")
             + "; `torchrun --nproc-per-node 2 --max-restarts 1` (gloo, "
             + ("c10d rendezvous on 127.0.0.1" if RDZV == "c10d" else "torchrun's default static rendezvous, --master-port")
             + f"), rank 1 SIGKILLed after step {res['kill_at']} of {res['steps']} in the first round.", "",
             f"Command: `{command}`", "",
             f"**{res['recovered']} of {res['cycles']} cycles recovered** (torchrun exit 0, every step's loss equal "
             "to the uninterrupted run's).", "", "| cycle | result | seconds |", "|---|---|---|"]
    lines += [f"| {r['cycle']} | {r['verdict']} | {r['seconds']:.0f} |" for r in res["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--kill-at", type=int, default=3, help="the step after which rank 1 is killed (first round)")
    p.add_argument("--no-doc", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    if args.cycles < 1 or args.kill_at < 1:
        print("restart_cycle: --cycles and --kill-at must be >= 1", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO / "src"))
    res = run_cycles(args.cycles, args.kill_at)
    cmd = ("CYCLE_RDZV=c10d " if RDZV == "c10d" else "") + "python benchmarks/restart_cycle.py" + (f" --cycles {args.cycles}" if args.cycles != 20 else "") + (
        f" --kill-at {args.kill_at}" if args.kill_at != 3 else "")
    body = render(res, cmd, machine_info())
    print(body)
    if not args.no_doc:
        write_doc(DOC, {BLOCK: body})
    return 0 if res["recovered"] == res["cycles"] else 1


if __name__ == "__main__":
    sys.exit(main())
