"""Recipes and overrides: typed, unknown keys rejected with the valid ones named."""

from pathlib import Path

import pytest
import yaml

from botnet.config import ConfigError, apply_overrides, config_from_dict, config_to_dict, load_config, save_config

RECIPES = sorted(Path(__file__).parents[1].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    save_config(cfg, tmp_path / "c.yaml")
    assert config_from_dict(yaml.safe_load((tmp_path / "c.yaml").read_text())) == cfg


def test_overrides_and_types():
    cfg = load_config(None)
    apply_overrides(cfg, ["optim.lr=0.2", "data.root=null", "model.kwargs.act=silu", "run.max_steps=3", "optim.warmup_epochs=1"])
    assert (cfg.optim.lr, cfg.data.root, cfg.model.kwargs, cfg.run.max_steps) == (0.2, None, {"act": "silu"}, 3)
    assert isinstance(cfg.optim.warmup_epochs, float)
    assert config_to_dict(cfg)["optim"]["lr"] == 0.2


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lrr=1", "unknown key 'optim.lrr'; expected one of: optim.name, optim.epochs"),
        ("optim.epochs=1.5", "optim.epochs: expected int, got 1.5"),
        ("run.ema=maybe", "run.ema: expected bool"),
        ("lr", "expected key=value"),
        ("data=3", "data: expected a mapping"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        apply_overrides(load_config(None), [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("optim: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
