"""Recipes and overrides: typed, unknown keys rejected with the valid ones named."""

import re

import pytest
import yaml

from botnet.config import (ConfigError, apply_overrides, config_from_dict, config_to_dict, load_config, save_config,
                           validate_config)
from botnet.recipes import RECIPE_DIR, find_recipe, recipe_names

RECIPES = sorted(RECIPE_DIR.glob("*.yaml"))  # the classification recipes (detection ones: test_recipes_name_their_task)
assert RECIPES, f"no recipes found in {RECIPE_DIR}"


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


def test_reliability_fields_default_and_round_trip(tmp_path):
    cfg = load_config(None)
    assert (cfg.run.keep_checkpoints, cfg.run.max_nonfinite_skips, cfg.run.dist_timeout_s) == (3, 0, 600.0)
    apply_overrides(cfg, ["run.keep_checkpoints=5", "run.max_nonfinite_skips=2", "run.dist_timeout_s=30"])
    assert isinstance(cfg.run.dist_timeout_s, float)
    save_config(cfg, tmp_path / "c.yaml")
    assert config_from_dict(yaml.safe_load((tmp_path / "c.yaml").read_text())) == cfg
    # a config saved before these fields existed (an old checkpoint's) still loads, with the defaults
    old = config_to_dict(load_config(None))
    for key in ("keep_checkpoints", "max_nonfinite_skips", "dist_timeout_s"):
        del old["run"][key]
    assert config_from_dict(old).run.keep_checkpoints == 3


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_is_in_range(path):
    assert validate_config(load_config(path)) is not None


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lr=0", "optim.lr: expected a number > 0, got 0.0"),
        ("optim.epochs=0", "optim.epochs: expected an int >= 1, got 0"),
        ("optim.betas=[0.9]", "optim.betas: expected two numbers in [0, 1), got [0.9]"),
        ("optim.momentum=1", "optim.momentum: expected a number in [0, 1), got 1.0"),
        ("optim.clip_grad_norm=0", "optim.clip_grad_norm: expected null or a number > 0"),
        ("data.crop_pct=1.5", "data.crop_pct: expected a fraction in (0, 1], got 1.5"),
        ("data.randaug_magnitude=31", "data.randaug_magnitude: expected null or an int in [0, 30], got 31"),
        ("data.eval_size=0", "data.eval_size: expected null or an int >= 8, got 0"),
        ("model.drop_path_rate=1", "model.drop_path_rate: expected a probability in [0, 1)"),
        ("run.amp=fp8", "run.amp: expected one of bf16, fp16, none, got 'fp8'"),
        ("model.compile_shapes=dynamic", "model.compile_shapes: expected one of batch, static, got 'dynamic'"),
        ("run.ema_decay=1", "run.ema_decay: expected a number in (0, 1), got 1.0"),
        ("run.eval_every=0", "run.eval_every: expected an int >= 1, got 0"),
        ("run.ckpt_every_steps=-1", "run.ckpt_every_steps: expected an int >= 0"),
        ("run.max_steps=0", "run.max_steps: expected null or an int >= 1, got 0"),
        ("run.device=tpu9", "run.device: expected auto, cpu, cuda or cuda:N, got 'tpu9'"),
    ],
)
def test_out_of_range_values(override, message):
    cfg = apply_overrides(load_config(None), [override])
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(cfg)


def test_valid_devices():
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        validate_config(apply_overrides(load_config(None), [f"run.device={device}"]))


