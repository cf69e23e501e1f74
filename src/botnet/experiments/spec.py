"""Experiment specs: a sweep of ``botnet train`` runs over a recipe, as YAML.

A spec is a shipped name (``table5``, ``cpu_table4``; ``list_specs`` gives them) or a YAML file::

    base: demo                      # a recipe name or path (botnet.recipes.find_recipe)
    overrides: [optim.epochs=5]     # key=value for every run
    runs:                           # name -> overrides, or name -> {overrides, base, paper}
      r50: [model.name=resnet50]
      bot50: {overrides: [model.name=botnet50], paper: "BoT50 [1,1,1]"}
    grid:                           # key -> values: every combination (crossed with runs, if both)
      optim.lr: [0.004, 0.008]
    paper_table: "5"                # the paper's table the runs' ``paper`` labels are rows of
    metric: top1                    # the eval record's key the report and plot compare
    paper_metric: AP^bb             # the paper's column printed beside it

``expand`` turns it into ``RunSpec`` s: each one ordinary ``botnet train`` run in ``OUTPUT/<name>``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ..config import ConfigError, recipe_file

__all__ = ["SPEC_DIR", "RunSpec", "Experiment", "list_specs", "find_spec", "load_spec", "parse_spec", "SpecError"]

SPEC_DIR = Path(__file__).resolve().parent / "specs"
_KEYS = ("description", "base", "overrides", "runs", "grid", "paper_table", "metric", "paper_metric")
_RUN_KEYS = ("overrides", "base", "paper")


class SpecError(ConfigError):
    """A spec that cannot be used; the message says what was expected."""


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment: ``botnet train --config BASE --output DIR/NAME OVERRIDES...``;
    ``paper`` is (table, row label) of the paper's row it reproduces, if any."""

    name: str
    base: str
    overrides: tuple[str, ...]
    paper: tuple[str, str] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["overrides"], d["paper"] = list(self.overrides), list(self.paper) if self.paper else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(d["name"], d["base"], tuple(d["overrides"]), tuple(d["paper"]) if d.get("paper") else None)


@dataclass
class Experiment:
    name: str
    description: str
    runs: list[RunSpec]
    metric: str = "top1"
    paper_metric: str | None = None
    paper_table: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "metric": self.metric,
                "paper_metric": self.paper_metric, "paper_table": self.paper_table,
                "runs": [r.to_dict() for r in self.runs]}

    @classmethod
    def from_dict(cls, d: dict) -> "Experiment":
        return cls(d["name"], d.get("description", ""), [RunSpec.from_dict(r) for r in d["runs"]],
                   d.get("metric", "top1"), d.get("paper_metric"), d.get("paper_table"))

    def run(self, name: str) -> RunSpec:
        for r in self.runs:
            if r.name == name:
                return r
        raise SpecError(f"experiment {self.name!r} has no run {name!r}; its runs: {', '.join(r.name for r in self.runs)}")


def list_specs() -> list[tuple[str, str]]:
    """(name, first comment line) of every shipped spec, sorted."""
    out = []
    for p in sorted(SPEC_DIR.glob("*.yaml")):
        first = next((ln.lstrip("#").strip() for ln in p.read_text().splitlines() if ln.startswith("#")), "")
        out.append((p.stem, first))
    return out


