"""Faults injected into real training runs (`botnet train`, botnet_tiny at 32 px on a tiny copy of
the built-in data): SIGKILL, preemption signals, NaN losses and gradients, damaged checkpoints,
a dead or hung rank under DDP, and bad configs. docs/reliability.md lists them.

Runs that must be killed run in a subprocess started through ``RUNNER``, a few lines that patch
the process before ``botnet.cli.main`` (faults keyed to the optimizer step, read from FAULT_*
environment variables), so the fault hits a chosen step of an unmodified engine.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import botnet.engine.classify as classify
from botnet.cli import main
from botnet.checkpoint import load_checkpoint
from botnet.engine.checkpoint import CheckpointManager
from botnet.engine.faults import nonfinite_tensors
from botnet.engine.metrics import read_jsonl
from botnet.engine.runlock import LOCK_NAME
from runs import cli_errors, end_all, free_port, step_losses

REPO = Path(__file__).parents[2]
DEMO = "demo"
TINY = ["model.name=botnet_tiny", "data.img_size=32", "data.workers=0", "optim.batch_size=16",
        "optim.micro_batch=null", "run.amp=none", "run.log_every=1", "optim.warmup_epochs=1"]
# 80 training images / 16 = 5 steps per epoch, 15 steps; a step checkpoint every 3 steps, 2 kept
COMMON = [*TINY, "optim.epochs=3", "run.ckpt_every_steps=3", "run.keep_checkpoints=2", "run.deterministic=true"]

RUNNER = r"""
import io, os, signal, sys, time
import torch
from botnet.engine import metrics

rank_ok = os.environ.get("FAULT_RANK") in (None, os.environ.get("RANK", "0"))
env = {k: int(os.environ.get(k, "0")) for k in ("FAULT_KILL_AT_STEP", "FAULT_KILL_IN_SAVE_AT_STEP",
                                                "FAULT_STOP_AT_STEP", "FAULT_TERM_AT_STEP")}
sleep = float(os.environ.get("FAULT_STEP_SLEEP", "0"))
wait_for = os.environ.get("FAULT_WAIT_AFTER_STEP_1_FOR")  # hold the run after step 1 until this file exists
real_log, real_save = metrics.MetricsLogger.log, torch.save

def log(self, rec):  # called on every rank after each optimizer step (run.log_every=1)
    real_log(self, rec)
    if rec.get("kind") != "step" or not rank_ok:
        return
    time.sleep(sleep)
    step = rec["step"]
    while step == 1 and wait_for and not os.path.exists(wait_for):
        time.sleep(0.05)
    if step == env["FAULT_KILL_AT_STEP"]:
        os.kill(os.getpid(), signal.SIGKILL)
    if step == env["FAULT_STOP_AT_STEP"]:
        os.kill(os.getpid(), signal.SIGSTOP)  # a hung rank
    if step == env["FAULT_TERM_AT_STEP"]:
        os.kill(os.getpid(), signal.SIGTERM)

def save(obj, f, *args, **kwargs):  # die with half of the checkpoint written
    if isinstance(obj, dict) and obj.get("step") == env["FAULT_KILL_IN_SAVE_AT_STEP"] and rank_ok:
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

metrics.MetricsLogger.log, torch.save = log, save

import gc
import botnet.engine.launch as loop
real_cleanup = loop.cleanup

def cleanup(info):  # what still holds the process group when it is torn down
    if info.enabled:
        alive = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
        print(f"rank {info.rank}: DDP wrappers alive at teardown: {alive}", file=sys.stderr)
    real_cleanup(info)

loop.cleanup = cleanup

nan_steps = {int(x) for x in os.environ.get("FAULT_NAN_AT_STEPS", "").split(",") if x}
if nan_steps and rank_ok:  # a poisoned batch at these steps (one forward per step: no accumulation)
    import botnet.engine.classify as classify
    real_create, calls = classify.create_model, [0]

    def create(*args, **kwargs):
        model = real_create(*args, **kwargs)

        def pre(module, inputs):
            if module.training:
                calls[0] += 1
                if calls[0] in nan_steps:
                    return (inputs[0] * float("nan"),)

        model.register_forward_pre_hook(pre)
        return model

    classify.create_model = create
from botnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _args(out, data, *overrides):
    return ["train", "--config", str(DEMO), "--output", str(out), "--data", str(data), *overrides]


def _env(**faults):
    return {**os.environ, "OMP_NUM_THREADS": "1", **{k: str(v) for k, v in faults.items()}}


def _runner(tmp_path):
    path = tmp_path / "runner.py"
    path.write_text(RUNNER)
    return str(path)


def _final_eval(out):
    return [r for r in read_jsonl(Path(out) / "metrics.jsonl") if r["kind"] == "eval"][-1]


def _assert_same_run(out, reference):
    steps, ev = step_losses(out), _final_eval(out)
    ref_steps, ref_ev = reference
    assert [s for s, _ in steps] == [s for s, _ in ref_steps] == list(range(1, 16))
    assert [l for _, l in steps] == pytest.approx([l for _, l in ref_steps], rel=1e-6, abs=1e-7)
    assert ev["step"] == ref_ev["step"] == 15 and ev["count"] == ref_ev["count"] == 40
    assert ev["top1"] == ref_ev["top1"] and ev["loss"] == pytest.approx(ref_ev["loss"], rel=1e-6)


@pytest.fixture
def one_thread():
    """In-process runs single-threaded, as the subprocesses (OMP_NUM_THREADS=1): same float order."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce: (step losses, final eval)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("reference") / "run"
        assert main(_args(out, tiny_data, *COMMON)) == 0
    finally:
        torch.set_num_threads(n)
    assert [s for s, _ in CheckpointManager(out).checkpoints()] == [15, 12]
    return step_losses(out), _final_eval(out)


# ---------------------------------------------------------------------------------------- kill


@pytest.mark.parametrize("fault", ["between_checkpoints", "while_writing_a_checkpoint"])
def test_sigkill_at_a_random_step_then_resume_matches_uninterrupted_run(fault, reference, tiny_data, tmp_path, one_thread,
                                                                        caplog):
    rng = random.Random(fault)  # a "random" step, the same on every run of the test
    out = tmp_path / "run"
    if fault == "between_checkpoints":
        step = rng.choice([s for s in range(4, 15) if s % 3 and s % 5])
        env = _env(FAULT_KILL_AT_STEP=step)  # killed after the step, before its checkpoint
    else:
        step = rng.choice([6, 9, 12])
        env = _env(FAULT_KILL_IN_SAVE_AT_STEP=step)  # the one being written is lost
    newest = max(s for s in range(1, step) if s % 3 == 0 or s % 5 == 0)  # every 3 steps and at epoch ends
    r = subprocess.run([sys.executable, _runner(tmp_path), *_args(out, tiny_data, *COMMON)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    manager = CheckpointManager(out, keep=2)
    assert manager.latest_valid()[1]["step"] == newest
    if fault == "while_writing_a_checkpoint":
        assert list(out.glob(f".ckpt_{step:08d}.pt.*.tmp"))  # the half-written file, never renamed into place
    holder = json.loads((out / LOCK_NAME).read_text())  # the killed run's lock file: its flock died with it
    assert isinstance(holder["pid"], int) and holder["pid"] != os.getpid()
    caplog.set_level("WARNING")
    assert main(_args(out, tiny_data, *COMMON) + ["--resume", "auto"]) == 0
    assert f"took over run folder {out}: its last holder (pid {holder['pid']} on host" in caplog.text
    _assert_same_run(out, reference)
    assert not list(out.glob(".*.tmp")) and not (out / LOCK_NAME).exists()


def test_two_runs_into_one_folder_one_runs_the_other_exits_2_naming_it(tiny_data, tmp_path):
    """Two `botnet train` started at once into one folder (seeds 1 and 2): whichever takes the
    folder's lock first runs (held after step 1 until the other has exited); the other exits 2
    with one line naming the holder; the folder holds only the winner's files."""
    out, go = tmp_path / "run", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, _runner(tmp_path), *_args(out, tiny_data, *TINY, "optim.epochs=1",
                                                                        f"run.seed={seed}")],
                              env=_env(FAULT_WAIT_AFTER_STEP_1_FOR=go), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for seed in (1, 2)]
    try:
        deadline = time.monotonic() + 240
        while all(p.poll() is None for p in procs):
            assert time.monotonic() < deadline, "neither run ended"
            time.sleep(0.05)
        go.touch()
        errs = [p.communicate(timeout=240)[1] for p in procs]
    finally:
        end_all(procs)
    assert sorted(p.returncode for p in procs) == [0, 2], errs
    win = [p.returncode for p in procs].index(0)
    err = cli_errors(errs[1 - win]).strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"botnet train: run folder {out} is in use by another run (pid {procs[win].pid} on host ")
    assert err.endswith("wait for it to finish or choose another --output")
    seed = win + 1
    assert yaml.safe_load((out / "config.yaml").read_text())["run"]["seed"] == seed
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(out / name)["config"]["run"]["seed"] == seed
    recs = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in recs if r["kind"] == "step"] == [1, 2, 3, 4, 5]
    assert [r["kind"] for r in recs].count("eval") == 1 and not (out / LOCK_NAME).exists()
    # epochs are counted from 0 in every record: the eval after the first epoch says epoch 0, as its steps do
    assert {r["epoch"] for r in recs if r["kind"] in ("step", "epoch", "eval")} == {0}


