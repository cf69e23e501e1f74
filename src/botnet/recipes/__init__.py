"""The YAML recipes shipped with botnet, addressed by name.

A recipe is named by its path under this folder without ``.yaml``: ``demo``, ``table14_t7``,
``detection/coco_3x_1024``. ``find_recipe`` turns a name or a file path into a file;
``list_recipes`` gives every shipped name with its one-line description (the first comment
line of the file). This module imports nothing of botnet's, so ``botnet.config`` can read
recipes through it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RECIPE_DIR", "find_recipe", "list_recipes", "recipe_names"]

RECIPE_DIR = Path(__file__).resolve().parent


def recipe_names() -> list[str]:
    """Every shipped recipe's name, sorted: ``["demo", "detection/base_coco", ...]``."""
    return sorted(p.relative_to(RECIPE_DIR).with_suffix("").as_posix() for p in RECIPE_DIR.rglob("*.yaml"))


def find_recipe(name_or_path: str | Path) -> Path | None:
    """The file of a recipe given by path (an existing file wins) or by shipped name (``demo``,
    ``detection/demo``, with or without ``.yaml``); None when neither exists."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path).removesuffix(".yaml").strip("/")
    if not name or ".." in Path(name).parts or Path(name).is_absolute():
        return None
    shipped = RECIPE_DIR / f"{name}.yaml"
    return shipped if shipped.is_file() else None


def describe(path: Path) -> str:
    """The first comment line of a recipe file, without its '#'."""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line:
            break
    return ""


def list_recipes() -> list[tuple[str, str]]:
    """(name, one-line description) of every shipped recipe, sorted by name."""
    return [(name, describe(RECIPE_DIR / f"{name}.yaml")) for name in recipe_names()]
