"""The README's detection demo, run as written: its mask AP50 on the built-in held-out split is pinned."""

from pathlib import Path

import pytest
from runs import train_recipe

REPO = Path(__file__).parents[2]
# Measured on 2026-12-03 (AMD EPYC, 2 cores) from a clean clone with `make det-demo` (README, "Detection demo"):
# segm and bbox AP50 on the 200 val scenes.
README_SEGM_AP50 = 16.23
README_BBOX_AP50 = 24.99
MARGIN = 7.0  # AP points: other CPUs and thread counts change float summation order


@pytest.mark.slow
@pytest.mark.demo
def test_detection_demo_reaches_the_readme_ap(tmp_path):
    res = train_recipe("detection/demo", tmp_path, timeout=1500)
    assert res["count"] == 200
    assert res["segm_AP50"] >= README_SEGM_AP50 - MARGIN, res
    assert res["bbox_AP50"] >= README_BBOX_AP50 - MARGIN, res
