"""benchmarks/gpu_check.sh is ready for its first GPU: the shell parses, and its Python parts run on
the CPU at toy sizes (``--device cpu --tiny``) and render the section it writes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=300, **kw):
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, **kw)


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


def test_vs_timm_part_times_both_eager_and_compiled_on_cpu(tmp_path):
    js = tmp_path / "vs_timm.json"
    # four torch.compile traces (timm and ours, inference and training): minutes on a busy 2-core machine
    r = _run("vs-timm", "--device", "cpu", "--tiny", "--json", str(js), timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(js.read_text())
    impls = {(x["mode"], x["impl"]) for x in res["rows"]}
    assert impls == {(m, f"{w} {e}") for m in ("infer", "train") for w in ("timm", "ours") for e in ("eager", "compiled")}
    assert all(x["max_rel_diff"] < 1e-4 and x["median_ms"] > 0 for x in res["rows"])
    assert all(x["vs_timm_same"] == 1.0 for x in res["rows"] if x["impl"].startswith("timm"))
    (tmp_path / "vs_timm.rc").write_text("0\n")
    r = _run("report", "--device", "cpu", "--tiny", "--results", str(tmp_path), "--no-doc")
    assert "### Ours vs timm, same weights, bf16 autocast, eager and torch.compile (eager)" in r.stdout
    assert "| botnet26t_256 | train | 2 | ours compiled |" in r.stdout
