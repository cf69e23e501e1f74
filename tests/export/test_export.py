"""Export: ONNX (checked in ONNX Runtime) and TorchScript match PyTorch; `botnet export`; the
dispatch point for other kinds; torch.compile in eval and train mode matches eager."""

import copy
import json
import sys
import types

import pytest
import torch
from tiny_checkpoints import make_checkpoint, write_images

import botnet
from botnet.cli import main
from botnet.export import ATOL, EXPORTERS, ExportError, export_model, export_onnx, export_torchscript, register_exporter

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return botnet.create_model("botnet_tiny", num_classes=5, img_size=64, zero_init_last=False).eval()


def test_onnx_matches_pytorch_with_a_dynamic_batch(model, tmp_path):
    res = export_onnx(model, tmp_path / "m.onnx", batch_size=2)
    assert res.max_abs_diff <= res.tolerance <= 2 * ATOL and res.extra["opset"] == 17 and res.input_shape == (2, 3, 64, 64)
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"Softmax", "MatMul"} <= ops and not {"Einsum", "Gather", "Shape"} & ops  # MHSA in its static form
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 64, 64)
    out = sess.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        assert abs(out - model(x).numpy()).max() <= ATOL
    # another resolution is another export (the position tables are sized at export)
    assert export_onnx(model, tmp_path / "m128.onnx", img_size=128, opset=18).max_abs_diff <= ATOL


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated upstream
def test_torchscript_matches_pytorch(model, tmp_path):
    res = export_torchscript(model, tmp_path / "m.pt", batch_size=2)
    assert res.max_abs_diff <= ATOL
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=ATOL, rtol=0)


def test_failures_are_loud(model, tmp_path):
    with pytest.raises(ExportError, match="differs from PyTorch by"):
        export_onnx(model, tmp_path / "m.onnx", atol=-1.0)  # any difference is too much
    with pytest.raises(ValueError, match="no exporter for classification models to 'tflite'; available: onnx"):
        export_model(model, tmp_path / "m.tflite", "tflite")
    with pytest.raises(ValueError, match="multiples of 32"):
        export_onnx(model, tmp_path / "m.onnx", img_size=48)
    with pytest.raises(ValueError, match="already registered"):
        register_exporter("classification", "onnx")(lambda *a, **k: None)


def test_exporters_dispatch_by_kind(model, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setitem(EXPORTERS, ("detection", "onnx"), lambda m, path, **kw: seen.append((m, path, kw)) or "done")
    assert export_model(model, tmp_path / "d.onnx", "onnx", kind="detection", img_size=64) == "done"
    assert seen == [(model, tmp_path / "d.onnx", {"img_size": 64})]


def test_cli(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "ck.pt")
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--output", str(tmp_path / "m.onnx"),
                 "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "exported botnet_tiny to" in out and "opset 17, input 2x3x64x64" in out and "max abs diff vs PyTorch" in out
    assert main(["export", "--model", "botnet_tiny", "--img-size", "64", "--num-classes", "7", "--format", "torchscript",
                 "--output", str(tmp_path / "m.ts"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["format"] == "torchscript" and res["max_abs_diff"] <= ATOL
    # safetensors + card from a training checkpoint: predictions unchanged
    assert main(["export", "--checkpoint", str(ckpt), "--format", "safetensors", "--output", str(tmp_path / "w.safetensors")]) == 0
    assert json.loads((tmp_path / "w.json").read_text())["classes"] == ["circle", "square", "triangle"]
    img = write_images(tmp_path / "img", n=1)[0]
    capsys.readouterr()
    preds = []
    for c in (ckpt, tmp_path / "w.safetensors"):
        assert main(["predict", "--checkpoint", str(c), str(img), "--json"]) == 0
        preds.append(json.loads(capsys.readouterr().out)["predictions"])
    assert preds[0] == preds[1]
    for argv in (["--format", "onnx", "--output", "x.onnx"],  # neither --checkpoint nor --model
                 ["--model", "botnet_tiny", "--img-size", "50", "--format", "onnx", "--output", str(tmp_path / "x.onnx")],
                 ["--checkpoint", str(tmp_path / "missing.pt"), "--format", "onnx", "--output", str(tmp_path / "x.onnx")]):
        assert main(["export", *argv]) == 2
        assert capsys.readouterr().err.startswith("botnet export: ")


def test_cli_detection_checkpoint_dispatch(tmp_path, monkeypatch, capsys):
    """A detection checkpoint goes to botnet.export.detection, opened once (the command passes its
    Checkpoint on), with the command's options as plain arguments; its result is printed by the command."""
    from botnet.export import ExportResult

    torch.save({"kind": "detection", "model": {}, "model_name": "maskrcnn_botnet50"}, tmp_path / "det.pt")
    argv = ["export", "--checkpoint", str(tmp_path / "det.pt"), "--format", "onnx", "--output", str(tmp_path / "d.onnx")]
    fake = types.ModuleType("botnet.export.detection")
    seen = []

    def export_checkpoint(path, output, fmt, **options):
        seen.append((path, fmt, options))
        return "maskrcnn_x", ExportResult(output, "onnx", (3, 64, 64), 1e-6, 1e-4, 0.5, {"opset": 17})

    fake.export_checkpoint = export_checkpoint
    fake.describe_checks = lambda res: "checked"
    monkeypatch.setitem(sys.modules, "botnet.export.detection", fake)
    assert main(argv) == 0
    assert [(str(ckpt.path), ckpt.task, fmt, opts) for ckpt, fmt, opts in seen] == [
        (str(tmp_path / "det.pt"), "detection", "onnx", {"img_size": None, "batch_size": 1, "opset": 17, "use_ema": False})]
    assert "exported maskrcnn_x to" in capsys.readouterr().out


@pytest.mark.slow
def test_torch_compile_matches_eager():
    """torch.compile (inductor) of botnet_tiny at 64 px: eval outputs, train outputs and every gradient
    match eager. Float64, so that the comparison is tight: in float32 the train-mode BN over 4x4 maps of
    a batch of 4 amplifies reordering noise to ~3% of some gradients, which says nothing about compile."""
    torch.manual_seed(0)
    eager = botnet.create_model("botnet_tiny", num_classes=10, img_size=64, zero_init_last=False).double()
    model = copy.deepcopy(eager)
    torch._dynamo.reset()  # shapes seen by earlier compile tests in this process would make them dynamic
    compiled = torch.compile(model, dynamic=False)
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    eager.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), atol=1e-6, rtol=1e-6)
    eager.train(), model.train()
    y_c, y_e = compiled(x), eager(x)
    torch.testing.assert_close(y_c, y_e, atol=1e-6, rtol=1e-6)  # float32 attention softmax: not 1e-12
    y_c.square().mean().backward()
    y_e.square().mean().backward()
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5 * q.grad.abs().max().item(), rtol=1e-5, msg=name)
