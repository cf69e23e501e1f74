"""The README's classification demo (`make demo`'s training), run as written: its held-out top-1 is pinned."""

from pathlib import Path

import pytest
from runs import train_recipe

REPO = Path(__file__).parents[2]
# Measured on 2026-12-03 (AMD EPYC, 2 cores) from a clean clone with `make demo` (README, "The demo"):
# top-1 / top-5 on the 1000 held-out images of the built-in shapes set.
README_TOP1 = 80.5
README_TOP5 = 99.6
# Other CPUs round differently and take another path from scratch: 73.6 / 99.1 on 2026-11-24 and 68.1
# on another machine with the same recipe, so the margin is wide; chance is 10 / 50.
TOP1_MARGIN = 15.0
TOP5_MARGIN = 4.0


@pytest.mark.slow
@pytest.mark.demo
def test_classification_demo_reaches_the_readme_accuracy(tmp_path):
    res = train_recipe("demo", tmp_path, timeout=1800)
    assert res["count"] == 1000 and res["epoch"] == 29, res  # epochs count from 0 in every record
    assert res["top1"] >= README_TOP1 - TOP1_MARGIN, res
    assert res["top5"] >= README_TOP5 - TOP5_MARGIN, res
