"""ONNX for ONNX Runtime and TensorRT: the static MHSA form (exact against the layer, no dynamic
shape ops or relative-to-absolute step in the graph, the op set pinned), the int8 export (static
quantization calibrated on real images, checked by top-1 agreement on held-out ones) and its
command-line errors, and the benchmark script's quick run."""

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_checkpoints import make_checkpoint, write_images

import botnet
from botnet.cli import main
from botnet.export import ExportError, export_onnx
from botnet.export.static_attn import StaticMHSA, freeze_attention
from botnet.layers import MHSA2d, MHSA2dQK, use_kernel

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
# every op of botnet_tiny's ONNX graph; a change to the export that adds one must say so here
TINY_OPS = {"Add", "AveragePool", "BatchNormalization", "Conv", "Flatten", "Gemm", "GlobalAveragePool", "MatMul",
            "MaxPool", "Relu", "Reshape", "Softmax", "Split", "Transpose", "Unsqueeze", "Constant", "Identity"}
# shape arithmetic and relative-to-absolute steps TensorRT users cannot take on the attention path
FORBIDDEN = {"Shape", "Gather", "GatherElements", "GatherND", "ConstantOfShape", "Range", "Expand", "Pad", "Slice",
             "Concat", "NonZero", "Where", "Einsum", "Size", "Tile", "ScatterND", "Cast"}


@pytest.mark.parametrize("make", [
    lambda: MHSA2d(32, 4, (4, 6)),
    lambda: MHSA2d(32, 2, (3, 5), pos_enc="absolute", qkv_bias=True),
    lambda: MHSA2d(16, 4, (4, 4), pos_enc="none"),
    lambda: MHSA2d(16, 2, (4, 4), content=False),
    lambda: MHSA2dQK(32, 4, (4, 4), qk_head_dim=4, qkv_bias=True),
], ids=["relative", "absolute-bias", "none", "qr-only", "qk-narrow"])
@pytest.mark.parametrize("size", [(4, 6), (5, 3), (1, 7)])
def test_static_mhsa_matches_the_layer(make, size):
    """Any (H, W), including one the tables were not built for (resized as the layer resizes them)."""
    torch.manual_seed(0)
    layer = make().eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))  # biases away from zero
    x = torch.randn(3, layer.dim, *size)
    static = StaticMHSA(layer, size)
    with torch.no_grad(), use_kernel("reference"):
        torch.testing.assert_close(static(x), layer(x), atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(static(x[:1]), layer(x[:1]), atol=2e-5, rtol=1e-5)  # any batch


def test_freeze_attention_replaces_every_mhsa_of_a_copy():
    torch.manual_seed(0)
    model = botnet.create_model("botnet_tiny", num_classes=5, img_size=64, zero_init_last=False).eval()
    frozen, n = freeze_attention(model, torch.randn(1, 3, 64, 64))
    assert n == 2 and sum(isinstance(m, StaticMHSA) for m in frozen.modules()) == 2
    assert sum(isinstance(m, MHSA2d) for m in model.modules()) == 2  # the original is untouched
    assert sorted(m.size for m in frozen.modules() if isinstance(m, StaticMHSA)) == [(2, 2), (4, 4)]


def test_onnx_graph_has_no_dynamic_shape_ops(tmp_path):
    torch.manual_seed(0)
    model = botnet.create_model("botnet_tiny", num_classes=5, img_size=64, zero_init_last=False).eval()
    res = export_onnx(model, tmp_path / "m.onnx", batch_size=2)
    assert res.extra["static_attention_layers"] == 2
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert not FORBIDDEN & set(ops), FORBIDDEN & set(ops)
    assert set(ops) == TINY_OPS, set(ops) ^ TINY_OPS
    assert ops["Softmax"] == 2 and ops["MatMul"] == 8  # per layer: q k^T, two position MatMuls, @ v
    # every Reshape takes a constant shape (an initializer or a Constant node), -1 for the batch at most
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant"})
    for n in graph.node:
        if n.op_type == "Reshape":
            assert n.input[1] in consts, n.name  # not computed from Shape
            assert (consts[n.input[1]] == -1).sum() <= 1, (n.name, consts[n.input[1]])
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(sess.run(None, {"images": x.numpy()})[0]), model(x),
                                   atol=1e-4, rtol=1e-4)


