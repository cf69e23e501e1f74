"""The benchmark scripts of issue 11 run (tiny sizes, document untouched) and refuse bad arguments."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script, *args):
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=600, env=env)


def test_input_pipeline_measures_every_source_and_decoder():
    r = _run("input_pipeline.py", "--images", "10", "--repeats", "2", "--no-doc", "--gpu-images-per-s", "1000")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| ImageFolder | PIL |" in r.stdout and "| 1.00 |" in r.stdout.split("| ImageFolder | PIL |")[1].splitlines()[0]
    assert "2 passes over the 10 images per row" in r.stdout
    for row in ("| ImageFolder | PIL |", "| ImageFolder | decode_jpeg (CPU) |", "| shards (wids) | PIL |",
                "| shards (wids) | decode_jpeg (CPU) |"):
        assert row in r.stdout
    assert "An 8-GPU Table 11 run at 1000 images/s per GPU needs" in r.stdout


def test_bad_arguments_are_one_line_errors():
    r = _run("input_pipeline.py", "--images", "3")
    assert r.returncode == 2 and r.stderr.strip() == "input_pipeline: --images must be >= 10 and --repeats >= 1"
    r = _run("input_pipeline.py", "--repeats", "0")
    assert r.returncode == 2 and r.stderr.strip() == "input_pipeline: --images must be >= 10 and --repeats >= 1"
    r = _run("restart_cycle.py", "--cycles", "0")
    assert r.returncode == 2 and r.stderr.strip() == "restart_cycle: --cycles and --kill-at must be >= 1"
