"""The README's detection demo, run as `make det-demo` runs it: a backbone pretrained by classification on
the built-in shapes, Mask R-CNN fine-tuned from it, then its drawn predictions. Its AP50 on the 200
held-out scenes and the recall on the 8 drawn scenes are pinned."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runs import train_recipe

REPO = Path(__file__).parents[2]
# Measured on 2026-12-07 (AMD EPYC, 2 cores) from a clean clone with `make det-demo` (README, "Detection demo"):
# segm and bbox AP50 on the 200 val scenes.
README_SEGM_AP50 = 45.04
README_BBOX_AP50 = 53.18
MARGIN = 7.0  # AP points: other CPUs and thread counts change float summation order; two seeds differed by 3.5
# Ground-truth objects larger than 16 x 16 px found at IoU 0.5 with score >= 0.5 on the 8 drawn scenes: 8 of 16
# measured with the numbers above (issue 24's target, 80 %, is not met: README, "Detection demo").
README_FOUND, README_COUNTED = 8, 16
FOUND_MARGIN = 3  # objects


@pytest.mark.slow
@pytest.mark.demo
def test_detection_demo_reaches_the_readme_ap_and_finds_the_drawn_objects(tmp_path):
    train_recipe("det_demo_backbone", tmp_path, 900, output="backbone")
    res = train_recipe("detection/demo", tmp_path, 1500, f"model.backbone_weights={tmp_path / 'backbone' / 'last.pt'}")
    assert res["count"] == 200
    assert res["segm_AP50"] >= README_SEGM_AP50 - MARGIN, res
    assert res["bbox_AP50"] >= README_BBOX_AP50 - MARGIN, res

    val = sorted((tmp_path / "cache").glob("coco-shapes-*/val/*.png"))[:8]  # the scenes make det-demo draws
    env = dict(os.environ, BOTNET_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "botnet", "predict", "--checkpoint", str(tmp_path / "run" / "last.pt"),
           "--output", str(tmp_path / "pred"), *map(str, val)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert len(records) == 8 and all(Path(r["drawn"]).is_file() for r in records)
    counted = sum(r["ground_truth"]["counted"] for r in records)
    found = sum(r["ground_truth"]["found"] for r in records)
    assert counted == README_COUNTED, [r["ground_truth"] for r in records]
    assert found >= README_FOUND - FOUND_MARGIN, [r["ground_truth"] for r in records]