def test_int8_export_is_checked_by_agreement_on_held_out_images(tiny_data, tmp_path):
    from botnet.export.quantize import float_nodes, split_images

    calib, check = split_images(Path(tiny_data) / "val")  # 40 images: every fifth is held out
    assert (len(calib), len(check)) == (32, 8) and not set(calib) & set(check)
    torch.manual_seed(0)
    model = botnet.create_model("botnet_tiny", num_classes=10, img_size=64, zero_init_last=False).eval()
    res = export_onnx(model, tmp_path / "q.onnx", quantize="int8", calibration=Path(tiny_data) / "val",
                      eval_cfg={"crop_pct": 1.0}, min_agreement=0.0)
    x = res.extra
    assert (x["quantize"], x["check_images"], x["calibration_images"]) == ("int8", 8, 32)
    assert 0.0 <= x["agreement"] <= 1.0 and x["fp32_max_abs_diff"] <= x["fp32_tolerance"] and res.tolerance is None
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] > 20 and ops["DequantizeLinear"] > ops["Conv"] == 20
    # the attention stays float32: its MatMuls, Adds and Softmax take no dequantized input and feed no
    # QuantizeLinear; its q/k/v projection Conv is quantized (a DequantizeLinear before it)
    made_by = {o: n for n in graph.node for o in n.output}
    attn = [n for n in graph.node if "/attn/" in n.name and n.op_type in ("MatMul", "Softmax", "Add")]
    assert len(attn) == 14 and x["float_nodes"] >= 14, (len(attn), x["float_nodes"])  # 2 layers x (4 + 1 + 2)
    for n in attn:
        assert all(i not in made_by or made_by[i].op_type != "DequantizeLinear" for i in n.input), n.name
        assert not any(o in q.input for o in n.output for q in graph.node if q.op_type == "QuantizeLinear"), n.name
    qkv = [n for n in graph.node if n.op_type == "Conv" and any("attn.weight" in i for i in n.input)]
    assert len(qkv) == 2 and all(made_by[n.input[0]].op_type == "DequantizeLinear" for n in qkv)
    with pytest.raises(ExportError, match=r"top-1 agreement with PyTorch .*% on the 8 held-out images, below 101.0%"):
        export_onnx(model, tmp_path / "q2.onnx", quantize="int8", calibration=Path(tiny_data) / "val",
                    eval_cfg={"crop_pct": 1.0}, min_agreement=1.01, max_calibration=4)
    with pytest.raises(ValueError, match="go together"):
        export_onnx(model, tmp_path / "q3.onnx", quantize="int8")
    with pytest.raises(ValueError, match="cannot find attention module 'layer9.attn'"):
        float_nodes(graph, ["layer9.attn"])


def test_cli_int8_and_its_one_line_errors(tiny_data, tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "ck.pt", classes=[f"c{i}" for i in range(10)])
    out = tmp_path / "q.onnx"
    code = main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--quantize", "int8", "--calibration",
                 str(Path(tiny_data) / "val"), "--output", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err  # random weights, but one class wins on every image, in int8 too
    res = json.loads(captured.out)
    assert res["extra"]["agreement"] >= 0.98 and res["extra"]["check_images"] == 8 and res["tolerance"] is None
    write_images(tmp_path / "one", n=1)
    (tmp_path / "empty").mkdir()
    base = ["export", "--checkpoint", str(ckpt), "--output", str(tmp_path / "x.onnx")]
    for argv, msg in (
        (["--format", "torchscript", "--quantize", "int8", "--calibration", tiny_data], "needs --format onnx"),
        (["--format", "onnx", "--quantize", "int8"], "needs --calibration DIR"),
        (["--format", "onnx", "--calibration", tiny_data], "--calibration goes with --quantize int8"),
        (["--format", "onnx", "--quantize", "int8", "--calibration", str(tmp_path / "missing")], "not found"),
        (["--format", "onnx", "--quantize", "int8", "--calibration", str(tmp_path / "empty")], "has 0 image(s)"),
        (["--format", "onnx", "--quantize", "int8", "--calibration", str(tmp_path / "one")], "has 1 image(s)"),
    ):
        assert main([*base, *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("botnet export: ") and msg in err and err.count("\n") == 1, err


def test_benchmark_quick_run(tmp_path):
    """benchmarks/onnx_runtime.py --quick: every column measured, the document untouched."""
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
           "BOTNET_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "onnx_runtime.py"), "--quick", "--no-doc"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| PyTorch eager |" in r.stdout and "| ORT fp32 |" in r.stdout and "| ORT int8 |" in r.stdout
    assert "Top-1 agreement with PyTorch" in r.stdout and "**Quick run**" in r.stdout
    profile = [line for line in r.stdout.splitlines() if line.startswith("| botnet_tiny | 1 | ORT ")]
    assert len(profile) == 2 and all(line.count("%") == 7 for line in profile), profile  # every kind of op, shares
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "onnx_runtime.py"), "--rounds", "0"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and bad.stderr.strip() == "onnx_runtime: --rounds and --threads must be >= 1, --calibration-images >= 2"
