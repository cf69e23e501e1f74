"""`botnet det-train` / `det-eval` / `predict` end to end on a tiny copy of the built-in scenes."""

import json
from pathlib import Path

import pytest
import torch

from botnet.cli import main
from botnet.engine.metrics import read_jsonl

REPO = Path(__file__).parents[2]
DEMO = "detection/demo"
# 16 training scenes of 64x64, batches of 4 -> 4 steps per epoch
TINY = ["data.builtin_train=16", "data.builtin_val=6", "data.builtin_img_size=64", "data.img_size=64", "data.workers=0",
        "optim.batch_size=4", "optim.warmup_steps=2", "optim.milestones=[5]", "run.log_every=1", "run.ckpt_every_steps=2",
        "model.kwargs.fpn_channels=32", "model.kwargs.mask_channels=32", "model.kwargs.box_fc=64",
        "model.kwargs.box_batch_size_per_image=32"]


@pytest.fixture
def det_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "det_cache"  # shared by the tests of this session
    monkeypatch.setenv("BOTNET_CACHE", str(cache))
    return cache


def _train(out, *overrides, resume=None, config=DEMO, command="det-train"):
    args = [command, "--config", str(config), "--output", str(out), *TINY, *overrides]
    if resume:
        args += ["--resume", resume]
    return main(args)


def _steps(out):
    return [(r["step"], r["loss"], r["loss_mask"]) for r in read_jsonl(Path(out) / "metrics.jsonl") if r["kind"] == "step"]


