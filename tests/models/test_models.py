"""Every registered model: forward/backward, gradients, classifier, features; model options."""

import pytest
import torch
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

import botnet
from botnet.layers import BoTBlock, NonLocal2d

ALL = botnet.list_models()
SIZE = 64


@pytest.mark.parametrize("name", ALL)
def test_forward_backward(name):
    torch.manual_seed(0)
    model = botnet.create_model(name, num_classes=7, img_size=SIZE, zero_init_last=False)
    for m in model.modules():  # NL blocks zero-init their BN; give every branch a gradient path
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
    model.train()
    x = torch.randn(2, 3, SIZE, SIZE)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, f"parameters with an all-zero gradient: {zero[:5]}"


@pytest.mark.parametrize("name", ALL)
def test_classifier_and_features(name):
    model = botnet.create_model(name, num_classes=10, img_size=SIZE).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert model(x).shape == (1, 10)
        model.reset_classifier(5)
        assert model(x).shape == (1, 5)
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)
        feats = model.forward_pyramid(x)
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
    info = model.feature_info
    stem = "act1" if isinstance(model, botnet.ResNet) else ("act3" if model.cfg.stem_pool else "act2")  # tiered stem
    assert [i["module"] for i in info] == [stem, "layer1", "layer2", "layer3", "layer4"]
    assert info[0]["reduction"] == 2 and info[0]["num_chs"] == getattr(model, stem.replace("act", "conv")).out_channels
    assert list(feats) == ["c2", "c3", "c4", "c5"]
    for fi, (key, f) in zip(info[1:], feats.items()):
        assert f.shape[1] == fi["num_chs"], key
        assert SIZE // f.shape[-1] == fi["reduction"], key
    assert pre.shape == (1, model.num_features) and model.head_hidden_size == model.num_features
    if isinstance(model, botnet.ResNet):
        assert info[-1]["num_chs"] == model.num_features == 4 * model.cfg.widths()[3]
    else:  # timm's ResNet-T family: c5 is layer4, a final 1x1 conv may widen the pooled features
        assert info[-1]["num_chs"] == model.cfg.stages[3].out_chs
        assert model.num_features == (model.cfg.num_features or info[-1]["num_chs"])


def test_registry_names_and_errors():
    required = (
        "resnet50 resnet101 resnet152 resnet200 seresnet50 seresnet101 seresnet152 seresnet350 "
        "botnet50 botnet101 botnet152 botnet200 botnet_s1_50 botnet_s1_59 botnet_s1_77 botnet_s1_110 "
        "botnet_s1_128 botnet_t3 botnet_t4 botnet_t5 botnet_t6 botnet_t7"
    ).split()
    assert set(required) <= set(ALL)
    assert botnet.list_models("botnet_t[0-9]*") == ["botnet_t3", "botnet_t4", "botnet_t5", "botnet_t6", "botnet_t7", "botnet_t7_320"]
    with pytest.raises(ValueError, match="did you mean botnet50"):
        botnet.create_model("botnet5O")
    with pytest.raises(ValueError, match="already registered"):
        botnet.models.register_model(botnet.models.model_entrypoint("resnet50"))
    with pytest.raises(TypeError, match="unknown model option"):
        botnet.create_model("resnet50", num_clases=10)


def _blocks(model, kind):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kind)]


@pytest.mark.parametrize(
    "name,attn_blocks",
    [
        ("botnet50", ["layer4.0", "layer4.1", "layer4.2"]),
        ("botnet50_c5_001", ["layer4.2"]),
        ("botnet50_c5_011", ["layer4.1", "layer4.2"]),
        ("botnet50_c5_100", ["layer4.0"]),
        ("resnet50_bot_c4", ["layer3.5"]),
        ("resnet50_bot_c4c5", ["layer3.5", "layer4.2"]),
        ("resnet50", []),
    ],
)
def test_attention_placement(name, attn_blocks):
    with torch.device("meta"):
        model = botnet.create_model(name, img_size=1024)
    assert [n for n, _ in _blocks(model, BoTBlock)] == attn_blocks
    sizes = {n: b.attn.pos.feat_size for n, b in _blocks(model, BoTBlock)}
    if "layer4.0" in sizes:
        assert sizes["layer4.0"] == (64, 64)  # first c5 block attends at stride 16 (Table 1)
    if "layer4.2" in sizes:
        assert sizes["layer4.2"] == (32, 32)
    if "layer3.5" in sizes:
        assert sizes["layer3.5"] == (64, 64)
        assert len(model.layer3) == 7 and model.layer3[5].attn.dim == 256  # inserted, pre-final


