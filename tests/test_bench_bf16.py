"""benchmarks/bf16.py: the quick run measures every way, and the quality part reads runs and renders."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))  # benchmarks/ is not installed

import bf16  # noqa: E402


def test_quick_run_times_every_way(capsys):
    assert bf16.main(["--quick", "--no-doc", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for way in bf16.WAYS:
        assert f"| botnet_tiny | 64 | 2 | {way} |" in out
    assert "| botnet_tiny | 64 | 2 | bf16 autocast |" in out.split("Training step")[1]
    assert "Target: `bf16` at least 1.6x" in out and "native bfloat16:" in out
    assert "botnet_tiny batch 2: " in out and "aten ops a call" in out
    assert bf16.main(["--rounds", "0", "--no-doc"]) == 2


def test_runs_are_read_per_epoch_and_rendered(tmp_path):
    runs = {}
    for name, top1 in (("fp32", 60.0), ("bf16", 61.5)):
        d = tmp_path / name
        d.mkdir()
        recs = []
        for ep in range(2):
            recs += [{"kind": "step", "step": 5, "epoch": ep, "loss": 2.0},
                     {"kind": "epoch", "step": 10, "epoch": ep, "train_loss": 2.0 - ep},
                     {"kind": "eval", "step": 10, "epoch": ep, "loss": 1.5 - ep / 2, "top1": top1 + ep}]
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
        runs[name] = bf16.read_run(d)
    assert runs["fp32"] == [{"epoch": 0, "train_loss": 2.0, "val_loss": 1.5, "val_top1": 60.0},
                            {"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_top1": 61.0}]
    det = {p: {"bbox": {"AP": ap, "AP50": 50.0}, "segm": {"AP": 20.0, "AP50": 40.0}, "seconds": 3.0, "count": 8,
               "model": "m"} for p, ap in (("fp32", 30.0), ("bf16", 30.7))}
    agree = {"images": 10, "agreement": 0.99, "top1_fp32": 0.5, "top1_bf16": 0.5, "model": "m", "img_size": 64}
    text = "\n".join(bf16.render_quality(agree, det, runs))
    assert "**99.0%** (target 99%: met)" in text
    assert "bbox 0.70, segm 0.00 (target within 0.5: NOT met)" in text
    assert "| bf16 | 2 | 1.0000 | 1.0000 | 62.5 | 62.5 |" in text
    bf16.draw_curves(runs, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
