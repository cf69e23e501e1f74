"""Weight files: safetensors / state dicts with a model card, ``pretrained=PATH`` from our files and
training checkpoints, and torchvision / timm ResNet and SE-ResNet weights into our models (key
names checked against the real libraries, random weights, no downloads)."""

import hashlib
import json
import logging

import pytest
import torch
import torchvision
from tiny_checkpoints import make_checkpoint

import botnet
from botnet.layers import resize_pos_table
from botnet.models.weights import (
    KEY_MAPS, load_matching, load_model, load_weights, read_state_dict, remap_keys, save_weights,
)

timm = pytest.importorskip("timm")
X64 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
SHORT = (1, 1, 1, 1)  # one block per stage keeps the equivalence checks fast; the names are those of the full nets


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter and BN statistic random (no zero-init branch hides a naming error)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            r = torch.rand(t.shape, generator=g)
            t.copy_(0.5 + r if name.endswith("running_var") else (r - 0.5) * (0.5 if t.dim() > 1 else 1.0))
    return model.eval()


def _out(model, x=X64):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
def test_save_and_load_with_card(tmp_path, suffix):
    torch.manual_seed(0)
    model = botnet.create_model("botnet_tiny", num_classes=3, img_size=64, pos_enc="absolute")
    path = tmp_path / f"tiny{suffix}"
    card_file = save_weights(model, path, card={"classes": ["a", "b", "c"], "metrics": {"top1": 91.5}, "crop_pct": 1.0})
    assert card_file == tmp_path / "tiny.json"
    card = json.loads(card_file.read_text())
    assert card["model_name"] == "botnet_tiny" and card["classes"] == ["a", "b", "c"] and card["metrics"] == {"top1": 91.5}
    assert card["input_size"] == [3, 64, 64] and card["mean"] == [0.485, 0.456, 0.406] and len(card["std"]) == 3
    assert card["architecture"]["pos_enc"] == "absolute" and card["architecture"]["width"] == 0.25
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and card["botnet_version"] == botnet.__version__
    assert card["weights_format"] == ("safetensors" if suffix == ".safetensors" else "torch")
    if suffix != ".safetensors":
        assert isinstance(torch.load(path, weights_only=True), dict)  # a plain state dict
    rebuilt, card2 = load_model(path)
    assert card2 == card and rebuilt.cfg == model.cfg
    torch.testing.assert_close(_out(rebuilt), _out(model))
    fresh = botnet.create_model("botnet_tiny", num_classes=3, img_size=64, pos_enc="absolute")
    assert load_weights(fresh, path, strict=True).complete
    torch.testing.assert_close(_out(fresh), _out(model))


def test_save_errors_and_tampering(tmp_path, caplog):
    model = botnet.create_model("botnet_tiny", num_classes=3, img_size=64)
    with pytest.raises(ValueError, match="end in .safetensors, .pt, .pth"):
        save_weights(model, tmp_path / "w.bin")
    with pytest.raises(ValueError, match="names 2 classes but the model has 3"):
        save_weights(model, tmp_path / "w.pt", card={"classes": ["a", "b"]})
    assert not (tmp_path / "w.pt").exists()
    save_weights(model, tmp_path / "w.pt")
    torch.save(botnet.create_model("botnet_tiny", num_classes=3, img_size=64).state_dict(), tmp_path / "w.pt")
    caplog.set_level(logging.WARNING)
    load_model(tmp_path / "w.pt")
    assert "differs from its card" in caplog.text
    torch.save(model.state_dict(), tmp_path / "nocard.pt")
    with pytest.raises(FileNotFoundError, match="no model card nocard.json"):
        load_model(tmp_path / "nocard.pt")


def test_pretrained_from_training_checkpoint_and_ema(tmp_path):
    ck = make_checkpoint(tmp_path / "last.pt", ema=True)
    raw = torch.load(ck, weights_only=False)
    plain = botnet.create_model("botnet_tiny", num_classes=3, img_size=64, pretrained=ck)
    assert plain.pretrained_report.complete
    torch.testing.assert_close(plain.state_dict()["fc.weight"], raw["model"]["fc.weight"])
    ema = botnet.create_model("botnet_tiny", num_classes=3, img_size=64, pretrained=ck, use_ema=True)
    torch.testing.assert_close(ema.state_dict()["fc.weight"], raw["ema"]["module.fc.weight"])
    assert not torch.equal(ema.state_dict()["fc.weight"], plain.state_dict()["fc.weight"])
    model, card = load_model(ck, use_ema=True)
    assert card["classes"] == ["circle", "square", "triangle"] and card["crop_pct"] == 1.0 and card["epoch"] == 1
    torch.testing.assert_close(_out(model), _out(ema))
    other = botnet.create_model("botnet_tiny", pretrained=ck)  # 1000 classes: the head is kept as initialised
    assert [n for n, *_ in other.pretrained_report.shape_mismatch] == ["fc.weight", "fc.bias"]
    raw["ema"] = None
    with pytest.raises(ValueError, match="no EMA weights"):
        read_state_dict(raw, use_ema=True)