def test_recipes_name_their_task(tmp_path, capsys):
    from botnet.cli import main
    from botnet.config import recipe_task
    from botnet.config import DetTrainConfig

    configs = RECIPE_DIR
    assert recipe_task(configs / "demo.yaml") == "classification"
    assert recipe_task("demo") == "classification" and recipe_task("detection/demo") == "detection"
    for path in sorted(configs.joinpath("detection").glob("*.yaml")):  # base_coco.yaml passes it on
        assert recipe_task(path) == "detection", path
        cfg = load_config(path, DetTrainConfig)
        assert validate_config(cfg) is cfg and cfg.task == "detection"
    assert recipe_task(configs / "demo.yaml", ["task=detection"]) == "detection"
    assert recipe_task(None, default="detection") == "detection"
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: keypionts\n")
    assert main(["train", "--config", str(bad), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("botnet train: task: unknown task 'keypionts'") and "classification, detection" in err
    bad.write_text("task: [1]\n")
    with pytest.raises(ConfigError, match="expected a task name"):
        recipe_task(bad)


def test_recipes_by_name_and_by_path(tmp_path, monkeypatch):
    names = recipe_names()
    assert {"demo", "table14_t7", "detection/demo", "detection/coco_3x_1024"} <= set(names)
    for name in names:
        assert find_recipe(name) == RECIPE_DIR / f"{name}.yaml" == find_recipe(name + ".yaml")
    assert load_config("table14_t7").name == "table14_t7"
    # a file given by path wins over a shipped name, and its 'base' may name a shipped recipe
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text("base: table14_t7\nname: mine\noptim: {lr: 0.3}\n")
    cfg = load_config("demo.yaml")
    assert (cfg.name, cfg.optim.lr, cfg.model.name) == ("mine", 0.3, "botnet_t7")
    for bad in ("nope", "../demo", "/etc/passwd.yaml"):
        with pytest.raises(ConfigError, match="not found: expected a YAML file or a shipped recipe name"):
            load_config(bad)


def test_both_tasks_share_the_optim_and_run_sections():
    from botnet.config import DetTrainConfig, OptimConfig, RunConfig, TrainConfig

    for cls in (TrainConfig, DetTrainConfig):
        cfg = cls()
        assert type(cfg.optim) is OptimConfig and type(cfg.run) is RunConfig
    det = DetTrainConfig()  # detection's defaults in the shared sections
    assert (det.optim.batch_size, det.optim.weight_decay, det.run.ckpt_every_steps, det.run.eval_every) == (64, 4e-5, 1000, 0)
    assert validate_config(det) is det and validate_config(TrainConfig()) is not None


@pytest.mark.parametrize("cls,override,message", [
    ("TrainConfig", "optim.steps=1000", "optim.steps: expected no value: classification recipes are scheduled in epochs"),
    ("DetTrainConfig", "optim.epochs=3", "optim.epochs: expected no value: detection recipes are scheduled in steps"),
    ("DetTrainConfig", "run.eval_every=-1", "run.eval_every: expected an int >= 0"),
])
def test_the_other_tasks_schedule_fields_are_refused(cls, override, message):
    import botnet.config as config

    cfg = apply_overrides(getattr(config, cls)(), [override])
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(cfg)


def test_every_task_recipe_is_a_recipe():
    """Each registered task's ``config_class`` has every field of ``Recipe`` the trainer reads."""
    import typing

    from botnet.config import Recipe
    from botnet.engine.task import TASKS, get_task

    def has_fields(obj, proto, where):
        for name, tp in typing.get_type_hints(proto).items():
            assert hasattr(obj, name), f"{where}.{name}"
            if getattr(tp, "_is_protocol", False):
                has_fields(getattr(obj, name), tp, f"{where}.{name}")

    for name in list(TASKS):
        cfg = get_task(name).config_class()
        assert isinstance(cfg, Recipe)
        has_fields(cfg, Recipe, name)


def test_a_recipe_file_is_parsed_once_by_botnet_train(monkeypatch):
    """``botnet train`` reads the task and the recipe from one parse of the file."""
    import argparse

    from botnet.cli.train import load_run_config

    text = find_recipe("detection/demo").read_text()
    real, parsed = yaml.safe_load, []

    def counting(stream, *a, **k):
        if stream == text:
            parsed.append(1)
        return real(stream, *a, **k)

    monkeypatch.setattr(yaml, "safe_load", counting)
    args = argparse.Namespace(config="detection/demo", set=["run.max_steps=2"], overrides=[], data=None, output=None,
                              resume=None)
    task_cls, cfg = load_run_config(args)
    assert len(parsed) == 1 and task_cls.name == "detection" and cfg.run.max_steps == 2 and cfg.name == "demo"