def find_spec(name_or_path: str | Path) -> Path:
    """The file of a spec given by path (an existing file wins) or shipped name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path).removesuffix(".yaml")
    shipped = SPEC_DIR / f"{name}.yaml"
    if "/" not in name and shipped.is_file():
        return shipped
    names = ", ".join(n for n, _ in list_specs())
    raise SpecError(f"experiment {str(name_or_path)!r} not found: expected a YAML file or a shipped name ({names})")


def load_spec(name_or_path: str | Path) -> Experiment:
    """Read and expand a spec (``find_spec``); errors are ``SpecError`` naming the key."""
    path = find_spec(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML ({e})") from None
    return parse_spec(data, path.stem, base_dir=path.parent)


def _overrides(value, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise SpecError(f"{where}: expected a list of key=value strings, got {value!r}")
    return tuple(v.strip() for v in value)


def _run_name(name: str) -> str:
    """A folder name: brackets, braces, quotes and spaces dropped, anything else unusual made '_'."""
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", re.sub(r"[\s\[\]{}'\"]", "", name))


def _base(value, where: str, base_dir: Path | None) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where}: expected a recipe name or path (e.g. demo, detection/coco_3x_1024), got {value!r}")
    if base_dir is not None and not Path(value).is_absolute() and (base_dir / value).is_file():
        value = str(base_dir / value)
    try:
        recipe_file(value)
    except ConfigError as e:
        raise SpecError(f"{where}: {e}") from None
    return value


def _paper(value, table: str | None, where: str) -> tuple[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecError(f"{where}: expected a paper row label (\"BoT50\" or \"TABLE:LABEL\"), got {value!r}")
    if ":" in value:
        t, label = value.split(":", 1)
        return t.strip(), label.strip()
    if table is None:
        raise SpecError(f"{where}: {value!r} names no table; give paper_table or write \"TABLE:{value}\"")
    return table, value


def _runs(data: dict, base: str | None, table: str | None, base_dir: Path | None) -> list[tuple[str, str, tuple, tuple | None]]:
    runs = data.get("runs")
    if runs is None:
        if base is None:
            raise SpecError("spec: expected 'base' (a recipe) and 'runs' and/or 'grid'")
        return [("", base, (), None)]
    if not isinstance(runs, dict) or not runs:
        raise SpecError(f"runs: expected a mapping of run name -> list of key=value, got {runs!r}")
    out = []
    for name, value in runs.items():
        where = f"runs.{name}"
        if not isinstance(value, dict):
            value = {"overrides": value}
        unknown = set(value) - set(_RUN_KEYS)
        if unknown:
            raise SpecError(f"{where}: unknown key(s) {sorted(unknown)}; expected {', '.join(_RUN_KEYS)}")
        run_base = _base(value["base"], f"{where}.base", base_dir) if "base" in value else base
        if run_base is None:
            raise SpecError(f"{where}: no recipe: give the spec a 'base' or the run one")
        out.append((str(name), run_base, _overrides(value.get("overrides"), f"{where}.overrides"),
                    _paper(value.get("paper"), table, f"{where}.paper")))
    return out


def _grid(data: dict) -> list[tuple[str, ...]]:
    grid = data.get("grid")
    if grid is None:
        return [()]
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise SpecError(f"grid: expected a mapping of key -> non-empty list of values, got {grid!r}")
    keys = list(grid)
    return [tuple(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                  for k, v in zip(keys, combo)) for combo in itertools.product(*grid.values())]


def parse_spec(data, name: str, base_dir: Path | None = None) -> Experiment:
    """An ``Experiment`` from a spec mapping (see the module docstring)."""
    if not isinstance(data, dict):
        raise SpecError(f"{name}: expected a mapping with base, overrides, runs and/or grid, got {type(data).__name__}")
    unknown = set(data) - set(_KEYS)
    if unknown:
        raise SpecError(f"unknown key(s) {sorted(unknown)} in experiment {name!r}; expected {', '.join(_KEYS)}")
    table = None if data.get("paper_table") is None else str(data["paper_table"])
    base = _base(data["base"], "base", base_dir) if "base" in data else None
    common = _overrides(data.get("overrides"), "overrides")
    runs = []
    for run_name, run_base, run_over, paper in _runs(data, base, table, base_dir):
        for combo in _grid(data):
            label = ",".join(o.replace("/", "_") for o in combo)
            full = "-".join(p for p in (run_name, label) if p) or "run"
            runs.append(RunSpec(_run_name(full), run_base, common + run_over + combo, paper))
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"{name}: run names {dup} are not unique")
    metric = data.get("metric", "top1")
    if not isinstance(metric, str):
        raise SpecError(f"metric: expected an eval record key (top1, bbox_AP, ...), got {metric!r}")
    return Experiment(name, str(data.get("description") or ""), runs, metric,
                      None if data.get("paper_metric") is None else str(data["paper_metric"]), table)