def test_train_eval_predict(det_cache, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "optim.steps=3", command="train") == 0  # the recipe says task: detection
    recs = read_jsonl(out / "metrics.jsonl")
    steps = [r for r in recs if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(k in steps[0] for k in ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg", "lr"))
    ev = [r for r in recs if r["kind"] == "eval"][-1]
    assert ev["count"] == 6 and 0 <= ev["segm_AP50"] <= 100 and "bbox_APs" in ev
    assert (out / "curves.png").stat().st_size > 0 and list((out / "eval").glob("results_step3.json"))
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["kind"] == "detection" and ckpt["step"] == 3 and len(ckpt["classes"]) == 5
    capsys.readouterr()

    assert main(["det-eval", "--checkpoint", str(out / "last.pt"), "--output", str(tmp_path / "ev"), "--workers", "0"]) == 0
    text = capsys.readouterr().out
    assert "AP50" in text and "segm" in text and "bbox" in text
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["segm"]["AP"] == pytest.approx(ev["segm_AP"], abs=1e-6) and m["count"] == 6
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert all({"image_id", "category_id", "bbox", "score", "segmentation"} <= set(r) for r in results)

    images = sorted((det_cache).rglob("val/*.png"))[:2]
    assert main(["predict", "--checkpoint", str(out / "last.pt"), *map(str, images), "--output", str(tmp_path / "pred"),
                 "--score-thresh", "0.0"]) == 0
    dets = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert len(dets) == 2 and all(Path(d["drawn"]).is_file() for d in dets)
    assert all(set(d) >= {"image", "height", "width", "detections"} for d in dets)


def test_resume_is_exact(det_cache, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert _train(full, "optim.steps=6", "run.eval_max_images=2") == 0
    # stop in the middle of epoch 2 (step 5 of 6, 4 steps per epoch), then resume from last.pt
    assert _train(part, "optim.steps=6", "run.max_steps=5", "run.eval_max_images=2") == 0
    assert torch.load(part / "last.pt", weights_only=False)["step_in_epoch"] == 1
    assert _train(part, "optim.steps=6", "run.eval_max_images=2", resume="auto") == 0
    a, b = _steps(full), _steps(part)
    assert [s for s, *_ in a] == list(range(1, 7)) == [s for s, *_ in b]
    assert [v for x in b for v in x[1:]] == pytest.approx([v for x in a for v in x[1:]], rel=1e-5, abs=1e-6)


def test_setup_errors_are_one_line(det_cache, tmp_path, capsys):
    assert main(["det-train", "--config", str(DEMO), "--data", str(tmp_path / "nowhere")]) == 2
    assert "lacks train/" in capsys.readouterr().err
    assert main(["det-train", "--config", str(DEMO), "model.name=maskrcnn_botnet51_fpn"]) == 2
    assert "unknown detector" in capsys.readouterr().err
    assert main(["det-train", "--config", str(DEMO), "--output", str(tmp_path / "o"), *TINY, "data.img_size=100"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert main(["det-train", "--config", str(DEMO), "optim.bogus=1"]) == 2
    assert "unknown key 'optim.bogus'" in capsys.readouterr().err
    # the same range checks as classification, through either command, before any work
    for bad, expected in (("run.log_every=0", "run.log_every: expected an int >= 1, got 0"),
                          ("optim.lr=-1", "optim.lr: expected a number > 0"),
                          ("run.amp=fp8", "run.amp: expected one of bf16, fp16, none"),
                          ("optim.milestones=[9,5]", "optim.milestones: expected increasing ints")):
        for cmd in ("det-train", "train"):
            out = tmp_path / "r"
            assert main([cmd, "--config", str(DEMO), "--output", str(out), *TINY, bad]) == 2, bad
            err = capsys.readouterr().err
            assert err.startswith(f"botnet {cmd}: ") and expected in err and "Traceback" not in err, err
            assert not out.exists()


@pytest.mark.parametrize("recipe", sorted(REPO.joinpath("src/botnet/recipes/detection").glob("coco_*.yaml")), ids=lambda p: p.stem)
def test_paper_recipes_load(recipe):
    from botnet.config import load_config
    from botnet.config import DetTrainConfig

    cfg = load_config(recipe, DetTrainConfig)
    assert cfg.model.name == "maskrcnn_botnet50_fpn" and cfg.optim.warmup_steps == 500 and cfg.optim.weight_decay == 4e-5
    assert cfg.optim.warmup_start_lr == 0.0067 and cfg.model.bn_momentum == 0.003 and cfg.model.sync_bn
    sched = {"1x": 22_500, "2x": 45_000, "3x": 67_500, "6x": 135_000}[recipe.stem.split("_")[1]]
    if cfg.data.img_size == 1024:
        assert (cfg.optim.batch_size, cfg.optim.lr, cfg.optim.steps) == (64, 0.1, sched)
        assert (cfg.data.scale_min, cfg.data.scale_max) == (0.8, 1.25)
    else:
        assert (cfg.optim.batch_size, cfg.optim.lr, cfg.optim.steps) == (128, 0.15, sched // 2)
        assert (cfg.data.scale_min, cfg.data.scale_max) == (0.1, 2.0)
    assert cfg.optim.milestones[-1] < cfg.optim.steps


def test_two_processes_match_one_with_accumulation(det_cache, tmp_path):
    """torchrun, 2 CPU processes (gloo) x micro-batch 2 vs 1 process x 2 accumulation steps of 2: the
    same global batches and the same loss terms at every step (both single-threaded: same float order)."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BOTNET_CACHE": str(det_cache)}
    base = ["-m", "botnet", "det-train", "--config", str(DEMO), *TINY, "optim.steps=3", "optim.micro_batch=2",
            "run.eval_max_images=2"]
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run([sys.executable, *base, "--output", str(one)], env=env, capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr[-3000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port]
    r2 = subprocess.run([*launcher, *base, "--output", str(two)], env=env, capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "2 per device x 2 devices x 1 accumulation" in r2.stderr
    assert "2 per device x 1 devices x 2 accumulation" in r1.stderr
    a, b = _steps(one), _steps(two)
    assert [s for s, *_ in a] == [s for s, *_ in b] == [1, 2, 3]
    assert [v for x in b for v in x[1:]] == pytest.approx([v for x in a for v in x[1:]], rel=1e-4, abs=1e-5)
    ev1 = [r for r in read_jsonl(one / "metrics.jsonl") if r["kind"] == "eval"][-1]
    ev2 = [r for r in read_jsonl(two / "metrics.jsonl") if r["kind"] == "eval"][-1]
    assert ev1["count"] == ev2["count"] == 2


def test_coco_shards_train_as_the_folder_and_resume_exactly(det_cache, tmp_path, capsys):
    """`botnet shards --coco` of the tiny scenes, then `--data SHARDS`: the same samples (targets,
    masks) as the folder, and a run on the shards, interrupted mid-epoch and resumed, has every
    step loss of the uninterrupted run on the folder."""
    from botnet.data import ShardCocoDetection, build_coco_dataset, builtin_coco_root

    root = builtin_coco_root(num_train=16, num_val=6, img_size=64)
    shards = tmp_path / "shards"
    assert main(["shards", str(root), "--coco", "--output", str(shards), "--max-count", "5"]) == 0
    capsys.readouterr()
    a, b = build_coco_dataset(shards, "train", None, train=True), build_coco_dataset(root, "train", None, train=True)
    assert isinstance(a, ShardCocoDetection) and a.ids == b.ids and a.stats == b.stats and len(a.reader.urls) == 4
    for i in (0, 7, 15):
        (ia, ta), (ib, tb) = a[i], b[i]
        assert torch.equal(ia, ib) and all(torch.equal(torch.as_tensor(ta[k]), torch.as_tensor(tb[k])) for k in ta)
    steps = ["optim.steps=3", "run.eval_max_images=1"]
    assert _train(tmp_path / "folder", *steps, "--data", str(root)) == 0
    part = tmp_path / "part"  # on the shards: stopped mid-epoch (checkpoint at step 2), then resumed
    assert _train(part, *steps, "run.max_steps=2", "--data", str(shards)) == 0
    assert _steps(part)[-1][0] == 2
    assert _train(part, *steps, "--data", str(shards), resume="auto") == 0
    folder, sharded = _steps(tmp_path / "folder"), _steps(part)
    assert [s for s, *_ in sharded] == [1, 2, 3]
    assert [v for x in sharded for v in x[1:]] == pytest.approx([v for x in folder for v in x[1:]], rel=1e-5, abs=1e-6)