def test_timm_seresnet50_into_ours_is_the_same_network():
    """timm's SE-ResNet-50 names (se.fc1 / se.fc2, with bias) and SE reduction (1/16) are ours: every
    tensor loads and, with ReLU (timm's SENet uses ReLU, the paper's SiLU), outputs are identical."""
    theirs = _randomize(timm.create_model("seresnet50", layers=SHORT))
    ours = botnet.create_model("seresnet50", act="relu", layers=SHORT)
    rep = load_matching(ours, theirs.state_dict())
    assert rep.complete and rep.key_map is None and len(rep.loaded) == len(theirs.state_dict())
    torch.testing.assert_close(_out(ours), _out(theirs), atol=1e-4, rtol=1e-4)


def test_torchvision_resnet50_is_the_same_network(tmp_path):
    theirs = _randomize(torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, list(SHORT)))
    torch.save(theirs.state_dict(), tmp_path / "tv.pth")
    ours = botnet.create_model("resnet50", layers=SHORT, pretrained=tmp_path / "tv.pth")
    assert ours.pretrained_report.complete
    torch.testing.assert_close(_out(ours), _out(theirs), atol=1e-4, rtol=1e-4)


def test_resnet_weights_into_botnets(tmp_path):
    se = timm.create_model("seresnet50").state_dict()
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "tv.pth")
    c5_conv2 = [f"layer4.{i}.conv2.weight" for i in range(3)]  # replaced by MHSA: no counterpart
    # torchvision ResNet-50 -> BoT50: everything but the c5 3x3 convs; the MHSA layers kept as initialised
    rep = botnet.create_model("botnet50", num_classes=10, pretrained=tmp_path / "tv.pth").pretrained_report
    assert rep.unexpected == c5_conv2 and [n for n, *_ in rep.shape_mismatch] == ["fc.weight", "fc.bias"]
    assert rep.missing and all(".attn." in k for k in rep.missing)
    assert "in the file but not in the model (3): layer4.0.conv2.weight" in rep.summary()
    # timm SE-ResNet-50 -> BoTNet-S1-50 (SE everywhere, c5 BoT blocks with SE): the same, SE included
    rep = load_matching(botnet.create_model("botnet_s1_50"), se)
    assert rep.unexpected == c5_conv2 and not rep.shape_mismatch and all(".attn." in k for k in rep.missing)
    # timm SE-ResNet-50 -> BoT50 (no SE): the SE weights are reported as unused
    rep = load_matching(botnet.create_model("botnet50"), se)
    assert set(rep.unexpected) == set(c5_conv2) | {k for k in se if ".se." in k} and not rep.shape_mismatch


def test_legacy_senet_key_map():
    """timm's legacy_seresnet50 (Cadene's SENet layout: layer0, se_module, last_linear) goes through
    the 'senet_legacy' map; with stride_in_1x1 its residual stages compute what ours do."""
    theirs = _randomize(timm.create_model("legacy_seresnet50", layers=list(SHORT)))
    ours = botnet.create_model("seresnet50", act="relu", stride_in_1x1=True, layers=SHORT)
    rep = load_matching(ours, theirs.state_dict())
    assert rep.key_map == "senet_legacy" and rep.complete
    x = torch.randn(1, 64, 16, 16)
    with torch.no_grad():
        a = ours.eval().layer4(ours.layer3(ours.layer2(ours.layer1(x))))
        b = theirs.layer4(theirs.layer3(theirs.layer2(theirs.layer1(x))))
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_remap_keys_rules():
    t = torch.zeros(1)
    sd = {"layer0.conv1.weight": t, "layer0.bn1.bias": t, "layer2.1.se_module.fc2.bias": t, "last_linear.weight": t}
    name, out = remap_keys(sd)
    assert name == "senet_legacy" and list(out) == ["conv1.weight", "bn1.bias", "layer2.1.se.fc2.bias", "fc.weight"]
    assert remap_keys({"conv1.weight": t}) == (None, {"conv1.weight": t})
    assert remap_keys(sd, None)[1] is sd
    assert list(remap_keys({"head.fc.weight": t}, [(r"^head\.fc\.", "fc.")])[1]) == ["fc.weight"]
    with pytest.raises(ValueError, match="unknown key map"):
        remap_keys(sd, "nope")
    assert set(KEY_MAPS) == {"senet_legacy"}


def test_other_resolution_resizes_position_tables(tmp_path):
    src = botnet.create_model("botnet_tiny", num_classes=3, img_size=64)
    save_weights(src, tmp_path / "w.safetensors")
    big = botnet.create_model("botnet_tiny", num_classes=3, img_size=128, checkpoint_path=tmp_path / "w.safetensors")
    a, b = src.layer4[0].attn.pos, big.layer4[0].attn.pos
    assert a.rel_height.shape == (7, 32) and b.rel_height.shape == (15, 32)
    torch.testing.assert_close(b.rel_height, resize_pos_table(a.rel_height.detach(), 15))
    rep = botnet.create_model("botnet_tiny", num_classes=3, img_size=128, pretrained=tmp_path / "w.safetensors").pretrained_report
    assert rep.complete
