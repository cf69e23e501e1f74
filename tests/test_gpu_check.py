"""benchmarks/gpu_check.sh is ready for its first GPU: the shell parses, and its Python parts run on
the CPU at toy sizes (``--device cpu --tiny``) and render the section it writes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, **kw):
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *args], capture_output=True,
                          text=True, timeout=300, env=env, **kw)


def test_shell_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)


def test_kernels_part_and_report_run_on_cpu(tmp_path):
    r = _run("kernels", "--device", "cpu", "--tiny", "--json", str(tmp_path / "kernels.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "kernels.json").read_text())
    case = res["cases"]["2×4²"]
    assert all(e["ok"] for e in case["exact"].values()), case["exact"]
    assert case["timing"]["infer"]["fastest"] in case["exact"]
    assert res["backends"]["torch.bfloat16"]["flash_attention padded"] == "ok"
    (tmp_path / "kernels.rc").write_text("0\n")
    (tmp_path / "nccl.rc").write_text("124\n")  # a part that timed out is named, the rest reported
    r = _run("report", "--device", "cpu", "--tiny", "--results", str(tmp_path), "--no-doc")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "nccl: did not finish** (exit 124" in r.stdout and "| 2×4² | sdpa_fold |" in r.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_refuses_cuda_without_a_gpu():
    r = _run("kernels")
    assert r.returncode == 2 and "no CUDA device" in r.stderr
