"""Multi-node under torchrun, on one machine: two agents (``--nnodes 2``, one worker each) meet at a
c10d rendezvous on 127.0.0.1 and train with the same losses, step by step, as one process with
the same global batch (docs/training.md, "Multi-node launches")."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runs import free_port, step_losses

REPO = Path(__file__).parents[2]
TINY = ["model.name=botnet_tiny", "data.img_size=32", "data.workers=0", "optim.batch_size=16", "optim.micro_batch=8",
        "run.amp=none", "run.log_every=1", "optim.warmup_epochs=1", "optim.epochs=2", "optim.lr=0.01"]


def test_two_nodes_match_one_process(tiny_data, tmp_path):
    """2 agents x 1 worker x micro-batch 8 vs 1 process x 2 accumulation steps of 8 (global batch 16),
    single-threaded on both sides so that the float reductions run in the same order."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    train = ["-m", "botnet", "train", "--config", str("demo"), "--data", tiny_data, *TINY]
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run([sys.executable, *train, "--output", str(one)], env=env, capture_output=True, text=True,
                        timeout=600)
    assert r1.returncode == 0, r1.stderr[-3000:]
    endpoint = f"127.0.0.1:{free_port()}"
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                                "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                                "--rdzv-id", "multinode-test", *train, "--output", str(two)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for node in (0, 1)]
    try:
        outs = [a.communicate(timeout=600) for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
                a.communicate()
    for a, (_, err) in zip(agents, outs):
        assert a.returncode == 0, err[-3000:]
    assert "8 per device x 2 devices x 1 accumulation" in outs[0][1] + outs[1][1]
    assert "8 per device x 1 devices x 2 accumulation" in r1.stderr
    a, b = step_losses(one), step_losses(two)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 11))
    assert [l for _, l in b] == pytest.approx([l for _, l in a], rel=1e-5)
