"""The installed torch/torchvision pair works: torchvision's compiled ops run (the install trap:
a CPU-only torch wheel beside a registry torchvision breaks them); and on the floor pair, pip
installs botnet beside the torch a user has instead of replacing it."""

import json
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.ops import nms, roi_align

ROOT = Path(__file__).parents[1]


def _installed_pair() -> dict[str, str]:
    return {name: version(name).split("+")[0] for name in ("torch", "torchvision")}


def test_torchvision_ops_run():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32)
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    out = roi_align(torch.arange(16.0).reshape(1, 1, 4, 4), [torch.tensor([[0.0, 0.0, 3.0, 3.0]])], output_size=2)
    assert out.shape == (1, 1, 2, 2)


def test_versions_are_a_pair():
    tv = tuple(int(x) for x in torchvision.__version__.split("+")[0].split(".")[:2])
    t = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    # torchvision 0.(N+15) is built for torch 2.N
    assert tv[0] == 0 and t[0] == 2 and tv[1] == t[1] + 15, (torch.__version__, torchvision.__version__)


FLOOR = {"torch": "2.4.1", "torchvision": "0.19.1"}


def _copy_checkout(dest: Path) -> Path:
    """The files pip builds botnet from (a copy: an in-tree build would leave build/ in the checkout)."""
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.mark.skipif(_installed_pair() != FLOOR,
                    reason="needs the floor pair (torch 2.4.1 + torchvision 0.19.1) installed: runs in `make test-floor`")
def test_pip_install_beside_the_floor_pair_keeps_its_torch(tmp_path):
    """A user's environment with torch 2.4.1 + torchvision 0.19.1: ``pip install <checkout>``
    resolves botnet's requirements against it and installs botnet alone, leaving torch as it was.

    The environment is a fresh venv layered over this one (a .pth adds this venv's site-packages,
    so pip sees its torch, torchvision and the other dependencies as installed, and cannot remove
    them: they lie outside its environment). The dry run's report lists what pip would install."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site_dir = next((env / "lib").glob("python3.*/site-packages"))
    (site_dir / "floor.pth").write_text(f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n")
    python = env / "bin" / "python"
    checkout = _copy_checkout(tmp_path / "checkout")
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    report = subprocess.run([*pip, "--dry-run", "--report", "-", str(checkout)],
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    planned = {i["metadata"]["name"]: i["metadata"]["version"] for i in json.loads(report.stdout)["install"]}
    assert planned == {"botnet": "0.1.0"}, f"pip would also install {planned}"
    done = subprocess.run([*pip, str(checkout)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = ("import json, torch, torchvision, botnet; print(json.dumps([torch.__version__.split('+')[0], "
             "torchvision.__version__.split('+')[0], botnet.__file__]))")
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    torch_v, tv_v, botnet_file = json.loads(out.stdout)
    assert {"torch": torch_v, "torchvision": tv_v} == FLOOR
    assert Path(botnet_file).is_relative_to(site_dir)  # the installed copy, not the checkout
    assert _installed_pair() == FLOOR  # and this environment's torch untouched