def test_non_local_and_se_placement():
    with torch.device("meta"):
        nl = botnet.create_model("resnet50_nl_c4")
        se_c5 = botnet.create_model("resnet50_se_c5")
        s1 = botnet.create_model("botnet_t3")
    assert [n for n, _ in _blocks(nl, NonLocal2d)] == ["layer3.5"] and len(nl.layer3) == 7
    assert all((b.se is not None) == n.startswith("layer4") for n, b in _blocks(se_c5, botnet.layers.Bottleneck))
    assert len(s1.layer4) == 6 and all(b.se is not None for b in s1.layer4)  # SE in c5, per Table 14 counts
    assert all(isinstance(b, BoTBlock) and b.downsample is None or b.downsample[0].stride == (1, 1) for b in s1.layer4)
    assert isinstance(s1.act1, nn.SiLU) and s1.img_size == (224, 224)
    assert s1.feature_info[-1]["reduction"] == 16


def test_model_options():
    m = botnet.create_model("botnet50", in_chans=1, num_classes=3, img_size=64, act_layer=nn.SiLU,
                            drop_rate=0.2, drop_path_rate=0.1)
    assert isinstance(m.act1, nn.SiLU) and isinstance(m.layer4[0].act3, nn.SiLU)
    assert m.layer4[2].drop_path.p == pytest.approx(0.1) and isinstance(m.layer1[0].drop_path, nn.Identity)
    assert m(torch.randn(2, 1, 64, 64)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        m(torch.randn(2, 3, 64, 64))
    frozen = botnet.create_model("resnet50", norm_layer=FrozenBatchNorm2d, num_classes=0)
    assert all(not isinstance(x, nn.BatchNorm2d) for x in frozen.modules())
    assert frozen(torch.randn(1, 3, 64, 64)).shape == (1, 2048)
    z = botnet.create_model("botnet50", img_size=64)
    assert all(b.bn3.weight.abs().sum() == 0 for b in z.layer4)
    nz = botnet.create_model("botnet50", img_size=64, zero_init_last=False)
    assert all(b.bn3.weight.abs().sum() > 0 for b in nz.layer4)
    abs_m = botnet.create_model("botnet50", img_size=64, pos_enc="absolute", num_heads=8)
    assert abs_m.layer4[0].attn.num_heads == 8 and abs_m.layer4[0].attn.pos_enc == "absolute"
    with pytest.raises(ValueError, match="attn_layers"):
        botnet.create_model("botnet50", layers=(3, 4, 6, 4))
    assert botnet.create_model("botnet50", layers=[1, 1, 1, 2], attn_layers=[0, 1], img_size=64)(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_resolution_change_and_errors():
    torch.manual_seed(0)
    m = botnet.create_model("botnet50", img_size=64, num_classes=4).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 96, 128)).shape == (1, 4)
        assert m(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    with pytest.raises(ValueError, match=r"multiples of 32.*H 64, 96"):
        m(torch.randn(1, 3, 80, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        botnet.create_model("botnet50", img_size=100)
    # ResNets and BoTNet-S1 (no pooled attention) run at any size
    r = botnet.create_model("resnet50", num_classes=2).eval()
    s1 = botnet.create_model("botnet_s1_50", img_size=64, num_classes=2).eval()
    with torch.no_grad():
        assert r(torch.randn(1, 3, 70, 45)).shape == (1, 2)
        assert s1(torch.randn(1, 3, 70, 45)).shape == (1, 2)


def test_state_dict_across_resolutions():
    torch.manual_seed(0)
    a = botnet.create_model("botnet50", img_size=64, num_classes=4).eval()
    b = botnet.create_model("botnet50", img_size=128, num_classes=4).eval()
    b.load_state_dict(a.state_dict())
    assert b.layer4[0].attn.pos.rel_height.shape[0] == 2 * 8 - 1
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_torchvision_resnet_weights_load_and_agree():
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet50().eval()
    ours = botnet.create_model("resnet50").eval()
    ours.load_state_dict(tv.state_dict(), strict=True)  # same names and shapes
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))
    bot = botnet.create_model("botnet50")
    res = bot.load_state_dict(tv.state_dict(), strict=False)
    assert res.unexpected_keys == [f"layer4.{i}.conv2.weight" for i in range(3)]
    assert all(".attn." in k for k in res.missing_keys) and len(res.missing_keys) == 9
    # torchvision's feature extractor works on our names
    body = IntermediateLayerGetter(ours, {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"})
    with torch.no_grad():
        got = body(x)
        exp = ours.forward_pyramid(x)
    for k in exp:
        torch.testing.assert_close(got[k], exp[k])
