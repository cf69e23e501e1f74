"""Installable into a user's environment: pyproject declares torch / torchvision ranges (keeping the
torch a user has) from the floor pair to the newest tested one; the exact tested pair lives in
constraints.txt (`make test`), the floor pair in constraints-floor.txt (`make test-floor`), and
`make` installs each venv with its file."""

import re
import tomllib
from pathlib import Path

import torch
import torchvision
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parents[1]


def _deps() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {(r := Requirement(d)).name: r for d in project["dependencies"]}


def _installed(module) -> Version:
    return Version(module.__version__.split("+")[0])


def _pins(name: str) -> dict[str, str]:
    return dict(re.findall(r"^([a-z_-]+)==([\w.]+)$", (ROOT / name).read_text(), re.M))


def test_torch_and_torchvision_are_ranges_from_the_floor_to_the_tested_pair():
    deps = _deps()
    floor, top = _pins("constraints-floor.txt"), _pins("constraints.txt")
    for name, module, outside in (("torch", torch, ("2.3.1", "2.15.0")), ("torchvision", torchvision, ("0.18.1", "0.30.0"))):
        spec = deps[name].specifier
        assert not any(s.operator in ("==", "===") for s in spec), f"{name} is pinned in pyproject: {spec}"
        assert _installed(module) in spec
        assert Version(floor[name]) in spec and Version(top[name]) in spec  # both tested ends ...
        assert not any(Version(v) in spec for v in outside)  # ... are the ends
    assert (Version(floor["torch"]).release[:2], Version(floor["torchvision"]).release[:2]) == ((2, 4), (0, 19))
    assert "huggingface-hub" in {n.replace("_", "-") for n in deps}  # pretrained=True


def test_constraints_pin_the_installed_pair_and_make_uses_them():
    installed = {"torch": str(_installed(torch)), "torchvision": str(_installed(torchvision))}
    assert installed in (_pins("constraints.txt"), _pins("constraints-floor.txt"))
    install = [line for line in (ROOT / "Makefile").read_text().splitlines() if "pip install" in line and "-e" in line]
    venvs = {"$(BIN)/python": "-c constraints.txt", "$(FLOOR_BIN)/python": "-c constraints-floor.txt"}
    assert sorted(line.split()[0] for line in install) == sorted(venvs)
    assert all(venvs[line.split()[0]] in line for line in install)


def test_ci_runs_the_suite_on_both_pairs():
    make = (ROOT / "Makefile").read_text()
    assert "test-floor: $(FLOOR_STAMP)\n\t$(FLOOR_BIN)/python -m pytest -q\n" in make
    assert "$(FLOOR_STAMP): pyproject.toml constraints-floor.txt" in make
    steps = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert steps == ["make test", "make test-floor"]
