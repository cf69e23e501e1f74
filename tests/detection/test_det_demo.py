"""The README's detection demo, run as written: its mask AP50 on the built-in held-out split is pinned."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
# Measured on 2026-12-03 (AMD EPYC, 2 cores) from a clean clone with `make det-demo` (README, "Detection demo"):
# segm and bbox AP50 on the 200 val scenes.
README_SEGM_AP50 = 16.23
README_BBOX_AP50 = 24.99
MARGIN = 7.0  # AP points: other CPUs and thread counts change float summation order


@pytest.mark.slow
@pytest.mark.demo
def test_detection_demo_reaches_the_readme_ap(tmp_path):
    env = dict(os.environ, BOTNET_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "det_demo"
    cmd = [sys.executable, "-m", "botnet", "train", "--config", str(REPO / "configs/detection/demo.yaml"),
           "--output", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["count"] == 200
    assert res["segm_AP50"] >= README_SEGM_AP50 - MARGIN, res
    assert res["bbox_AP50"] >= README_BBOX_AP50 - MARGIN, res
