"""The vs-timm part of the benchmark suite (benchmarks/suite/vs_timm.py): same weights, a quick run,
the targets' verdicts."""

import json
import sys
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))  # benchmarks/ is not installed

from run import main  # noqa: E402
from suite.report import render_part  # noqa: E402
from suite.vs_timm import perturbed_state_dict, vs_timm_targets  # noqa: E402


def test_perturbed_state_dict_moves_every_float_tensor():
    model = timm.create_model("botnet26t_256", img_size=64)
    sd, new = model.state_dict(), perturbed_state_dict(model)
    assert sd.keys() == new.keys()
    for k, v in sd.items():
        if v.is_floating_point():
            assert not torch.equal(v, new[k]), k
        else:
            assert torch.equal(v, new[k]), k
    assert all((new[k] > 0).all() for k in new if k.endswith("running_var"))


def test_quick_vs_timm_run(capsys):
    assert main(["vs-timm", "--quick", "--device", "cpu", "--json", "--no-doc"]) == 0
    res = json.loads(capsys.readouterr().out)["vs-timm"]
    got = {(r["mode"], r["impl"]) for r in res["rows"]}
    assert got == {("infer", "timm"), ("infer", "timm, channels_last"), ("infer", "ours"),
                   ("infer", "ours, BN folded + channels_last"), ("train", "timm"), ("train", "timm, channels_last"),
                   ("train", "ours"), ("train", "ours, channels_last")}
    for r in res["rows"]:
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["runs"] >= 3
        assert r["max_rel_diff"] < 1e-4, r
        if r["impl"] in ("timm", "ours"):
            assert 0 < r["profile"]["conv_share"] <= 1 and r["profile"]["top"]
    assert all(r["speedup"] == 1.0 for r in res["rows"] if r["impl"] == "timm")
    text = render_part(res)
    assert "| botnet26t_256 | train | 2 | ours, channels_last |" in text and "Targets:" in text


def _row(impl, ms, conv_ms=None):
    prof = None if conv_ms is None else {"total_ms": ms, "conv_ms": conv_ms, "conv_share": conv_ms / ms, "top": []}
    return {"model": "m", "mode": "infer", "batch": 16, "impl": impl, "median_ms": ms, "speedup": 100.0 / ms,
            "profile": prof}


def test_targets_take_the_fastest_of_ours_and_name_the_convolution_bound():
    res = {"target": 1.15, "rows": [_row("timm", 100.0, 80.0), _row("timm, channels_last", 50.0), _row("ours", 95.0, 80.0),
                                    _row("ours, BN folded + channels_last", 90.0)]}
    (t,) = vs_timm_targets(res)
    assert t["met"] is False and t["target"] == "m infer batch 16 ≥ 1.15× timm"
    assert "ours, BN folded + channels_last: 1.11× timm" in t["detail"] and "0.56× timm in channels_last" in t["detail"]
    assert "ours could be at most 1.25× timm" in t["detail"]  # timm's 100 ms over ours' 80 ms of convolutions
    res["rows"][-1].update(median_ms=80.0, speedup=1.25)
    (t,) = vs_timm_targets(res)
    assert t["met"] is True and "at most" not in t["detail"]