# ---------------------------------------------------------------------------------- preemption


@pytest.mark.parametrize("sig,workers,to_group", [("SIGTERM", 0, False), ("SIGUSR1", 1, True)],
                         ids=["SIGTERM-to-process", "SIGUSR1-to-process-group-with-loader-workers"])
def test_preemption_signal_checkpoints_at_step_boundary_and_exits_0(sig, workers, to_group, reference, tiny_data,
                                                                     tmp_path, one_thread):
    out = tmp_path / "run"
    args = _args(out, tiny_data, *COMMON, f"data.workers={workers}")
    p = subprocess.Popen([sys.executable, _runner(tmp_path), *args], env=_env(FAULT_STEP_SLEEP=0.1),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (out / "metrics.jsonl").exists() or not step_losses(out) or step_losses(out)[-1][0] < 2:
            assert p.poll() is None and time.monotonic() < deadline, "the run never reached step 2"
            time.sleep(0.02)
        t0 = time.monotonic()
        (os.killpg if to_group else os.kill)(p.pid, getattr(signal, sig))
        stdout, stderr = p.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 0, stderr[-3000:]
    assert elapsed < 30  # the rest of one step and a checkpoint write
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res["preempted"] is True and res["signal"] == sig and 2 <= res["step"] < 15
    assert f"stopped by {sig} after step {res['step']}" in stderr and "--resume auto" in stderr
    assert step_losses(out)[-1][0] == res["step"]  # stopped at the step boundary after the signal
    ck = load_checkpoint(out / "last.pt")
    assert ck["step"] == res["step"] and Path(res["checkpoint"]) == out / f"ckpt_{res['step']:08d}.pt"
    assert read_jsonl(out / "metrics.jsonl")[-1]["kind"] == "preempted"
    assert main(_args(out, tiny_data, *COMMON) + ["--resume", "auto"]) == 0
    _assert_same_run(out, reference)


# ---------------------------------------------------------------------------------- divergence


def _poison(monkeypatch, steps, where="input"):
    """Make training forward pass n (= optimizer step n here) produce a NaN: in the input batch
    (a poisoned batch: NaN loss and NaN BatchNorm statistics) or in fc.weight's gradient."""
    real = classify.create_model
    calls = {"n": 0}

    def create(*args, **kwargs):
        model = real(*args, **kwargs)

        def pre(module, inputs):
            if module.training:
                calls["n"] += 1
                if calls["n"] in steps and where == "input":
                    return (inputs[0] * float("nan"),)

        model.register_forward_pre_hook(pre)
        if where == "grad":
            model.fc.weight.register_hook(lambda g: g * float("nan") if calls["n"] in steps else g)
        return model

    monkeypatch.setattr(classify, "create_model", create)


def test_nan_loss_stops_naming_step_and_terms_and_keeps_last_good_checkpoint(reference, tiny_data, tmp_path,
                                                                              monkeypatch, capsys, one_thread):
    out = tmp_path / "run"
    _poison(monkeypatch, {8})
    assert main(_args(out, tiny_data, *COMMON)) == 1
    err = cli_errors(capsys.readouterr().err).strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("botnet train: non-finite loss at step 8 (epoch 1): loss terms loss=nan; no skipped steps "
                          "allowed (run.max_nonfinite_skips=0); stopped without saving: the last good checkpoint is ")
    assert err.endswith("ckpt_00000006.pt")
    assert [s for s, _ in CheckpointManager(out).checkpoints()] == [6, 5]
    ck = load_checkpoint(out / "last.pt")
    assert ck["step"] == 6 and not nonfinite_tensors(ck["model"])
    assert read_jsonl(out / "metrics.jsonl")[-1] == {"kind": "diverged", "step": 8, "epoch": 1, "terms": {"loss": "nan"}}
    monkeypatch.undo()  # the data was fine after all: continue from the last good checkpoint
    assert main(_args(out, tiny_data, *COMMON) + ["--resume", "auto"]) == 0
    _assert_same_run(out, reference)


def test_nan_gradient_stops_naming_the_parameter(tiny_data, tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, {4}, where="grad")
    assert main(_args(tmp_path / "run", tiny_data, *COMMON)) == 1
    err = capsys.readouterr().err
    assert "non-finite gradient at step 4 (epoch 0): loss terms loss=" in err
    assert "non-finite gradients in 1 parameter(s): fc.weight" in err and "ckpt_00000003.pt" in err


def test_nonfinite_steps_are_skipped_within_budget_then_stop(tiny_data, tmp_path, monkeypatch, capsys, caplog):
    out = tmp_path / "skips"
    _poison(monkeypatch, {3, 7})
    caplog.set_level("WARNING")
    assert main(_args(out, tiny_data, *COMMON, "run.max_nonfinite_skips=2")) == 0
    recs = read_jsonl(out / "metrics.jsonl")
    assert [(r["step"], r["skips"], r["terms"]) for r in recs if r["kind"] == "nonfinite"] == \
        [(3, 1, {"loss": "nan"}), (7, 2, {"loss": "nan"})]
    assert [r["step"] for r in recs if r["kind"] == "step"] == [s for s in range(1, 16) if s not in (3, 7)]
    assert "skipping optimizer step: non-finite loss at step 3 (epoch 0)" in caplog.text
    ck = load_checkpoint(out / "last.pt")
    assert ck["step"] == 15 and ck["nonfinite"] == {"skipped": 2}
    assert not nonfinite_tensors(ck["model"]) and not nonfinite_tensors(ck["optimizer"]["state"])
    assert _final_eval(out)["loss"] == _final_eval(out)["loss"]  # BN statistics rolled back: no NaN
    # a third non-finite step exceeds the budget
    monkeypatch.undo()
    _poison(monkeypatch, {3, 7, 8})
    assert main(_args(tmp_path / "over", tiny_data, *COMMON, "run.max_nonfinite_skips=2")) == 1
    err = capsys.readouterr().err
    assert "non-finite loss at step 8" in err and "2 skipped step(s) allowed (run.max_nonfinite_skips) were already used" in err


# --------------------------------------------------------------------------- damaged checkpoints


def test_damaged_checkpoint_is_refused_and_auto_resume_falls_back(reference, tiny_data, tmp_path, capsys, caplog,
                                                                  one_thread):
    out = tmp_path / "run"
    assert main(_args(out, tiny_data, *COMMON, "run.max_steps=9")) == 0
    assert [s for s, _ in CheckpointManager(out).checkpoints()] == [9, 6]
    newest = out / "ckpt_00000009.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit in the weights: torch.load alone would not notice
    newest.write_bytes(bytes(data))  # in place: last.pt, a hard link to it, is damaged too
    capsys.readouterr()
    assert main(_args(out, tiny_data, *COMMON) + ["--resume", str(newest)]) == 2
    err = cli_errors(capsys.readouterr().err)
    assert err.startswith("botnet train: checkpoint") and "ckpt_00000009.pt" in err and "is corrupt" in err
    assert main(["eval", "--checkpoint", str(newest)]) == 2
    assert "is corrupt" in capsys.readouterr().err
    caplog.set_level("WARNING")
    assert main(_args(out, tiny_data, *COMMON) + ["--resume", "auto"]) == 0
    assert "skipping checkpoint" in caplog.text and "resuming from the older checkpoint" in caplog.text
    _assert_same_run(out, reference)
    # the damaged file was set aside, out of the rotation; the new run's checkpoints replaced it
    assert (out / "ckpt_00000009.pt.retired").is_file() and [s for s, _ in CheckpointManager(out).checkpoints()] == [15, 12]


# --------------------------------------------------------------------------------- distributed


def _torchrun(port):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
            "--max-restarts", "0"]


