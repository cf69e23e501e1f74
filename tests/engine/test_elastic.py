"""Elastic restarts and bounded stops (docs/reliability.md, "Elastic restarts"):

- a restarted round bootstraps from a fresh store: a stale address left in torchrun's agent store
  by the previous round is never used (the cause of "Connection refused" in connectFullMesh);
- a rank that cannot join gives up after BOTNET_DIST_JOIN_TIMEOUT_S with a one-line error;
- SIGTERM ends a process blocked where no step boundary comes (joining, a hung collective) within
  seconds, after saving the last finished step;
- kill-and-recover cycles under ``torchrun --max-restarts 1`` (benchmarks/restart_cycle.py).
"""

import datetime
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from botnet.checkpoint import load_checkpoint
from botnet.engine.distributed import STORE_KEY, DistInfo, fresh_round_store, join_timeout
from botnet.engine.faults import PreemptionHandler
from botnet.engine.preemption import Preemption
from runs import end_all, free_port

REPO = Path(__file__).parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import restart_cycle  # noqa: E402

# rank FAULT_RANK stops itself (SIGSTOP: a hung rank) after step FAULT_STOP_AT_STEP
RUNNER = r"""
import os, signal, sys
from botnet.engine import metrics
real_log = metrics.MetricsLogger.log
def log(self, rec):
    real_log(self, rec)
    if rec.get("kind") == "step" and os.environ.get("RANK") == os.environ.get("FAULT_RANK") \
            and rec["step"] == int(os.environ.get("FAULT_STOP_AT_STEP", "0")):
        print("STOPPED", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
metrics.MetricsLogger.log = log
from botnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env(**extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def test_a_stale_address_in_the_agent_store_is_not_used(monkeypatch):
    """The previous round's rank 0 published its store; it is dead now. Rank 1 of the new round
    must wait for the new rank 0's store instead of connecting to the dead address."""
    port = free_port()
    agent = dist.TCPStore("127.0.0.1", port, 2, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=10))
    agent.set(STORE_KEY, f"127.0.0.1:{free_port()}:deadbeef")  # a dead address: connection refused
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    stores = {}

    def rank0():
        time.sleep(1.0)  # rank 1 reads the stale value first
        stores[0] = fresh_round_store(0, 2, 20)

    t = threading.Thread(target=rank0)
    t.start()
    stores[1] = fresh_round_store(1, 2, 20)
    t.join()
    stores[1].set("hello", "from rank 1")
    assert stores[0].get("hello") == b"from rank 1"  # one store, the new one
    assert stores[0].get("botnet/nonce") != b"deadbeef"


