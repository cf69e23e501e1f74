"""The shipped recipes: found by name or path, each with a one-line description, listed by
``botnet recipes``."""

import json

import pytest

from botnet.cli import main
from botnet.config import load_config
from botnet.recipes import RECIPE_DIR, find_recipe, list_recipes, recipe_names


def test_names_cover_every_yaml_file():
    files = sorted(RECIPE_DIR.rglob("*.yaml"))
    assert len(recipe_names()) == len(files) >= 19
    assert {"demo", "table14_t7", "detection/demo", "detection/coco_3x_1024"} <= set(recipe_names())


def test_find_recipe_by_name_or_path(tmp_path, monkeypatch):
    assert find_recipe("demo") == find_recipe("demo.yaml") == RECIPE_DIR / "demo.yaml"
    assert find_recipe("detection/coco_3x_1024") == RECIPE_DIR / "detection" / "coco_3x_1024.yaml"
    for bad in ("nosuch", "", "../pyproject", "/nonexistent/demo.yaml", "detection"):
        assert find_recipe(bad) is None, bad
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text("model:\n  name: botnet50\n")  # an existing file wins over a name
    assert find_recipe("demo").resolve() == tmp_path / "demo"
    assert load_config("demo").model.name == "botnet50"
    assert load_config(str(RECIPE_DIR / "demo.yaml")).model.name == load_config("demo.yaml").model.name == "botnet_tiny"


@pytest.mark.parametrize("name,desc", list_recipes())
def test_every_recipe_has_a_one_line_description(name, desc):
    """The first comment line of each file is a complete line of at most 100 characters."""
    assert 20 <= len(desc) <= 100, (name, desc)
    assert desc[0].isupper() and not desc.endswith((",", ":", ";", "-", "(")), (name, desc)
    assert desc.count("(") == desc.count(")") and desc.count("[") == desc.count("]"), (name, desc)


def test_recipes_command(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [(line.split()[0], line.split(None, 1)[1]) for line in lines] == list_recipes()
    assert main(["recipes", "detection/coco_*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [n for n in recipe_names() if n.startswith("detection/coco_")]
    assert all(find_recipe(r["path"]) is not None and r["description"] for r in rows)
    assert main(["recipes", "nosuch*"]) == 2
    assert capsys.readouterr().err.startswith("botnet recipes: no shipped recipe matches 'nosuch*'")


def test_unknown_recipe_is_one_line_exit_2(tmp_path, capsys):
    assert main(["train", "--config", "tabel14_t7", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "recipe 'tabel14_t7' not found" in err and "botnet recipes" in err
