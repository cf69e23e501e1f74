"""The benchmark suite (benchmarks/suite, run by benchmarks/run.py): same math as timm and
lucidrains, a quick run, the doc writer."""

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("bottleneck_transformer_pytorch")

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))  # benchmarks/ is not installed

from run import main  # noqa: E402
from suite.mhsa import IMPLS, check_same_math, lucidrains_like, timm_like  # noqa: E402
from suite.report import markers, write_doc  # noqa: E402
from botnet.layers import MHSA2d  # noqa: E402


@pytest.mark.parametrize("size", [(4, 4), (3, 5), (6, 2)])
def test_same_math_as_timm_and_lucidrains(size):
    d = check_same_math(dim=16, heads=2, size=size, batch=2, seed=size[0])  # raises beyond 1e-4
    for name in ("timm", "timm default adjusted", "lucidrains", "candidate fold_padv"):
        assert max(d[name].values()) < 1e-5, (name, d[name])
    # timm's default (position logits from the unscaled q) is another function of the same weights
    assert d["timm default unadjusted"]["out"] > 1e-2


def test_weight_gradients_match():
    torch.manual_seed(0)
    ours = MHSA2d(16, 2, feat_size=(3, 5), kernel="reference")
    peers = {"timm": (timm_like(ours), "qkv", "pos_embed.height_rel", "pos_embed.width_rel"),
             "lucidrains": (lucidrains_like(ours), "to_qkv", "pos_emb.rel_height", "pos_emb.rel_width")}
    x, g = torch.randn(2, 16, 3, 5), torch.randn(2, 16, 3, 5)
    ours(x).backward(g)
    for name, (m, qkv, rh, rw) in peers.items():
        m(x).backward(g)
        params = dict(m.named_parameters())
        torch.testing.assert_close(params[qkv + ".weight"].grad, ours.qkv.weight.grad, atol=1e-5, rtol=1e-4, msg=name)
        torch.testing.assert_close(params[rh].grad, ours.pos.rel_height.grad, atol=1e-5, rtol=1e-4, msg=name)
        torch.testing.assert_close(params[rw].grad, ours.pos.rel_width.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_quick_mhsa_run(capsys):
    assert main(["mhsa", "--quick", "--device", "cpu", "--json", "--no-doc"]) == 0
    res = json.loads(capsys.readouterr().out)["mhsa"]
    rows = res["rows"]
    assert {r["case"] for r in rows} == {"8×14²"} and {r["mode"] for r in rows} == {"train", "infer"}
    for r in rows:
        assert r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["runs"] >= 3
        if r["impl"] in ("matmul floor", "matmul+softmax floor"):
            assert r["gmac"] > 0 and r["gflops"] > 0
            continue
        assert r["impl"] in IMPLS and r["peak_mib"] is not None and r["peak_mib"] > 0, r
        assert r["speedup_vs_timm"] > 0 and r["speedup_vs_lucidrains"] > 0
        assert r["matmul_share"] > 0 and r["softmax_floor_share"] > 0
        assert (r["kernel"] is None) == (not r["impl"].startswith("ours:"))
    timm = [r for r in rows if r["impl"] == "timm"]
    assert all(r["speedup_vs_timm"] == 1.0 for r in timm)
    assert max(res["case_agreement"]["8×14²"].values()) < 1e-4
    assert res["command"] == "python benchmarks/run.py mhsa --device cpu --quick --json --no-doc"


def test_write_doc_replaces_only_between_markers(tmp_path):
    path = tmp_path / "benchmarks.md"
    b, e = markers("mhsa:cpu")
    b2, e2 = markers("mhsa:cuda")
    path.write_text(f"# Title\nintro\n{b}\nold table\n{e}\nmiddle text\n{b2}\nmodels table\n{e2}\ntail\n")
    write_doc(path, {"mhsa:cpu": "new table\n| a |"})
    assert path.read_text() == f"# Title\nintro\n{b}\nnew table\n| a |\n{e}\nmiddle text\n{b2}\nmodels table\n{e2}\ntail\n"
    write_doc(path, {"models:cpu": "pair"})  # no markers yet: appended with new ones
    b3, e3 = markers("models:cpu")
    assert path.read_text().endswith(f"tail\n\n{b3}\npair\n{e3}\n")


def test_bench_cli_errors(capsys):
    assert main(["nosuchpart", "--no-doc"]) == 2
    assert "unknown part" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--device", "tpu"])
