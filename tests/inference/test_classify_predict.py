"""Classifier inference: ``predict_classifier`` and ``botnet predict`` (classification, and the
hand-over of detection checkpoints)."""

import json
import logging
import sys
import types
from pathlib import Path

import pytest
import torch
from tiny_checkpoints import CLASSES, make_checkpoint, write_images

from botnet.cli import main
from botnet.data.folder import load_rgb
from botnet.inference.classify import eval_transform, expand_image_paths, predict_classifier
from botnet.models.weights import load_model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "last.pt", ema=True)


@pytest.fixture
def images(tmp_path):
    paths = write_images(tmp_path / "imgs", n=5)
    (tmp_path / "imgs" / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image, not looked at")
    return tmp_path / "imgs", paths


def test_predictions_match_a_manual_forward(ckpt, images, caplog):
    folder, paths = images
    caplog.set_level(logging.WARNING)
    res = predict_classifier(ckpt, [folder], topk=2, batch_size=2, device="cpu")
    assert res["model"] == "botnet_tiny"
    assert [p["image"] for p in res["predictions"]] == [str(p) for p in paths]  # recursive, sorted, txt ignored
    assert [s["image"] for s in res["skipped"]] == [str(folder / "sub" / "broken.png")]
    assert "broken.png" in caplog.text
    model, card = load_model(ckpt)
    x = torch.stack([eval_transform(card)(load_rgb(p)) for p in paths])
    with torch.no_grad():
        probs = model(x).softmax(-1)
    for rec, pr in zip(res["predictions"], probs):
        assert len(rec["topk"]) == 2
        top = pr.topk(2)
        assert [t["index"] for t in rec["topk"]] == top.indices.tolist()
        assert [t["label"] for t in rec["topk"]] == [CLASSES[i] for i in top.indices]
        assert [t["score"] for t in rec["topk"]] == pytest.approx(top.values.tolist(), abs=1e-6)


def test_topk_is_capped_ema_and_files(ckpt, images):
    folder, paths = images
    res = predict_classifier(ckpt, [paths[0], folder / "sub"], topk=10, device="cpu")
    assert len(res["predictions"]) == 1 + sum(p.parent.name == "sub" for p in paths)
    assert all(len(r["topk"]) == len(CLASSES) for r in res["predictions"])
    assert sum(t["score"] for t in res["predictions"][0]["topk"]) == pytest.approx(1.0, abs=1e-5)
    ema = predict_classifier(ckpt, [paths[0]], device="cpu", use_ema=True)["predictions"][0]["topk"]
    plain = res["predictions"][0]["topk"]
    assert [t["score"] for t in ema] != pytest.approx([t["score"] for t in plain])
    with pytest.raises(FileNotFoundError, match="not found"):
        expand_image_paths([folder / "missing.png"])
    (folder.parent / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        expand_image_paths([folder.parent / "empty"])


def test_cli_text_json_and_output(ckpt, images, tmp_path, capsys):
    folder, paths = images
    assert main(["predict", "--checkpoint", str(ckpt), str(folder), "--topk", "1", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == len(paths) and lines[0].startswith(f"{paths[0]}: ")
    assert "1 unreadable skipped" in err
    assert main(["predict", "--checkpoint", str(ckpt), str(paths[0]), "--json", "--output", str(tmp_path / "o"),
                 "--batch-size", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["checkpoint"] == str(ckpt) and len(res["predictions"][0]["topk"]) == 3
    assert json.loads((tmp_path / "o" / "predictions.json").read_text()) == res


def test_cli_errors_are_one_line(tmp_path, images, ckpt, capsys):
    folder, paths = images
    not_ckpt = tmp_path / "x.pt"
    not_ckpt.write_bytes(b"not a checkpoint")
    for argv in (["--checkpoint", str(not_ckpt), str(folder)], ["--checkpoint", str(paths[0]), str(folder)],
                 ["--checkpoint", str(tmp_path / "missing.pt"), str(folder)],
                 ["--checkpoint", str(ckpt), str(tmp_path / "nope")], ["--checkpoint", str(ckpt), str(folder), "--topk", "0"]):
        assert main(["predict", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("botnet predict: ") and len(err.strip().splitlines()) == 1, err
    torch.save({"kind": "segmentation", "model": {}}, tmp_path / "seg.pt")
    assert main(["predict", "--checkpoint", str(tmp_path / "seg.pt"), str(folder)]) == 2


def test_detection_checkpoints_are_drawn(tmp_path, monkeypatch, capsys):
    """A detection checkpoint: the command loads the detector and gives the library plain arguments."""
    seen = {}
    det = types.ModuleType("botnet.detection.predict")

    def predict_to_folder(model, paths, classes, output, thresh, device, progress=False, amp_dtype=None):
        seen.update(model=model, paths=paths, classes=classes, output=output, thresh=thresh, device=str(device),
                    amp_dtype=amp_dtype)
        yield {"image": str(paths[0]), "height": 4, "width": 4, "detections": [], "drawn": "x.png"}

    det.predict_to_folder = predict_to_folder
    det.recall_summary = lambda records: None
    loading = types.ModuleType("botnet.detection.loading")
    loading.load_detector = lambda path, device: ("MODEL", {"classes": ["a", "b"]})
    monkeypatch.setitem(sys.modules, "botnet.detection.predict", det)
    monkeypatch.setitem(sys.modules, "botnet.detection.loading", loading)
    torch.save({"kind": "detection", "model": {}, "model_name": "maskrcnn_botnet50"}, tmp_path / "det.pt")
    (tmp_path / "a.png").write_bytes(b"")
    argv = ["predict", "--checkpoint", str(tmp_path / "det.pt"), str(tmp_path / "a.png"), "--output", "o",
            "--score-thresh", "0.3", "--device", "cpu", "--json"]
    assert main(argv) == 0
    assert (seen["model"], seen["classes"], seen["output"], seen["thresh"], seen["device"], seen["amp_dtype"]) == (
        "MODEL", ["a", "b"], Path("o"), 0.3, "cpu", None)  # --precision auto: float32 on the CPU
    assert json.loads(capsys.readouterr().out)[0]["drawn"] == "x.png"


def test_real_training_checkpoint(tiny_data, tmp_path, capsys):
    """A checkpoint written by `botnet train` (1 step, with EMA) predicts, with and without --ema."""
    from pathlib import Path

    rc = main(["train", "--config", "demo", "--output", str(tmp_path / "r"),
               "--data", tiny_data, "model.name=botnet_tiny", "data.img_size=32", "data.workers=0", "optim.batch_size=16",
               "run.max_steps=1", "run.ema=true", "run.amp=none"])
    assert rc == 0
    capsys.readouterr()
    val = Path(tiny_data) / "val"
    for extra in ([], ["--ema"]):
        assert main(["predict", "--checkpoint", str(tmp_path / "r" / "last.pt"), str(val / "circle"), "--json", *extra]) == 0
        res = json.loads(capsys.readouterr().out)
        assert len(res["predictions"]) == 4 and not res["skipped"]
        assert {t["label"] for t in res["predictions"][0]["topk"]} <= set(p.name for p in val.iterdir())
