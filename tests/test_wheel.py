"""The wheel: built from a copy of the checkout, it holds every recipe, and installed without the
checkout anywhere on the path, its ``botnet`` command lists the recipes and trains two steps of
``demo`` named only, from an empty directory.

The install reuses this interpreter's heavy dependencies (torch, torchvision, ...) without the
development install: a bare venv whose site-packages holds the wheel (``pip install --no-deps
--target``) and a ``.pth`` line naming this environment's site-packages as a plain path, so the
packages there import but its ``.pth`` files (the editable install's path to the checkout) are not read.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from botnet.recipes import list_recipes, recipe_names

ROOT = Path(__file__).parents[1]


def _run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline (no build isolation: setuptools from this environment) from a copy of
    the sources, so the build leaves nothing (build/, *.egg-info) in the checkout."""
    pytest.importorskip("setuptools", reason="building without isolation needs the build backend in this environment")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out),
          str(src)], cwd=src)
    (whl,) = out.glob("botnet-*.whl")
    return whl


def test_wheel_holds_every_recipe(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in recipe_names() if f"botnet/recipes/{n}.yaml" not in names]
    assert recipe_names() and not missing, missing


def test_installed_wheel_trains_the_demo_by_name(wheel, tmp_path, tiny_data):
    venv, empty = tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=empty)
    python = venv / "bin" / "python"
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co., not the editable botnet
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)], cwd=empty)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(BOTNET_CACHE=str(tmp_path / "cache"), PYTHONDONTWRITEBYTECODE="1")
    where = _run([str(python), "-c", "import botnet, sys; print(botnet.__file__); print(*sys.path, sep='\\n')"],
                 cwd=empty, env=env).stdout.splitlines()
    assert Path(where[0]).is_relative_to(site), where
    # nothing of the checkout on the path (the venv the suite runs in may live inside the checkout)
    assert not [p for p in where[1:] if p and Path(p).resolve() in (ROOT.resolve(), (ROOT / "src").resolve())], where
    botnet_cmd = site / "bin" / "botnet"  # the wheel's console script
    listed = _run([str(python), str(botnet_cmd), "recipes"], cwd=empty, env=env).stdout.splitlines()
    assert [line.split()[0] for line in listed] == recipe_names()
    assert [line.split(None, 1)[1] for line in listed] == [d for _, d in list_recipes()]
    _run([str(python), str(botnet_cmd), "train", "--config", "demo", "--output", "run", "--data", tiny_data,
          "run.max_steps=2", "data.img_size=32", "data.eval_size=32", "data.workers=0", "optim.batch_size=16",
          "run.log_every=1", "run.amp=none"], cwd=empty, env=env)
    assert sorted(p.name for p in empty.iterdir()) == ["run"]  # everything written under --output
    assert (empty / "run" / "last.pt").is_file() and (empty / "run" / "metrics.jsonl").is_file()
    steps = [line for line in (empty / "run" / "metrics.jsonl").read_text().splitlines() if '"kind": "step"' in line]
    assert len(steps) == 2, steps