DDP = [*TINY, "optim.epochs=3", "optim.micro_batch=8", "run.dist_timeout_s=20"]


def test_preemption_under_ddp_stops_every_rank_at_the_same_step(tiny_data, tmp_path):
    """Only rank 1 gets SIGTERM; the flag is all-reduced at each step boundary, so both ranks stop
    after the same step, rank 0 saves, torchrun exits 0."""
    out = tmp_path / "ddp"
    cmd = [*_torchrun(free_port()), _runner(tmp_path), *_args(out, tiny_data, *DDP)]
    r = subprocess.run(cmd, env=_env(FAULT_RANK=1, FAULT_TERM_AT_STEP=4), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    results = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 2 and all(x["preempted"] and x["step"] == 4 for x in results)
    assert sorted(x["signal"] for x in results) == ["SIGTERM", "a signal to another rank"]
    assert load_checkpoint(out / "last.pt")["step"] == 4
    # nothing holds the group past its teardown, so no rank destroys it at interpreter exit (a SIGABRT
    # there failed CI once: "terminate called without an active exception" on rank 1)
    assert sorted(re.findall(r"rank (\d): DDP wrappers alive at teardown: (\d+)", r.stderr)) == [("0", "0"), ("1", "0")]


def test_nonfinite_verdict_under_ddp_is_agreed_by_every_rank(tiny_data, tmp_path):
    """Only rank 1 gets poisoned batches (steps 3 and 6): a NaN loss there, NaN gradients on both
    ranks after DDP's all-reduce. Both ranks skip step 3 (budget 1) and both stop at step 6: no
    rank is left waiting in a collective."""
    out = tmp_path / "ddp"
    cmd = [*_torchrun(free_port()), _runner(tmp_path), *_args(out, tiny_data, *DDP, "run.max_nonfinite_skips=1")]
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=_env(FAULT_RANK=1, FAULT_NAN_AT_STEPS="3,6"), capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and time.monotonic() - t0 < 120
    assert "botnet train: non-finite loss at step 6 (epoch 1): loss terms loss=nan; seen on rank(s) 0, 1 (this is rank 1)" in r.stderr
    assert "botnet train: non-finite gradient at step 6 (epoch 1): loss terms loss=" in r.stderr  # rank 0
    assert r.stderr.count("1 skipped step(s) allowed (run.max_nonfinite_skips) were already used; stopped without "
                          f"saving: the last good checkpoint is {out / 'ckpt_00000005.pt'}") == 2
    recs = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in recs if r["kind"] == "nonfinite"] == [3] and recs[-1]["kind"] == "diverged"
    assert load_checkpoint(out / "last.pt")["step"] == 5 and not nonfinite_tensors(load_checkpoint(out / "last.pt")["model"])


