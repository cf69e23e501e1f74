"""The compile part of the benchmark suite (benchmarks/suite/compiled.py): its table and targets
from a result dict (a run compiles BoT50 for minutes; `python benchmarks/run.py compile --quick`
is the smoke run)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))  # benchmarks/ is not installed

from suite.compiled import compile_targets, render_compile  # noqa: E402


def _row(impl, ms):
    return {"model": "m", "size": 64, "batch": 16, "impl": impl, "median_ms": ms, "min_ms": ms, "max_ms": ms,
            "runs": 3, "speedup": 100.0 / ms, "max_rel_diff": 0.0}


def _res(static_ms, dynamic_s):
    return {"target": 1.3, "dynamic_limit_s": 180.0,
            "rows": [_row("eager", 100.0), _row("eager, channels_last", 90.0), _row("static", static_ms),
                     _row("batch dynamic", static_ms + 1)],
            "compiles": [{"model": "m", "what": "static, batch 16", "seconds": 50.0},
                         {"model": "m", "what": "dynamic=True, batch 2", "seconds": dynamic_s,
                          "error": None if dynamic_s else "timed out after 180 s"}],
            "profiles": [{"model": "m", "batch": 16, "total_ms": 90.0, "conv_ms": 80.0, "conv_share": 80 / 90,
                          "top": [("aten::mkldnn_convolution", 80.0)]}]}


def test_targets_name_the_convolution_bound_and_a_dynamic_compile_that_did_not_finish():
    speed, dyn = compile_targets(_res(85.0, None))
    assert speed["met"] is False and speed["target"].startswith("m batch 16 compiled ≥ 1.3× eager")
    assert "static: 1.06× the faster eager row (eager, channels_last, 85 vs 90 ms), 1.18× eager as built" in speed["detail"] and "at most 1.12× eager channels_last" in speed["detail"]
    assert dyn["met"] is False and "did not finish in 180 s" in dyn["detail"]
    speed, dyn = compile_targets(_res(65.0, 100.0))
    assert speed["met"] is True and "at most" not in speed["detail"] and dyn["met"] is True
    text = "\n".join(render_compile(_res(85.0, None)))
    assert "| m | dynamic=True, batch 2 | did not finish in 180 s |" in text
    assert "| m | 64 | 16 | static | 85.0 |" in text and "convolutions 80 of 90 ms (89%)" in text