def test_join_timeout_reads_the_environment(monkeypatch):
    monkeypatch.delenv("BOTNET_DIST_JOIN_TIMEOUT_S", raising=False)
    assert join_timeout(600) == 120 and join_timeout(30) == 30
    monkeypatch.setenv("BOTNET_DIST_JOIN_TIMEOUT_S", "7")
    assert join_timeout(600) == 7
    monkeypatch.setenv("BOTNET_DIST_JOIN_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="BOTNET_DIST_JOIN_TIMEOUT_S must be a number"):
        join_timeout(600)


def _train_args(out, data, *extra):
    return ["train", "--config", str("demo"), "--output", str(out), "--data", str(data),
            "model.name=botnet_tiny", "data.img_size=32", "data.workers=0", "optim.batch_size=16",
            "optim.micro_batch=8", "run.amp=none", "run.log_every=1", "optim.warmup_epochs=1", "optim.epochs=2",
            *extra]


def test_a_rank_that_cannot_join_exits_with_one_line(tiny_data, tmp_path):
    """Under torchrun's agent store, rank 1 alone (its rank 0 never starts): exit 1 after the join bound."""
    port = free_port()
    agent = dist.TCPStore("127.0.0.1", port, 2, is_master=True, wait_for_workers=False)
    env = _env(RANK=1, LOCAL_RANK=1, WORLD_SIZE=2, MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
               TORCHELASTIC_USE_AGENT_STORE="True", BOTNET_DIST_JOIN_TIMEOUT_S=3)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "botnet", *_train_args(tmp_path / "run", tiny_data)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr[-2000:]
    assert time.monotonic() - t0 < 60
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("botnet train: rank 1: could not join the process group of 2 within 3 s"), last
    assert "Traceback" not in r.stderr
    del agent


def test_sigterm_while_joining_ends_the_process_within_seconds(tiny_data, tmp_path):
    """Blocked in the join (rank 0 never comes, a long join bound): SIGTERM ends it in seconds."""
    port = free_port()
    agent = dist.TCPStore("127.0.0.1", port, 2, is_master=True, wait_for_workers=False)
    env = _env(RANK=1, LOCAL_RANK=1, WORLD_SIZE=2, MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
               TORCHELASTIC_USE_AGENT_STORE="True", BOTNET_DIST_JOIN_TIMEOUT_S=300)
    p = subprocess.Popen([sys.executable, "-m", "botnet", *_train_args(tmp_path / "run", tiny_data)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(8)  # imports done, waiting for rank 0's store
        assert p.poll() is None
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert elapsed < 15
    assert "botnet: stopping on SIGTERM: no step boundary came within 5 s" in err
    del agent


def test_sigterm_in_a_hung_collective_saves_the_last_step_and_exits(tiny_data, tmp_path):
    """Rank 1 freezes after step 3; rank 0 blocks in the next collective (timeout 300 s). SIGTERM to
    rank 0: it saves step 3 (the last checkpoint was step 2) and exits within seconds."""
    out, port = tmp_path / "run", free_port()
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    procs = []
    for rank in (0, 1):
        env = _env(RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=2, MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                   FAULT_RANK=1, FAULT_STOP_AT_STEP=3)
        procs.append(subprocess.Popen([sys.executable, str(runner), *_train_args(
            out, tiny_data, "run.ckpt_every_steps=2", "run.dist_timeout_s=300")], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        assert procs[1].stdout.readline().strip() == "STOPPED"
        time.sleep(2)  # rank 0 is in the next step's gradient all-reduce by now
        assert procs[0].poll() is None
        t0 = time.monotonic()
        procs[0].send_signal(signal.SIGTERM)
        _, err = procs[0].communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        end_all(procs)
    assert procs[0].returncode == 128 + signal.SIGTERM, err[-3000:]
    assert elapsed < 20
    assert "botnet: stopping on SIGTERM: no step boundary came within 5 s" in err and "saved step 3" in err
    assert load_checkpoint(out / "last.pt")["step"] == 3


def test_the_watchdog_waits_for_a_step_boundary_and_forces_without_one():
    calls = []
    pre = PreemptionHandler(boundary_grace_s=0.5, shutdown_grace_s=1.0, exit_fn=calls.append)

    class State:
        step = 7

    saved = Preemption(pre, DistInfo(), State, lambda: saved.saved(State.step, "ckpt7"), step=6)
    pre.on_stuck = saved.on_stuck
    with pre:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)  # never a step boundary
    assert calls == [128 + signal.SIGTERM] and saved.step == 7
    calls.clear()
    with PreemptionHandler(boundary_grace_s=0.5, shutdown_grace_s=30, exit_fn=calls.append) as pre:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert pre.should_stop()  # the boundary came: the orderly stop runs, nothing is forced
        time.sleep(1.0)
    time.sleep(0.2)
    assert calls == []


@pytest.mark.slow
def test_kill_and_recover_cycles_under_torchrun(tmp_path):
    """Two kill-and-recover cycles (the 20-cycle run is benchmarks/restart_cycle.py)."""
    res = restart_cycle.run_cycles(2, kill_at=3, workdir=tmp_path, log=lambda *a: None)
    assert res["recovered"] == 2, res["rows"]
