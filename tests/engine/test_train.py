"""`botnet train` / `botnet eval` end to end on a tiny copy of the built-in data."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from botnet.cli import main
from botnet.engine.metrics import read_jsonl
from botnet.recipes import recipe_names
from runs import free_port, step_losses

RECIPES = [name for name in recipe_names() if "/" not in name]  # the classification recipes, by name
# tiny everything: 80 training images, batches of 16 -> 5 steps per epoch
TINY = ["model.name=botnet_tiny", "data.img_size=32", "data.workers=0", "optim.batch_size=16",
        "optim.micro_batch=null", "run.amp=none", "run.log_every=1", "optim.warmup_epochs=1"]


def _train(out, data, *overrides, resume=None, config="demo"):
    args = ["train", "--config", str(config), "--output", str(out), "--data", data, *overrides]
    if resume:
        args += ["--resume", resume]
    return main(args)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_runs_a_few_steps(recipe, tiny_data, tmp_path):
    """Each paper recipe as written (SGD, schedule, RandAugment, smoothing, EMA, bf16...), with the
    model shrunk to width 1/16 and 32x32 images so it runs in seconds."""
    rc = _train(tmp_path / "run", tiny_data, "data.img_size=32", "data.eval_size=32", "data.workers=0",
                "optim.batch_size=16", "optim.micro_batch=8", "run.max_steps=2", "model.kwargs.width=0.0625",
                config=recipe)
    assert rc == 0
    recs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in recs if r["kind"] == "step"][-1] == 2
    ev = [r for r in recs if r["kind"] == "eval"][-1]
    assert ev["count"] == 40 and 0 <= ev["top1"] <= 100
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["step"] == 2 and ckpt["config"]["name"] == recipe


def test_outputs_resume_exactly_and_eval(tiny_data, tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert _train(full, tiny_data, *TINY, "optim.epochs=2") == 0
    # stop mid-way through epoch 2 (step 7 of 10), then resume from last.pt
    assert _train(part, tiny_data, *TINY, "optim.epochs=2", "run.max_steps=7") == 0
    assert torch.load(part / "last.pt", weights_only=False)["step_in_epoch"] == 2
    assert _train(part, tiny_data, *TINY, "optim.epochs=2", resume="auto") == 0
    a, b = step_losses(full), step_losses(part)
    assert [s for s, _ in a] == list(range(1, 11)) == [s for s, _ in b]
    assert [l for _, l in b] == pytest.approx([l for _, l in a], rel=1e-6, abs=1e-7)
    ev_a = [r for r in read_jsonl(full / "metrics.jsonl") if r["kind"] == "eval"][-1]
    ev_b = [r for r in read_jsonl(part / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert ev_b["top1"] == ev_a["top1"] and ev_b["loss"] == pytest.approx(ev_a["loss"], rel=1e-6)
    # the run's files
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl", "curves.png"):
        assert (full / name).is_file(), name
    assert any((full / "tb").iterdir())
    # --resume auto on a finished run adds nothing; on an empty folder it starts a new run
    assert _train(full, tiny_data, *TINY, "optim.epochs=2", resume="auto") == 0
    assert step_losses(full) == a
    assert _train(tmp_path / "fresh", tiny_data, *TINY, "run.max_steps=1", resume="auto") == 0
    assert step_losses(tmp_path / "fresh")[0][0] == 1
    # a second run into the same folder without --resume is refused
    assert _train(full, tiny_data, *TINY) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_eval_cli_matches_training_eval(tiny_data, tmp_path, capsys):
    out = tmp_path / "r"
    assert _train(out, tiny_data, *TINY, "optim.epochs=1", "run.ema=true", "run.ema_decay=0.5") == 0
    capsys.readouterr()
    last = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--data", tiny_data, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["top1"] == pytest.approx(last["top1"]) and res["count"] == 40
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--data", tiny_data, "--json", "--ema"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(last["ema_top1"])
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pt")]) == 2


def test_bad_input_is_refused_before_work(tiny_data, tmp_path, capsys):
    assert _train(tmp_path / "x", tiny_data, "optim.lrr=1") == 2
    assert "unknown key 'optim.lrr'" in capsys.readouterr().err
    assert main(["train", "--config", str("demo"), "--data", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    assert _train(tmp_path / "x", tiny_data, "model.name=botnet5O") == 2
    assert "did you mean" in capsys.readouterr().err
    assert _train(tmp_path / "y", tiny_data, *TINY, "optim.micro_batch=5") == 2
    assert "multiple of world_size" in capsys.readouterr().err
    assert _train(tmp_path / "z", tiny_data, *TINY, "run.amp=fp8") == 2
    assert "run.amp: expected one of bf16, fp16, none" in capsys.readouterr().err


@pytest.mark.parametrize("regularised", [False, True], ids=["demo", "drop_path_dropout"])
def test_two_processes_match_one_with_accumulation(tiny_data, tmp_path, regularised):
    """torchrun, 2 CPU processes (gloo) x micro-batch 8 vs 1 process x 2 accumulation steps of 8:
    the same global batches, the same loss curve; with Table 14's regularisation (stochastic depth
    0.2, dropout 0.5) too, since each micro-batch's dropout / drop-path masks are seeded by its place
    in the global batch. Both sides run single-threaded so that float reductions happen in the same
    order (with different thread counts the curves agree to ~1e-5 at first and then drift)."""
    common = [*TINY, "optim.epochs=2", "optim.micro_batch=8", "optim.lr=0.01"]
    if regularised:
        common += ["model.drop_path_rate=0.2", "model.drop_rate=0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = ["-m", "botnet", "train", "--config", str("demo"), "--data", tiny_data, *common]
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run([sys.executable, *base, "--output", str(one)], env=env, capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr[-3000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port())]
    r2 = subprocess.run([*launcher, *base, "--output", str(two)], env=env, capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "8 per device x 2 devices x 1 accumulation" in r2.stderr
    assert "8 per device x 1 devices x 2 accumulation" in r1.stderr
    a, b = step_losses(one), step_losses(two)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 11))
    assert [l for _, l in b] == pytest.approx([l for _, l in a], rel=1e-5)
    if regularised:  # the masks matter: the same run without them has another curve
        plain = tmp_path / "plain"
        cmd = [sys.executable, *base[:-2], "--output", str(plain)]
        assert subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600).returncode == 0
        assert [l for _, l in step_losses(plain)] != pytest.approx([l for _, l in a], rel=1e-3)


def test_overrides_anywhere_on_the_line(tiny_data, tmp_path):
    """KEY=VALUE after the options (argparse alone says "unrecognized arguments" there)."""
    out = tmp_path / "o"
    rc = main(["train", "--config", str("demo"), "--output", str(out), *TINY[:2], "--data", tiny_data,
               *TINY[2:], "run.max_steps=1", "optim.lr=0.1"])
    assert rc == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["optim"]["lr"] == 0.1 and cfg["run"]["max_steps"] == 1 and cfg["model"]["name"] == "botnet_tiny"
    with pytest.raises(SystemExit):  # anything else left over is still an error
        main(["train", "--config", str("demo"), "--output", str(out), "--nosuchflag"])


def test_corrupt_images_are_skipped_and_counted(tiny_data, tmp_path, caplog):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "train" / "arrow" / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (data / "val" / "ring" / "zz_truncated.png").write_bytes((data / "val" / "ring").glob("*.png").__next__().read_bytes()[:60])
    caplog.set_level("WARNING")
    assert _train(tmp_path / "r", str(data), *TINY, "optim.epochs=1") == 0
    recs = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert [r["skipped_images"] for r in recs if r["kind"] == "epoch"] == [1]
    ev = [r for r in recs if r["kind"] == "eval"][-1]
    assert ev["skipped_images"] == 1 and ev["count"] == 40
    assert "zz_corrupt.png" in caplog.text and "skipped 1 unreadable training images" in caplog.text


def test_sync_bn_on_cpu_is_refused_early(tiny_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "botnet", "train", "--config", str("demo"), "--output", str(tmp_path / "s"),
           "--data", tiny_data, *TINY, "model.sync_bn=true", "optim.micro_batch=8"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "model.sync_bn needs GPUs" in r.stderr


def test_channels_last_and_bf16(tiny_data, tmp_path):
    assert _train(tmp_path / "cl", tiny_data, *TINY, "run.max_steps=2", "model.channels_last=true", "run.amp=bf16") == 0
    ev = [r for r in read_jsonl(tmp_path / "cl" / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert ev["count"] == 40 and ev["loss"] == ev["loss"]  # finite, not NaN


@pytest.mark.slow
def test_torch_compile(tiny_data, tmp_path):
    """model.compile=true: torch.compile (inductor) in training and evaluation; the same losses as eager."""
    eager, comp = tmp_path / "eager", tmp_path / "comp"
    assert _train(eager, tiny_data, *TINY, "run.max_steps=2") == 0
    # the batch axis dynamic: the evaluation's partial batch reuses the eval graph (one compile fewer)
    assert _train(comp, tiny_data, *TINY, "run.max_steps=2", "model.compile=true", "model.compile_shapes=batch") == 0
    assert [l for _, l in step_losses(comp)] == pytest.approx([l for _, l in step_losses(eager)], rel=1e-3)
    ev = [r for r in read_jsonl(comp / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert ev["count"] == 40
