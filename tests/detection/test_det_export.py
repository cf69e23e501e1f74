"""`botnet export` for detection checkpoints: ONNX (ONNX Runtime) and TorchScript against PyTorch,
with and without detections, safetensors, the CLI, and the errors.

The checkpoints are written directly in det-train's format (random weights, no training). The
"calibrated" ones get a box score threshold between the best score on the empty check image and
the best on the scene: a few detections on the scene, none on the empty image.
"""

import argparse
import json

import numpy as np
import pytest
import torch

from botnet.cli import main
from botnet.config import config_to_dict
from botnet.config import DetTrainConfig
from botnet.export.checks import check_detections
from botnet.export.detection import check_images, quiet_detector_export
from botnet.cli.export import cmd_export
from botnet.detection.loading import build_detector_from_config, load_detector
from botnet.export import ExportError, export_model

pytestmark = [  # this file's own tracing and jit.load; the exporters silence theirs
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:RCNN always returns a"),
]
CLASSES = ["circle", "square", "triangle", "cross", "ring"]
TINY = dict(fpn_channels=32, box_fc=64, mask_channels=32, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50)
S = 64


def make_det_checkpoint(path, name="maskrcnn_botnet_tiny_fpn", img_size=S, calibrate=False, seed=0):
    """A checkpoint in the format of `botnet det-train` (``botnet.engine.trainer.Trainer.checkpoint``), random weights."""
    cfg = DetTrainConfig(name="tiny")
    cfg.model.name, cfg.data.img_size, cfg.model.kwargs = name, img_size, dict(TINY)
    torch.manual_seed(seed)
    model = build_detector_from_config(cfg, len(CLASSES) + 1, load_backbone=False).eval()
    if calibrate:
        model.roi_heads.score_thresh = 0.0
        with torch.no_grad():
            scene, empty = (float(model([img])[0]["scores"].max()) for _, img in check_images(img_size))
        assert scene > empty + 2e-3, (scene, empty)
        cfg.model.kwargs["box_score_thresh"] = (scene + empty) / 2
    ckpt = {"model": model.state_dict(), "config": config_to_dict(cfg), "classes": CLASSES, "cat_ids": [1, 3, 5, 7, 9],
            "model_name": name, "img_size": img_size, "metrics": {}, "kind": "detection", "epoch": 0, "step": 1}
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("det_export")
    return {
        "maskrcnn": make_det_checkpoint(d / "mask.pt", calibrate=True),
        "fasterrcnn": make_det_checkpoint(d / "faster.pt", "fasterrcnn_botnet_tiny_fpn", calibrate=True),
        "maskrcnn_many": make_det_checkpoint(d / "mask_many.pt"),
    }


def _assert_close(got: dict, ref: dict, keys, model):
    """The exporters' own check (raises ExportError): same detections, boxes / scores / masks within
    1e-4 + 1e-4 x max |PyTorch output|, in order up to float-rounding ties."""
    rh = model.roi_heads
    return check_detections(got, ref, keys, (rh.score_thresh, rh.detections_per_img), 1e-4, 1e-4, "test")


def test_fixed_size_transform_exports_its_input(ckpts, tmp_path):
    """The root cause of the failed detector exports: the batch was built by copying each image into
    a slice of a zeros tensor, an in-place copy into a view that the ONNX exporter dropped, so the
    graph ran on a blank batch whatever its input."""
    import onnxruntime as ort

    model, _ = load_detector(ckpts["fasterrcnn"])

    class Batch(torch.nn.Module):
        def forward(self, x):
            return model.transform([x])[0].tensors

    x, y = torch.rand(3, S, S), torch.rand(3, S, S)
    with quiet_detector_export():
        torch.onnx.export(Batch(), (x,), str(tmp_path / "t.onnx"), input_names=["image"], dynamo=False, opset_version=17)
    sess = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    for img in (x, y):
        out = sess.run(None, {"image": img.numpy()})[0]
        np.testing.assert_allclose(out, Batch()(img).numpy(), atol=1e-6)
        assert np.abs(out).max() > 1  # normalised pixels, not the zeros of the old graph


