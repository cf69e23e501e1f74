"""Faults injected into `botnet det-train`: divergence, preemption, a damaged checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from botnet.cli import main
from botnet.checkpoint import load_checkpoint
from botnet.engine.metrics import read_jsonl

from test_det_train import DEMO, TINY, _train  # noqa: F401  (det_cache fixture below)

REPO = Path(__file__).parents[2]


@pytest.fixture
def det_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "det_cache"
    monkeypatch.setenv("BOTNET_CACHE", str(cache))
    return cache


def _poison(monkeypatch, bad_calls):
    """Training forward number n (1-based) in ``bad_calls`` returns a NaN mask loss."""
    forward = GeneralizedRCNN.forward
    calls = {"n": 0}

    def poisoned(self, images, targets=None):
        out = forward(self, images, targets)
        if self.training:
            calls["n"] += 1
            if calls["n"] in bad_calls:
                out = dict(out, loss_mask=out["loss_mask"] * float("nan"))
        return out

    monkeypatch.setattr(GeneralizedRCNN, "forward", poisoned)


def test_nan_loss_stops_with_the_terms_and_keeps_the_last_good_checkpoint(det_cache, tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, {3})
    out = tmp_path / "run"
    assert _train(out, "optim.steps=6") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("botnet det-train:")]
    assert len(err) == 1 and "step 3" in err[0] and "loss_mask" in err[0] and "loss_classifier" in err[0]
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 2  # ckpt_every_steps=2: the last good one, nothing written over it
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert any(r["kind"] == "diverged" and r["step"] == 3 for r in read_jsonl(out / "metrics.jsonl"))


def test_nan_steps_are_skipped_within_the_budget(det_cache, tmp_path, monkeypatch):
    _poison(monkeypatch, {2, 4})
    out = tmp_path / "run"
    assert _train(out, "optim.steps=5", "run.max_nonfinite_skips=2", "run.eval_max_images=2") == 0
    recs = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in recs if r["kind"] == "nonfinite"] == [2, 4]
    assert load_checkpoint(out / "last.pt")["nonfinite"]["skipped"] == 2


def test_sigterm_saves_at_the_step_boundary_and_resume_continues(det_cache, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", BOTNET_CACHE=str(det_cache))
    # make sure the data exists before timing anything
    assert _train(tmp_path / "warm", "optim.steps=1", "run.eval_max_images=1") == 0
    cmd = [sys.executable, "-m", "botnet", "det-train", "--config", str(DEMO), "--output", str(out), *TINY,
           "optim.steps=40", "run.ckpt_every_steps=0", "run.eval_max_images=2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if metrics.exists() and sum(1 for r in read_jsonl(metrics) if r["kind"] == "step") >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    assert time.time() - t0 < 30
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res["preempted"] and 2 <= res["step"] < 40
    assert load_checkpoint(out / "last.pt")["step"] == res["step"]
    assert main(["det-train", "--config", str(DEMO), "--output", str(out), *TINY, "optim.steps=" + str(res["step"] + 2),
                 "run.eval_max_images=2", "--resume", "auto"]) == 0
    steps = [r["step"] for r in read_jsonl(metrics) if r["kind"] == "step"]
    assert steps == list(range(1, res["step"] + 3))


def test_damaged_newest_checkpoint_falls_back(det_cache, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "optim.steps=4", "run.max_steps=4", "run.eval_max_images=1") == 0
    newest = sorted(out.glob("ckpt_*.pt"))[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    last = out / "last.pt"
    if last.exists() and not last.samefile(newest):
        last.unlink()
    assert main(["det-eval", "--checkpoint", str(newest)]) == 2
    assert "det-eval" in capsys.readouterr().err
    assert _train(out, "optim.steps=5", "run.eval_max_images=1", resume="auto") == 0
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "step"]
    assert steps[-1] == 5 and steps == sorted(set(steps))