def test_a_killed_rank_makes_torchrun_fail_fast(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [*_torchrun(free_port()), _runner(tmp_path), *_args(out, tiny_data, *DDP)]
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=_env(FAULT_RANK=1, FAULT_KILL_AT_STEP=3), capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert time.monotonic() - t0 < 120  # start-up (~10 s here) + 3 steps + detection, not a hang
    assert max(s for s, _ in step_losses(out)) < 15


def test_a_hung_rank_makes_the_others_exit_after_the_timeout(tiny_data, tmp_path):
    """No torchrun watching: rank 1 freezes (SIGSTOP) after step 3; rank 0 blocks in the next
    collective, gives up after run.dist_timeout_s and exits 1 with a one-line error."""
    out = tmp_path / "ddp"
    port = free_port()
    timeout_s = 5
    procs = []
    for rank in (0, 1):
        env = _env(FAULT_RANK=1, FAULT_STOP_AT_STEP=3, RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=2,
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, _runner(tmp_path),
                                       *_args(out, tiny_data, *DDP[:-1], f"run.dist_timeout_s={timeout_s}")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 240
        while not (procs[1].poll() is None and _stopped(procs[1].pid)):
            assert procs[1].poll() is None and procs[0].poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=timeout_s + 60)
        elapsed = time.monotonic() - t0
    finally:
        end_all(procs)
    assert procs[0].returncode == 1, err[-3000:]
    assert elapsed < timeout_s + 30
    line = err.strip().splitlines()[-1]
    assert line.startswith("botnet train: rank 0: a collective with the other ranks failed: another rank died, or did "
                           f"not answer within run.dist_timeout_s={timeout_s} s")
    assert "Traceback" not in err


def _stopped(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "T"
    except OSError:
        return False


# --------------------------------------------------------------------------------- bad input


def _write_tree(root, classes, per_class=2):
    from PIL import Image

    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    """A finished 1-step run: a valid botnet_tiny checkpoint to resume or evaluate."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(_args(out, tiny_data, *TINY, "run.max_steps=1")) == 0
    return out


def _bad_cases(tmp, tiny_data, tiny_run):
    other_classes = _write_tree(tmp / "other", ["a", "b"], per_class=8)
    empty_class = _write_tree(tmp / "emptycls", ["a", "b"])
    shutil.rmtree(empty_class / "train" / "b")
    (empty_class / "train" / "b").mkdir()
    (tmp / "junk.pt").write_bytes(os.urandom(3000))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp / "state_dict.pt")
    (tmp / "nodata").mkdir()
    d = str(tiny_data)
    ckpt = str(tiny_run / "last.pt")
    return {
        "unknown key": (["--data", d, "optim.lrr=1"], "unknown key 'optim.lrr'; expected one of: optim.name"),
        "wrong type": (["--data", d, "optim.epochs=1.5"], "optim.epochs: expected int, got 1.5"),
        "not a mapping": (["--data", d, "data=3"], "data: expected a mapping, got 3"),
        "negative lr": (["--data", d, "optim.lr=-0.1"], "optim.lr: expected a number > 0, got -0.1"),
        "zero log_every": (["--data", d, "run.log_every=0"], "run.log_every: expected an int >= 1, got 0"),
        "zero keep": (["--data", d, "run.keep_checkpoints=0"], "run.keep_checkpoints: expected an int >= 1, got 0"),
        "negative skips": (["--data", d, "run.max_nonfinite_skips=-1"], "run.max_nonfinite_skips: expected an int >= 0"),
        "zero timeout": (["--data", d, "run.dist_timeout_s=0"], "run.dist_timeout_s: expected a number of seconds > 0"),
        "unknown optimizer": (["--data", d, "optim.name=lamb"], "optim.name: expected one of sgd, adamw, got 'lamb'"),
        "bad device": (["--data", d, "run.device=gpu0"], "run.device: expected auto, cpu, cuda or cuda:N, got 'gpu0'"),
        "size too small": (["--data", d, *TINY, "data.img_size=4"], "data.img_size: expected an int >= 8 (pixels), got 4"),
        "size not a multiple of 32": (["--data", d, *TINY, "data.img_size=48"],
                                      "data.img_size=48 with model.name=botnet_tiny: input size 48x48 does not work "
                                      "for this model: H and W must be multiples of 32"),
        "eval size not a multiple of 32": (["--data", d, *TINY, "data.eval_size=40"],
                                           "data.eval_size=40 with model.name=botnet_tiny: input size 40x40"),
        "unknown model option": (["--data", d, *TINY, "model.kwargs.wings=2"],
                                 "model.kwargs {'wings': 2}: botnet_tiny does not take these options"),
        "unknown model": (["--data", d, "model.name=botnet5O"], "did you mean"),
        "missing data folder": (["--data", str(tmp / "nope")], "data folder"),
        "data folder without train/": (["--data", str(tmp / "nodata"), *TINY], "dataset folder"),
        "empty class folder": (["--data", str(empty_class), *TINY], "Found no valid file for the classes b"),
        "fewer images than a batch": (["--data", d, *TINY, "optim.batch_size=128", "optim.micro_batch=64"],
                                      "dataset has 80 samples, fewer than one global batch of 128"),
        "batch not divisible": (["--data", d, *TINY, "optim.micro_batch=5"], "must be a multiple of world_size"),
        "missing config": ([], "not found: expected a YAML file or a shipped recipe name"),
        "missing resume file": (["--data", d, *TINY, "--resume", str(tmp / "none.pt")], "no such checkpoint file"),
        "resume junk": (["--data", d, *TINY, "--resume", str(tmp / "junk.pt")], "junk.pt' cannot be read"),
        "resume a bare state dict": (["--data", d, *TINY, "--resume", str(tmp / "state_dict.pt")],
                                     "is not a classification checkpoint of botnet train"),
        "resume another model": (["--data", d, *TINY, "model.name=resnet50", "--resume", ckpt],
                                 "holds a 'botnet_tiny' model; the config asks for 'resnet50'"),
        "resume on other classes": (["--data", str(other_classes), *TINY, "optim.batch_size=8", "--resume", ckpt],
                                    "was trained on 10 classes"),
        "second run into a used folder": (["--data", d, *TINY], "already holds a run"),
        "resume a run folder": (["--data", d, *TINY, "--resume", str(tiny_run)],
                                f"--resume {tiny_run} is a folder; give a checkpoint file in it ({tiny_run / 'last.pt'})"),
    }


CASES = ["unknown key", "wrong type", "not a mapping", "negative lr", "zero log_every", "zero keep", "negative skips",
         "zero timeout", "unknown optimizer", "bad device", "size too small", "size not a multiple of 32",
         "eval size not a multiple of 32", "unknown model option", "unknown model", "missing data folder",
         "data folder without train/", "empty class folder", "fewer images than a batch", "batch not divisible",
         "missing config", "missing resume file", "resume junk", "resume a bare state dict", "resume another model",
         "resume on other classes", "second run into a used folder", "resume a run folder"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_before_any_work(case, tiny_data, tiny_run, tmp_path, capsys):
    extra, expected = _bad_cases(tmp_path, tiny_data, tiny_run)[case]
    out = tiny_run if case == "second run into a used folder" else tmp_path / "out"
    config = str(tmp_path / "missing.yaml") if case == "missing config" else str(DEMO)
    before = sorted(p.name for p in out.iterdir()) if out.exists() else []
    rc = main(["train", "--config", config, "--output", str(out), *extra])
    err = cli_errors(capsys.readouterr().err)
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("botnet train: ") and "Traceback" not in err
    assert expected in err
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else []) == before  # nothing written


def test_eval_of_bad_checkpoints(tiny_run, tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(os.urandom(3000))
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    for path, expected in [(tmp_path / "junk.pt", "cannot be read"), (tmp_path / "tensor.pt", "is not a classification"),
                           (tmp_path / "missing.pt", "not found")]:
        assert main(["eval", "--checkpoint", str(path)]) == 2
        err = cli_errors(capsys.readouterr().err)
        assert len(err.strip().splitlines()) == 1 and expected in err