@pytest.mark.parametrize("kind", ["maskrcnn", "fasterrcnn"])
def test_onnx_matches_pytorch_with_and_without_detections(ckpts, kind, tmp_path):
    import onnxruntime as ort

    model, _ = load_detector(ckpts[kind])
    res = export_model(model, tmp_path / "det.onnx", "onnx", kind="detection")
    counts = {c["image"]: c["detections"] for c in res.extra["checks"]}
    assert counts["scene"] > 0 and counts["empty"] == 0  # the zero-detection path runs in ONNX Runtime too
    assert res.input_shape == (3, S, S) and 0 <= res.max_abs_diff <= res.tolerance
    keys = ("boxes", "labels", "scores", "masks") if kind == "maskrcnn" else ("boxes", "labels", "scores")
    assert res.extra["outputs"] == list(keys)
    # the graph follows its input: other scenes than the traced one, detections or not
    sess = ort.InferenceSession(res.path, providers=["CPUExecutionProvider"])
    from botnet.data.builtin_coco import draw_scene
    from torchvision.transforms.v2 import functional as F

    for i in range(4):
        img = F.to_dtype(F.pil_to_tensor(draw_scene(np.random.default_rng([7, i]), S)[0]), torch.float32, scale=True)
        out = dict(zip(keys, sess.run(None, {"image": img.numpy()})))
        with torch.no_grad():
            ref = model([img])[0]
        _assert_close(out, ref, keys, model)
        if kind == "maskrcnn":
            assert out["masks"].shape[1:] == (1, S, S)


def test_onnx_many_detections(ckpts, tmp_path):
    """Default score threshold: dozens of detections (masks pasted in a loop over all of them)."""
    model, _ = load_detector(ckpts["maskrcnn_many"])
    res = export_model(model, tmp_path / "many.onnx", "onnx", kind="detection", opset=16)
    assert all(c["detections"] >= 20 for c in res.extra["checks"])
    assert set(res.extra["checks"][0]["max_abs_diff"]) == {"boxes", "scores", "masks"}
    assert res.max_abs_diff <= res.tolerance and res.extra["opset"] == 16


def test_export_error_when_the_export_ignores_its_input(ckpts, tmp_path, monkeypatch):
    """The check catches the original bug: with the batch built by an in-place copy into a slice
    again, the graph runs on a blank batch (or fails in ONNX Runtime): ExportError, not a file."""
    from botnet.detection.transform import FixedSizeTransform

    def inplace_batch(self, images, size_divisible=32):
        batch = images[0].new_zeros((len(images), images[0].shape[0], self.size, self.size))
        for img, pad in zip(images, batch):
            pad[:, : img.shape[1], : img.shape[2]].copy_(img)
        return batch

    model, _ = load_detector(ckpts["maskrcnn_many"])
    monkeypatch.setattr(FixedSizeTransform, "batch_images", inplace_batch)
    with pytest.raises(ExportError, match="ONNX Runtime could not run|has none in|differs from PyTorch"):
        export_model(model, tmp_path / "broken.onnx", "onnx", kind="detection")


def test_detection_matching_tolerates_near_ties_only():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40], [5, 5, 50, 60], [1, 2, 3, 4]])
    ref = {"boxes": boxes, "labels": torch.tensor([1, 2, 2, 1]), "scores": torch.tensor([0.9, 0.5, 0.5 - 1e-8, 0.05])}
    swapped = {k: v[[0, 2, 1, 3]] for k, v in ref.items()}  # a near-tie in the other order
    rec = check_detections(swapped, ref, ("boxes", "labels", "scores"), (0.05, 100), 1e-4, 1e-4, "x")
    assert rec["reordered"] == 2 and rec["max_abs_diff"]["boxes"] == 0
    cut = {k: v[:3] for k, v in ref.items()}  # the last one sits on the score threshold: may be missing
    assert check_detections(cut, ref, ("boxes", "labels", "scores"), (0.05, 100), 1e-4, 1e-4, "x")["borderline"] == 1
    far = {**ref, "scores": torch.tensor([0.9, 0.5, 0.4, 0.05])}  # not a tie: the order must hold
    far_swapped = {k: v[[0, 2, 1, 3]] for k, v in far.items()}
    with pytest.raises(ExportError, match="detection 1 of PyTorch"):
        check_detections(far_swapped, far, ("boxes", "labels", "scores"), (0.05, 100), 1e-4, 1e-4, "x")
    moved = {**ref, "boxes": boxes + torch.tensor([0.0, 0, 0, 1])}
    with pytest.raises(ExportError, match="detection 0 of PyTorch"):
        check_detections(moved, ref, ("boxes", "labels", "scores"), (0.05, 100), 1e-4, 1e-4, "x")
    with pytest.raises(ExportError, match="detection 1 of PyTorch"):
        check_detections({k: v[[0, 3]] for k, v in ref.items()}, ref, ("boxes", "labels", "scores"), (0.05, 100),
                          1e-4, 1e-4, "x")


