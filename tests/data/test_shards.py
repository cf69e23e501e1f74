"""Tar shards with a wids index (botnet.data.shards, `botnet shards`): written from an ImageFolder
or a COCO set, verified, and read as the same dataset; the global-batch sampler's guarantees hold
on them (the same global batches for any device split, exact mid-epoch resume), and a training run
on shards is the run on the folder."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from botnet.cli import main
from botnet.data import ShardImageDataset, build_dataset, build_transforms, verify_shards
from botnet.data.shards import index_path
from botnet.engine.metrics import read_jsonl
from botnet.engine.sampler import GlobalBatchSampler, SeededDataset

REPO = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def shards(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    assert main(["shards", tiny_data, "--output", str(out), "--max-count", "30"]) == 0
    return str(out)


def test_written_verified_and_the_same_samples_as_the_folder(tiny_data, shards, capsys):
    assert main(["shards", tiny_data, "--output", shards, "--verify-only"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train"] == {"shards": 3, "samples": 80, "bad_images": []}  # 30 + 30 + 20
    for split in ("train", "val"):
        a, b = build_dataset(shards, split, None), build_dataset(tiny_data, split, None)
        assert isinstance(a, ShardImageDataset) and a.classes == b.classes and len(a) == len(b)
        for i in range(len(a)):
            (ia, ta), (ib, tb) = a[i], b[i]
            assert ta == tb and ia.tobytes() == ib.tobytes(), (split, i)


def test_a_damaged_shard_is_refused_with_one_line(shards, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    tar = bad / "train-000001.tar"
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tar.write_bytes(bytes(data))
    assert main(["shards", "unused", "--output", str(bad), "--verify-only", "--splits", "train"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"botnet shards: shard {tar} is damaged: its MD5 differs from the one in {bad / 'train.wids.json'}"
    (bad / "val-000000.tar").unlink()
    assert main(["shards", "unused", "--output", str(bad), "--verify-only", "--splits", "val"]) == 2
    assert "is missing" in capsys.readouterr().err
    assert main(["shards", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


def _steps(ds, world, accum, start=0, epoch=1):
    """Optimizer steps as lists of micro-batches of (image tensor, label) from every rank."""
    per_rank = []
    for r in range(world):
        s = GlobalBatchSampler(len(ds), 16, world, r, accum, seed=5)
        s.set_epoch(epoch, start)
        per_rank.append([[ds[item] for item in micro] for micro in s])
    return [[per_rank[j % world][k * accum + j // world] for j in range(world * accum)]
            for k in range(len(per_rank[0]) // accum)]


def _same(a, b):
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b):
        xs_a = [x for micro in step_a for x in micro]
        xs_b = [x for micro in step_b for x in micro]
        assert [t for _, t in xs_a] == [t for _, t in xs_b]
        assert all(torch.equal(x, y) for (x, _), (y, _) in zip(xs_a, xs_b))


def test_global_batches_and_resume_on_shards(shards):
    """Seeded RandAugment on shards: 2 devices x 1 = 1 device x 2 accumulation steps, pixel for
    pixel, and resuming at step 3 gives the rest of the epoch exactly."""
    train_tf = build_transforms(True, 32, randaug_magnitude=10)
    ds = SeededDataset(ShardImageDataset(index_path(shards, "train"), transform=train_tf))
    one = _steps(ds, 1, 2)
    _same(_steps(ds, 2, 1), one)
    _same(_steps(ds, 2, 1, start=3), one[3:])


def _train(out, data, *extra):
    cmd = [sys.executable, "-m", "botnet", "train", "--config", str("demo"), "--output", str(out),
           "--data", data, "model.name=botnet_tiny", "data.img_size=32", "data.workers=2", "optim.batch_size=16",
           "run.amp=none", "run.log_every=1", "optim.warmup_epochs=1", "optim.epochs=2", "run.deterministic=true",
           "run.ckpt_every_steps=2", *extra]
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return [(x["step"], x["loss"]) for x in read_jsonl(out / "metrics.jsonl") if x["kind"] == "step"]


def test_training_on_shards_is_training_on_the_folder_and_resumes_exactly(tiny_data, shards, tmp_path):
    folder = _train(tmp_path / "folder", tiny_data)
    sharded = _train(tmp_path / "shards", shards)
    assert [s for s, _ in sharded] == list(range(1, 11))
    assert [l for _, l in sharded] == pytest.approx([l for _, l in folder], rel=1e-6)
    _train(tmp_path / "resumed", shards, "run.max_steps=3")  # stopped mid-epoch, checkpoint at step 2
    resumed = _train(tmp_path / "resumed", shards, "--resume", "auto")
    assert dict(resumed) == pytest.approx(dict(sharded), rel=1e-6)


def test_coco_set_to_shards(tmp_path, capsys):
    from botnet.data import builtin_coco_root

    root = Path(builtin_coco_root(tmp_path / "cache"))
    split = next(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("train"))
    out = tmp_path / "coco_shards"
    assert main(["shards", str(root), "--coco", "--output", str(out), "--splits", "train", "--max-count", "16"]) == 0
    report = json.loads(capsys.readouterr().out)["train"]
    ann = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    assert report["samples"] == len(ann["images"]) and report["bad_images"] == []
    index = json.loads((out / "train.wids.json").read_text())
    assert index["botnet"]["kind"] == "coco" and index["botnet"]["categories"] == ann["categories"]
    from wids.wids import IndexedTarSamples

    first = IndexedTarSamples(path=str(out / index["shardlist"][0]["url"]))[0]
    record = json.loads(first[".json"].getvalue())
    im = min(ann["images"], key=lambda x: x["id"])
    assert record["image"] == im
    assert record["annotations"] == [a for a in ann["annotations"] if a["image_id"] == im["id"]]
    assert verify_shards(out / "train.wids.json")["samples"] == len(ann["images"])
