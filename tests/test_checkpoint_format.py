"""``botnet.checkpoint``: the one writer and reader of checkpoint files, and what the commands read
through it (one read per command, one eval transform for ``botnet predict`` and ``botnet eval``)."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_checkpoints import CLASSES, make_checkpoint

import botnet.checkpoint as checkpoint
from botnet.checkpoint import (FORMAT_VERSION, Checkpoint, CheckpointError, card_path, load_checkpoint, open_checkpoint,
                               save_atomic, verify_checkpoint, write_atomic)
from botnet.cli import main


def _train_dict(**extra):
    return {"kind": "classification", "model_name": "botnet_tiny", "config": {"data": {"img_size": 64}},
            "model": {"w": torch.arange(4.0)}, "classes": ["a", "b"], "epoch": 1, "step": 7, **extra}


def test_round_trip(tmp_path):
    path = save_atomic(_train_dict(), tmp_path / "sub" / "c.pt")
    assert verify_checkpoint(path) and not list(path.parent.glob(".*.tmp"))
    ckpt = open_checkpoint(path)
    assert isinstance(ckpt, Checkpoint) and FORMAT_VERSION == 1
    assert (ckpt.kind, ckpt.task, ckpt.model_name, ckpt.classes) == ("train", "classification", "botnet_tiny", ["a", "b"])
    assert ckpt.config == {"data": {"img_size": 64}} and ckpt.get("step") == 7 and ckpt.where == str(path)
    torch.testing.assert_close(ckpt.model_state()["w"], torch.arange(4.0))
    assert ckpt.as_dict()["epoch"] == 1 and ckpt.require("classification", train=True) is ckpt
    with pytest.raises(ValueError, match="has no EMA weights"):
        ckpt.model_state(use_ema=True)
    with pytest.raises(ValueError, match=r"is not a detection checkpoint of botnet train \(kind: 'classification'\)"):
        ckpt.require("detection")
    newer = save_atomic(_train_dict(format_version=FORMAT_VERSION + 1), tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="newer.pt has checkpoint format 2; this botnet reads formats up to 1"):
        open_checkpoint(newer)


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    path = write_atomic(tmp_path / "card.json", lambda tmp: Path(tmp).write_text("{}"))
    with pytest.raises(RuntimeError, match="boom"):
        write_atomic(path, lambda tmp: (Path(tmp).write_text("half"), (_ for _ in ()).throw(RuntimeError("boom"))))
    assert path.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["card.json"]


def test_kind_of_every_file(tmp_path):
    """A train checkpoint, weight files with their card (safetensors, .pt), a bare state dict."""
    from safetensors.torch import save_file

    sd = {"w": torch.ones(2)}
    card = {"kind": "detection", "model_name": "maskrcnn_botnet_tiny_fpn", "config": {"model": {}}, "classes": ["x"],
            "step": 3}
    save_file(sd, tmp_path / "det.safetensors")
    card_path(tmp_path / "det.safetensors").write_text(json.dumps(card))
    ckpt = open_checkpoint(tmp_path / "det.safetensors")
    assert (ckpt.kind, ckpt.task, ckpt.model_name, ckpt.classes, ckpt.get("step")) == (
        "weights", "detection", "maskrcnn_botnet_tiny_fpn", ["x"], 3)
    assert ckpt.as_dict()["model"].keys() == sd.keys() and ckpt.card == card

    torch.save(sd, tmp_path / "w.pt")
    card_path(tmp_path / "w.pt").write_text(json.dumps({"model_name": "botnet_tiny", "classes": ["a"]}))
    assert (open_checkpoint(tmp_path / "w.pt").kind, open_checkpoint(tmp_path / "w.pt").task) == ("weights", "classification")

    torch.save(sd, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="bare.pt is not a botnet checkpoint"):
        open_checkpoint(tmp_path / "bare.pt")
    other = open_checkpoint(tmp_path / "bare.pt", strict=False)
    assert (other.kind, other.task, other.state) == ("other", None, None)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match=r"is not a classification checkpoint of botnet train \(kind: 'Tensor'\)"):
        open_checkpoint(tmp_path / "tensor.pt", strict=False).require("classification")
    torch.save({"kind": "segmentation", "model": {}}, tmp_path / "seg.pt")
    assert open_checkpoint(tmp_path / "seg.pt").task == "segmentation"
    save_file(sd, tmp_path / "nocard.safetensors")
    with pytest.raises(FileNotFoundError, match="no model card nocard.json"):
        open_checkpoint(tmp_path / "nocard.safetensors")


def test_unreadable_file_is_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(3000))
    with pytest.raises(CheckpointError, match="junk.pt' cannot be read") as e:
        open_checkpoint(junk)
    assert len(str(e.value).splitlines()) == 1
    with pytest.raises(CheckpointError, match="weights file .*junk.pt' cannot be read"):
        load_checkpoint(junk, what="weights file")
    with pytest.raises(FileNotFoundError, match="missing.pt' not found"):
        open_checkpoint(tmp_path / "missing.pt")
    for cmd in (["predict", "--checkpoint", str(junk), str(junk)], ["eval", "--checkpoint", str(junk)],
                ["export", "--checkpoint", str(junk), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"botnet {cmd[0]}: ") and "cannot be read" in err and len(err.strip().splitlines()) == 1


def _val_folder(root: Path, size=(360, 410)) -> list[Path]:
    """root/val/<class>/img.png, one random image per class of ``CLASSES`` (H, W = size)."""
    rng = np.random.default_rng(0)
    paths = []
    for c in CLASSES:
        p = root / "val" / c / "img.png"
        p.parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_eval_reads_the_checkpoint_once(tmp_path, monkeypatch, capsys):
    ck = make_checkpoint(tmp_path / "c.pt", img_size=64)
    _val_folder(tmp_path / "data", size=(64, 64))
    calls = []
    real = torch.load
    monkeypatch.setattr(checkpoint.torch, "load", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    assert main(["eval", "--checkpoint", str(ck), "--data", str(tmp_path / "data"), "--workers", "0",
                 "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3
    assert calls == [ck]


def test_predict_and_eval_give_the_same_logits_at_320(tmp_path, capsys):
    """At 320 with crop_pct 0.95 both commands resize the short side to floor(320 / 0.95) = 336 (timm):
    the loss ``botnet eval`` reports is the mean -log p(true class) of ``botnet predict``'s scores."""
    from botnet.data.transforms import build_transforms
    from botnet.data.folder import load_rgb
    from botnet.inference.classify import eval_transform
    from botnet.models.weights import load_model

    ck = make_checkpoint(tmp_path / "c.pt", img_size=320, crop_pct=0.95)
    images = _val_folder(tmp_path / "data")
    model, card = load_model(ck)
    predict_tf, eval_tf = eval_transform(card), build_transforms(False, 320, crop_pct=0.95)
    assert predict_tf.transforms[0].size == eval_tf.transforms[0].size == [336] == [math.floor(320 / 0.95)]
    with torch.no_grad():
        for p in images:
            x = load_rgb(p)
            torch.testing.assert_close(model(predict_tf(x)[None]), model(eval_tf(x)[None]), rtol=0, atol=0)

    assert main(["predict", "--checkpoint", str(ck), *map(str, images), "--topk", "3", "--device", "cpu", "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)["predictions"]
    nll = [-math.log(next(t["score"] for t in rec["topk"] if t["label"] == c)) for rec, c in zip(preds, CLASSES)]
    assert main(["eval", "--checkpoint", str(ck), "--data", str(tmp_path / "data"), "--workers", "0", "--device", "cpu",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["count"] == 3 and res["loss"] == pytest.approx(sum(nll) / 3, rel=1e-5, abs=1e-6)