@pytest.mark.parametrize("kind", ["maskrcnn", "fasterrcnn"])
def test_torchscript_matches_pytorch(ckpts, kind, tmp_path):
    model, _ = load_detector(ckpts[kind])
    res = export_model(model, tmp_path / "det.pt", "torchscript", kind="detection")
    counts = {c["image"]: c["detections"] for c in res.extra["checks"]}
    assert counts["scene"] > 0 and counts["empty"] == 0 and counts["scene (batch)"] == counts["scene"]
    assert res.max_abs_diff <= res.tolerance
    loaded = torch.jit.load(res.path)
    img = torch.rand(3, 48, S)  # any size up to S x S: the scripted transform resizes and pads
    with torch.no_grad():
        losses, dets = loaded([img])
        ref = model([img])[0]
    assert losses == {} and len(dets) == 1
    _assert_close(dets[0], ref, res.extra["outputs"], model)
    if kind == "maskrcnn":
        assert dets[0]["masks"].shape[1:] == (1, 48, S)


def test_cli_export_onnx_and_safetensors(ckpts, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", "--checkpoint", str(ckpts["maskrcnn"]), "--format", "onnx", "--output", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert out.is_file() and line.startswith(f"exported maskrcnn_botnet_tiny_fpn to {out} (onnx, opset 17, input 3x64x64)")
    assert "detections scene" in line and "empty 0" in line and "max abs diff vs PyTorch" in line

    weights = tmp_path / "det.safetensors"
    assert main(["export", "--checkpoint", str(ckpts["maskrcnn"]), "--format", "safetensors", "--output", str(weights),
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["format"] == "safetensors" and res["max_abs_diff"] == 0.0
    card = json.loads((tmp_path / "det.json").read_text())
    assert card["kind"] == "detection" and card["classes"] == CLASSES and card["cat_ids"] == [1, 3, 5, 7, 9]
    rebuilt, info = load_detector(weights)  # botnet predict / det-eval read it the same way
    assert info["model_name"] == "maskrcnn_botnet_tiny_fpn" and rebuilt.img_size == S


def _args(ckpt, out, **kw):
    base = dict(checkpoint=str(ckpt), model=None, format="onnx", output=str(out), img_size=None, batch_size=1,
                opset=17, num_classes=1000, ema=False, json=False, quantize=None, calibration=None, precision="fp32")
    return argparse.Namespace(**{**base, **kw})


def test_bad_input_is_a_one_line_error(ckpts, tmp_path, capsys):
    ckpt = ckpts["maskrcnn"]
    cases = [
        (dict(format="tflite"), "detection checkpoints export to onnx, torchscript, safetensors"),
        (dict(img_size=128), "takes 64x64 inputs"),
        (dict(batch_size=4), "--batch-size is for classifiers"),
        (dict(ema=True), "no EMA weights"),
        (dict(opset=10), "opset >= 11"),
        (dict(format="safetensors", output=str(tmp_path / "w.pt")), "end in .safetensors"),
        (dict(checkpoint=str(tmp_path / "missing.pt")), "not found"),
        (dict(format="torchscript", output=str(tmp_path / "x.pt"), precision="bf16"), "--precision bf16 exports classifiers"),
    ]
    for kw, msg in cases:
        assert cmd_export(_args(ckpt, tmp_path / "x.onnx", **kw)) == 2, kw
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, (kw, err)
    with pytest.raises(SystemExit) as e:  # the CLI's own format choices
        main(["export", "--checkpoint", str(ckpt), "--format", "tflite", "--output", str(tmp_path / "x")])
    assert e.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err


def test_predict_in_bf16_draws_the_float32_detections(ckpts, tmp_path, capsys):
    """``botnet predict --precision bf16`` on a detector (``bf16_detector``): the detections of the
    float32 run, within bfloat16 rounding."""
    from torchvision.utils import save_image

    img = tmp_path / "scene.png"
    save_image(dict(check_images(S))["scene"], img)
    found = {}
    for precision in ("fp32", "bf16"):
        assert main(["predict", "--checkpoint", str(ckpts["maskrcnn"]), str(img), "--json", "--precision", precision,
                     "--score-thresh", "0", "--output", str(tmp_path / precision)]) == 0
        found[precision] = json.loads(capsys.readouterr().out)[0]["detections"]
    assert found["fp32"] and len(found["bf16"]) >= len(found["fp32"]) // 2
    top = found["fp32"][0]
    near = [d for d in found["bf16"] if d["label"] == top["label"]
            and max(abs(a - b) for a, b in zip(d["box_xyxy"], top["box_xyxy"])) < 1.0]
    assert near and abs(near[0]["score"] - top["score"]) < 0.05
