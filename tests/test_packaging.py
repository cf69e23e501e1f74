"""Installable into a user's environment: pyproject declares torch / torchvision ranges (keeping the
torch a user has), the exact tested pair lives in constraints.txt, and `make` installs with it."""

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


def test_torch_and_torchvision_are_ranges_holding_the_tested_pair():
    deps = _deps()
    for name, module, older in (("torch", torch, "2.14.0"), ("torchvision", torchvision, "0.29.0")):
        spec = deps[name].specifier
        assert not any(s.operator in ("==", "===") for s in spec), f"{name} is pinned in pyproject: {spec}"
        assert _installed(module) in spec and Version(older) in spec  # the tested pair, and another build of its minors
    assert "huggingface-hub" in {n.replace("_", "-") for n in deps}  # pretrained=True


def test_constraints_pin_the_installed_pair_and_make_uses_them():
    pins = dict(re.findall(r"^([a-z_-]+)==([\w.]+)$", (ROOT / "constraints.txt").read_text(), re.M))
    assert pins == {"torch": str(_installed(torch)), "torchvision": str(_installed(torchvision))}
    install = [line for line in (ROOT / "Makefile").read_text().splitlines() if "pip install" in line and "-e" in line]
    assert install and all("-c constraints.txt" in line for line in install)
