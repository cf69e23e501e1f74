"""The layer map of docs/architecture.md, checked: every import inside src/botnet (at module level
or inside a function) runs down the stack or stays inside its own subpackage."""

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "botnet"

# higher imports lower; equal ranks may not import each other (docs/architecture.md, "The package")
RANK = {"__main__": 10, "cli": 9, "experiments": 8, "export": 7, "inference": 7, "engine": 6, "detection": 5,
        "data": 4, "paper": 3.6, "counter": 3.5, "models": 3, "layers": 2, "config": 1.5, "recipes": 1.4,
        "compiling": 1.3, "checkpoint": 1.2, "compat": 0}


def _unit(module: str) -> str:
    """'botnet.engine.trainer' -> 'engine'; 'botnet' -> '' (the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported botnet module, line) of every import in ``path``, relative ones resolved."""
    rel = path.relative_to(SRC.parent).with_suffix("")
    package = list(rel.parts if path.name == "__init__.py" else rel.parts[:-1])
    if path.name == "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]) if node.level else node.module
            base = base.rstrip(".")
            if base == "botnet":  # `from botnet import x`: x is a subpackage or a lazy name; __version__ is a leaf
                found += [(f"botnet.{a.name}", node.lineno) for a in node.names if not a.name.startswith("__")]
            elif base.startswith("botnet."):
                found.append((base, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("botnet")]
    return found


def test_every_subpackage_has_a_rank():
    units = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert units == set(RANK), "add the new module to RANK and to docs/architecture.md's map"


def test_no_import_runs_up_a_layer():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        here = _unit("botnet." + ".".join(path.relative_to(SRC).with_suffix("").parts))
        if path.parent == SRC and path.stem == "__init__":
            continue  # the package root re-exports public names lazily
        for target, line in _imports(path):
            there = _unit(target)
            if there and there != here and RANK.get(there, 99) >= RANK[here]:
                upward.append(f"{path.relative_to(SRC)}:{line} imports {target}")
    assert not upward, "imports that run up a layer (docs/architecture.md):\n" + "\n".join(upward)
