"""``--precision`` of botnet eval, predict and export on a classifier."""

import json

import pytest
from tiny_checkpoints import CLASSES, make_checkpoint, write_images

from botnet.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("prec") / "last.pt")


def test_eval_and_predict_in_bf16(ckpt, tmp_path, capsys):
    for i, c in enumerate(CLASSES):
        write_images(tmp_path / "data" / "val" / c, n=2, size=(64, 64), seed=i)
    res = {}
    for precision in ("fp32", "bf16"):
        assert main(["eval", "--checkpoint", str(ckpt), "--data", str(tmp_path / "data"), "--workers", "0",
                     "--precision", precision, "--json"]) == 0
        res[precision] = json.loads(capsys.readouterr().out)
    assert res["fp32"]["precision"] == "fp32" and res["bf16"]["precision"] == "bf16"
    assert res["bf16"]["count"] == 6 and res["bf16"]["loss"] == pytest.approx(res["fp32"]["loss"], rel=0.02)
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(tmp_path / "data"), "--workers", "0"]) == 0
    assert ", fp32): top-1" in capsys.readouterr().out  # auto is float32 on the CPU

    img = tmp_path / "data" / "val" / CLASSES[0]
    scores = {}
    for precision in ("fp32", "bf16"):
        assert main(["predict", "--checkpoint", str(ckpt), str(img), "--json", "--precision", precision]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["precision"] == precision
        scores[precision] = [t["score"] for p in out["predictions"] for t in p["topk"]]
    assert scores["bf16"] == pytest.approx(scores["fp32"], abs=0.02)
    with pytest.raises(SystemExit) as e:
        main(["predict", "--checkpoint", str(ckpt), str(img), "--precision", "fp8"])
    assert e.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err


def test_export_in_bf16(ckpt, tmp_path, capsys):
    out = {}
    for fmt, name in (("torchscript", "m.pt"), ("safetensors", "w.safetensors")):
        assert main(["export", "--checkpoint", str(ckpt), "--format", fmt, "--output", str(tmp_path / name),
                     "--precision", "bf16", "--json"]) == 0
        out[fmt] = json.loads(capsys.readouterr().out)
        assert out[fmt]["extra"]["precision"] == "bf16" and 0 < out[fmt]["extra"]["vs_fp32"] < 0.05
    assert out["torchscript"]["max_abs_diff"] <= out["torchscript"]["tolerance"]
    assert out["safetensors"]["max_abs_diff"] == 0  # the weights rounded to bfloat16, read back as they were
    assert json.loads((tmp_path / "w.json").read_text())["dtype"] == "bfloat16"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "safetensors", "--output", str(tmp_path / "f.safetensors")]) == 0
    assert (tmp_path / "w.safetensors").stat().st_size < 0.6 * (tmp_path / "f.safetensors").stat().st_size
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--output", str(tmp_path / "m.onnx"),
                 "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ONNX Runtime's CPU provider has no bfloat16" in err
