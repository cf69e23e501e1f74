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


# ------------------------------------------------------------------------ damaged shards, bad input


def _two_class_shards(root, cls=None, max_count=4):
    """Shards of 2 classes x 4 train + 2 val 32x32 images, written directly; ``cls`` replaces the
    ``.cls`` of train samples {i: bytes} (a bad label)."""
    import io as _io

    from PIL import Image

    from botnet.data import write_shards

    def samples(n, bad):
        for i in range(n):
            buf = _io.BytesIO()
            Image.new("RGB", (32, 32), (40 * i, 100 * (i % 2), 0)).save(buf, format="PNG")
            yield {"png": buf.getvalue(), "cls": bad.get(i, str(i % 2).encode())}, None

    meta = {"kind": "classification", "classes": ["a", "b"]}
    write_shards(samples(8, cls or {}), root, "train", meta, max_count=max_count)
    write_shards(samples(4, {}), root, "val", meta, max_count=max_count)
    return root


def _train_tiny(data, out, capsys):
    rc = main(["train", "--config", "demo", "--data", str(data), "--output", str(out), "model.name=botnet_tiny",
               "data.img_size=32", "data.workers=0", "optim.batch_size=4", "run.amp=none", "optim.epochs=1",
               "optim.warmup_epochs=0"])
    from runs import cli_errors

    return rc, cli_errors(capsys.readouterr().err).strip()


def test_bad_labels_are_skipped_counted_and_named(tmp_path, capsys, caplog):
    """A .cls of 7 with 2 classes and a .cls of 'x': both samples skipped like unreadable images,
    counted in the epoch record, each named by its shard member and what was expected."""
    data = _two_class_shards(tmp_path / "s", cls={1: b"7", 2: b"x"})
    caplog.set_level("WARNING")
    rc, err = _train_tiny(data, tmp_path / "run", capsys)
    assert rc == 0, err
    epoch = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["skipped_images"] for r in epoch] == [2]
    assert "skipping unreadable sample train-000000.tar:000000001.cls: its .cls is b'7'; expected a class index 0..1" \
        in caplog.text
    assert "train-000000.tar:000000002.cls: its .cls is b'x'" in caplog.text and "BytesIO" not in caplog.text
    report = verify_shards(data / "train.wids.json")
    assert [b.split(" ")[0] for b in report["bad_images"]] == ["train-000000.tar:000000001.cls",
                                                                "train-000000.tar:000000002.cls"]


@pytest.mark.parametrize("damage", ["truncated", "index [1,2,3]", "index without shards"])
def test_a_bad_shard_or_index_is_one_line_exit_2(damage, tmp_path, capsys):
    data = _two_class_shards(tmp_path / "s")
    index = data / "train.wids.json"
    if damage == "truncated":
        tar = data / "train-000001.tar"
        tar.write_bytes(tar.read_bytes()[:3000])
        expected = f"shard {tar} is 3000 bytes but {index} records"
    elif damage == "index [1,2,3]":
        index.write_text("[1, 2, 3]")
        expected = f"shard index {index} is not a wids shard index (found a JSON list); expected a JSON object"
    else:
        index.write_text(json.dumps({"__kind__": "wids-shard-index-v1", "shardlist": [{"url": 3}]}))
        expected = "shardlist entry 0 is {\"url\": 3}"
    rc, err = _train_tiny(data, tmp_path / "run", capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("botnet train: ") and expected in err
    assert not (tmp_path / "run").exists()  # refused before anything was written
    assert main(["shards", "--output", str(data), "--verify-only", "--splits", "train"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("botnet shards: ")
    assert (expected if damage != "truncated" else "is damaged: its MD5 differs") in err


def test_a_damaged_tar_header_skips_its_samples_with_a_named_warning(tmp_path, caplog):
    data = _two_class_shards(tmp_path / "s")
    tar = data / "train-000001.tar"
    raw = bytearray(tar.read_bytes())
    raw[124:136] = b"\xff" * 12  # the first member's size field: not octal, not utf-8
    tar.write_bytes(bytes(raw))
    ds = ShardImageDataset(data / "train.wids.json")
    caplog.set_level("WARNING")
    items = [ds[i] for i in range(len(ds))]
    assert [x is None for x in items] == [False] * 4 + [True] * 4 and ds.num_skipped == 4
    assert "skipping unreadable sample train-000001.tar:sample 0: shard train-000001.tar cannot be read as a tar file" \
        in caplog.text


def test_shards_command_refuses_overwrite_and_output_inside_source(tiny_data, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["shards", tiny_data, "--splits", "val", "--max-count", "20"]
    assert main([*args, "--output", str(out)]) == 0
    index = out / "val.wids.json"
    assert oct(index.stat().st_mode & 0o777) == oct((out / "val-000000.tar").stat().st_mode & 0o777) == "0o644"
    before = index.read_bytes()
    capsys.readouterr()
    assert main([*args, "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (f"botnet shards: --output {out} already holds shards (val.wids.json, "
                                               "val-000000.tar, val-000001.tar); pass --overwrite to replace them, or "
                                               "choose another folder")
    assert index.read_bytes() == before
    assert main([*args, "--output", str(out), "--max-count", "40", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["val-000000.tar", "val.wids.json"]  # no stale shard left
    inside = Path(tiny_data) / "train" / "x"
    capsys.readouterr()
    assert main([*args, "--output", str(inside)]) == 2
    assert f"--output {inside} is inside the source {tiny_data}" in capsys.readouterr().err
    assert not inside.exists()
    assert main(["shards", "--output", str(out), "--verify-only"]) == 0  # no source needed
    assert json.loads(capsys.readouterr().out)["val"]["samples"] == 40


def test_undecodable_source_images_are_named_by_their_file(tmp_path, capsys):
    import shutil

    from PIL import Image

    src = tmp_path / "src"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (src / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i * 90, 0, 0)).save(src / split / c / f"{i}.png")
    bad = src / "train" / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    assert main(["shards", str(src), "--output", str(tmp_path / "out")]) == 0  # complete, trainable shards
    captured = capsys.readouterr()
    assert json.loads(captured.out)["train"]["bad_images"] == [f"{bad} (does not decode (UnidentifiedImageError))"]
    assert captured.err.strip() == (f"botnet shards: train: 1 image(s) do not decode and will be skipped in training, "
                                    f"first {bad} (does not decode (UnidentifiedImageError)) (--strict makes this an error)")
    shutil.rmtree(tmp_path / "out")
    assert main(["shards", str(src), "--output", str(tmp_path / "out"), "--strict"]) == 2
