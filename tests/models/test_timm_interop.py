"""timm interop: our models in timm's registry (never replacing timm's own), timm's keywords on both
``timm.create_model`` and ``botnet.create_model``, and timm-style feature extraction."""

import json
import subprocess
import sys
import warnings

import pytest
import torch

import botnet
from botnet.models import FeatureListNet, _timm, timm_name
from botnet.models.weights import save_weights

timm = pytest.importorskip("timm")


def _run(code: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_registration_either_import_order_and_lazy():
    """`import botnet.models` registers our models with timm when timm is imported, and otherwise
    leaves timm (and torchvision) unimported with a one-shot hook that registers right after
    `import timm` and removes itself. Without timm (blocked here) botnet imports, works and leaves
    no hook. `import botnet` alone imports neither torch nor timm (tests/cli/test_startup.py)."""
    hooks = "sum(type(f).__module__.startswith('botnet') for f in sys.meta_path)"
    res = _run("import sys, json, botnet.models\n"
               f"before = {{'timm': 'timm' in sys.modules, 'tv': 'torchvision' in sys.modules, 'hooks': {hooks}}}\n"
               "import timm\n"
               f"print(json.dumps({{**before, 'reg': timm.is_model('botnet50') and timm.is_model('botnet_resnet50'),"
               f" 'after': {hooks}}}))")
    assert res == {"timm": False, "tv": False, "hooks": 1, "reg": True, "after": 0}
    res = _run("import sys, json, timm\nimport botnet.models\n"
               f"print(json.dumps({{'reg': timm.is_model('botnet50') and timm.is_model('botnet_resnet50'), 'hooks': {hooks}}}))")
    assert res == {"reg": True, "hooks": 0}
    res = _run(
        "import sys, json\nsys.modules['timm'] = None  # as if timm were not installed\n"
        f"import botnet\nm = botnet.create_model('botnet_tiny', img_size=64)\n"
        f"print(json.dumps({{'hooks': {hooks}, 'name': m.model_name}}))"
    )
    assert res == {"hooks": 0, "name": "botnet_tiny"}
    _timm.install()  # again: registers nothing twice
    assert timm.is_model("botnet_tiny")


def test_names_never_replace_timm_models():
    mine = {n: timm_name(n) for n in botnet.list_models()}
    assert mine["botnet50"] == "botnet50" and mine["botnet_s1_128"] == "botnet_s1_128"
    assert mine["resnet50"] == "botnet_resnet50" and mine["seresnet50"] == "botnet_seresnet50"
    assert set(mine.values()) <= set(timm.list_models())
    for own in ("resnet50", "seresnet50", "resnet200", "botnet26t_256"):  # timm's models stay timm's
        assert not hasattr(timm.models.model_entrypoint(own), "botnet_name"), own
    assert timm.models.model_entrypoint("botnet_resnet50").botnet_name == "resnet50"
    assert type(timm.create_model("resnet50")).__module__ == "timm.models.resnet"
    ours = timm.create_model("botnet_resnet50", num_classes=4)
    assert isinstance(ours, botnet.ResNet) and ours.model_name == "resnet50"


def test_a_name_timm_already_has_is_skipped(monkeypatch):
    """A model of ours whose timm name timm already has (a future timm adding botnet_future, here
    played by timm's own botnet26t_256) is skipped with a warning; timm's model stays."""
    from botnet.models import _registry

    monkeypatch.setitem(_registry._entrypoints, "botnet_future", _registry._entrypoints["botnet_tiny"])
    monkeypatch.setattr(_timm, "_registered", dict(_timm._registered))
    real = _timm.timm_name
    monkeypatch.setattr(_timm, "timm_name", lambda n: "botnet26t_256" if n == "botnet_future" else real(n))
    with pytest.warns(UserWarning, match="timm already has a model 'botnet26t_256'"):
        names = _timm.register_timm_models()
    assert "botnet_future" not in names
    assert not hasattr(timm.models.model_entrypoint("botnet26t_256"), "botnet_name")


def test_timm_botnet_names_are_prefixed():
    """Ours of timm's own BoTNet names live in timm's registry as botnet_<name>, with timm's
    pretrained config (hub id, crop) and converted weights."""
    for ours in ("botnet26t_256", "sebotnet33ts_256", "eca_botnext26ts_256", "botnet50ts_256"):
        assert timm_name(ours) == f"botnet_{ours}" and timm.models.model_entrypoint(f"botnet_{ours}").botnet_name == ours
    cfg = timm.models.get_pretrained_cfg("botnet_sebotnet33ts_256")
    assert cfg.hf_hub_id == "timm/sebotnet33ts_256.a1h_in1k" and cfg.crop_pct == 0.94 and cfg.pool_size == (8, 8)
    assert not timm.models.get_pretrained_cfg("botnet_botnet50ts_256").has_weights
    m = timm.create_model("botnet_t3", num_classes=0)
    assert m.pretrained_cfg["pool_size"] == (14, 14)  # c5 at stride 16: pool_size from the built model


def test_timm_create_model_classifier_and_cfg():
    m = timm.create_model("botnet50", num_classes=10, drop_path_rate=0.1)
    assert isinstance(m, botnet.ResNet) and m.num_classes == 10 and m.fc.out_features == 10
    cfg = timm.data.resolve_data_config({}, model=m)
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875
    assert timm.create_model("botnet_t7", num_classes=1).pretrained_cfg["input_size"] == (3, 384, 384)
    assert m.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_features_only_timm_and_ours_agree():
    f_timm = timm.create_model("botnet50", features_only=True, out_indices=(1, 2, 3, 4))
    f_ours = botnet.create_model("botnet50", features_only=True, out_indices=(1, 2, 3, 4))
    assert isinstance(f_timm, timm.models.FeatureListNet) and isinstance(f_ours, FeatureListNet)
    for f in (f_timm, f_ours):
        assert f.feature_info.channels() == [256, 512, 1024, 2048]
        assert f.feature_info.reduction() == [4, 8, 16, 32]
        assert f.feature_info.module_name() == ["layer1", "layer2", "layer3", "layer4"]
    assert list(f_timm.state_dict()) == list(f_ours.state_dict())
    f_ours.load_state_dict(f_timm.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = f_timm.eval()(x), f_ours.eval()(x)
    assert isinstance(b, list) and [t.shape[1:] for t in b] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)


def test_our_features_only_options():
    f = botnet.create_model("botnet_tiny", img_size=64, features_only=True)
    assert len(f.feature_info) == 5 and f.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert f.feature_info.channels(0) == 16 and f.feature_info.get_dicts(keys=["module"], idx=[0])[0] == {"module": "act1"}
    assert [t.shape[-1] for t in f(torch.randn(1, 3, 64, 64))] == [32, 16, 8, 4, 2]
    last2 = botnet.create_model("botnet_tiny", img_size=64, features_only=True, out_indices=2)
    assert last2.feature_info.module_name() == ["layer3", "layer4"] and "fc" not in dict(last2.named_children())
    assert botnet.create_model("botnet_tiny", features_only=True, out_indices=(-1,)).feature_info.out_indices == (4,)
    with pytest.raises(ValueError, match="out_indices"):
        botnet.create_model("botnet_tiny", features_only=True, out_indices=(1, 5))
    with pytest.raises(ValueError, match="features_only=True"):
        botnet.create_model("botnet_tiny", out_indices=(1,))
    with pytest.raises(ValueError, match="multiples of 32"):
        last2(torch.randn(1, 3, 48, 48))


def test_pretrained_keywords(tmp_path):
    for create in (botnet.create_model, timm.create_model):
        with pytest.raises(ValueError, match="ships no downloadable weights"):
            create("botnet_tiny", pretrained=True)
    torch.manual_seed(0)
    src = botnet.create_model("botnet_tiny", num_classes=3, img_size=64)
    save_weights(src, tmp_path / "w.safetensors")
    want = src.state_dict()
    for m in (
        timm.create_model("botnet_tiny", num_classes=3, img_size=64, checkpoint_path=str(tmp_path / "w.safetensors")),
        timm.create_model("botnet_tiny", num_classes=3, img_size=64, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / "w.safetensors"), num_classes=3)),
        botnet.create_model("botnet_tiny", num_classes=3, img_size=64, checkpoint_path=tmp_path / "w.safetensors"),
        botnet.create_model("botnet_tiny", num_classes=3, img_size=64, pretrained=tmp_path / "w.safetensors"),
    ):
        for k, v in m.state_dict().items():
            torch.testing.assert_close(v, want[k], msg=k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="does not match"):  # strict: 3 vs 1000 classes
            botnet.create_model("botnet_tiny", checkpoint_path=tmp_path / "w.safetensors")
