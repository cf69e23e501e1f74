"""The contract of timm's model test suite, on a few of our models.

Source: huggingface/pytorch-image-models ``tests/test_models.py`` (``test_model_default_cfgs``,
``test_model_forward_fx``, ``test_model_backward_fx``, ``test_model_forward_fx_torchscript``,
``test_model_forward_features``). That file cannot be fetched in CI; run in full (with a conftest.py
that imports botnet.models and keeps timm.list_models to our names) it passes for our models. These tests
check the same things, on models chosen to cover each kind: a ResNet-family BoTNet with a stride-2
BoT block, timm's tiered-stem BoTNet with max pool, and the one with SE, a strided stem and a final conv.
"""

import pytest
import torch

import botnet
import botnet.models  # noqa: F401  (registers our models with timm)
from botnet.layers import MHSA2d, MHSA2dQK

timm = pytest.importorskip("timm")
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names  # noqa: E402

NAMES = ["botnet_tiny", "botnet_botnet26t_256", "botnet_sebotnet33ts_256"]
SIZE = 128  # timm's TARGET_FWD_FX_SIZE


def _fx(model, train=False):
    """timm's _create_fx_model: trace with timm's leaf modules (our MHSA layers are among them)."""
    kw = dict(leaf_modules=timm.models.get_notrace_modules(), autowrap_functions=timm.models.get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kw)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                    tracer_kwargs=kw)


@pytest.mark.parametrize("name", NAMES)
def test_default_cfg_contract(name):
    model = timm.create_model(name).eval()
    cfg = model.default_cfg
    assert model.num_classes > 0 and model.num_features > 0 and model.head_hidden_size > 0
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert feats.shape[1:] == (model.num_features, *cfg["pool_size"])
        assert pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == pre.shape
        model.reset_classifier(0, "")
        assert model(x).shape == feats.shape
        assert timm.create_model(name, num_classes=0, global_pool="").eval()(x).shape == feats.shape
    sd = timm.create_model(name).state_dict()
    assert cfg["classifier"] + ".weight" in sd and cfg["first_conv"] + ".weight" in sd
    with pytest.raises(ValueError, match="needs num_classes=0"):
        model.reset_classifier(10, "")


@pytest.mark.parametrize("name", NAMES)
def test_fx_forward_backward_and_torchscript(name):
    model = timm.create_model(name).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.inference_mode():
        want = model(x)
        got = torch.cat(tuple(_fx(model)(x).values()))
        assert torch.equal(got, want)
        scripted = torch.jit.script(_fx(model))
        torch.testing.assert_close(torch.cat(tuple(scripted(x).values())), want)
    train = timm.create_model(name, num_classes=42).train()
    out = torch.cat(tuple(_fx(train, train=True)(torch.randn(2, 3, SIZE, SIZE)).values()))
    out.mean().backward()
    assert out.shape == (2, 42) and all(p.grad is not None for p in train.parameters())


def test_traced_graphs_keep_the_input_errors():
    """The checks are leaves of the graph: a traced model still says what is wrong, in one line."""
    model = botnet.create_model("botnet50_c5_100", img_size=64).eval()  # stride-2 BoT block: sides % 32
    traced = create_feature_extractor(model, return_nodes={"layer4": "c5"}, tracer_kwargs={"leaf_modules": [MHSA2d]})
    assert traced(torch.randn(1, 3, 64, 96))["c5"].shape == (1, 2048, 2, 3)
    with pytest.raises(ValueError, match=r"multiples of 32.*H 64, 96"):
        traced(torch.randn(1, 3, 80, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        traced(torch.randn(1, 1, 64, 64))
    block = botnet.layers.BoTBlock(16, 4, stride=2, feat_size=8)
    traced_block = create_feature_extractor(torch.nn.Sequential(block), return_nodes=["0"],
                                            tracer_kwargs={"leaf_modules": [MHSA2d]})
    with pytest.raises(ValueError, match="even input height and width"):
        traced_block(torch.randn(1, 16, 7, 8))


@pytest.mark.parametrize("name", ["botnet_tiny", "botnet_sebotnet33ts_256"])
def test_fx_features_timm_torchvision_and_ours_agree(name):
    """timm's FX feature extraction (feature_cls='fx'), torchvision's create_feature_extractor
    (our attention layers as leaves) and our FeatureListNet give the same maps."""
    ours_name = timm.models.model_entrypoint(name).botnet_name
    torch.manual_seed(0)
    model = botnet.create_model(ours_name, img_size=SIZE).eval()
    fx_timm = timm.create_model(name, features_only=True, feature_cls="fx", img_size=SIZE).eval()
    prefix = next(iter(fx_timm.state_dict()))[: -len("conv1.weight")]  # the graph module's name in timm's wrapper
    own = model.state_dict()
    fx_timm.load_state_dict({k: own[k[len(prefix):]] for k in fx_timm.state_dict()})
    ours = botnet.create_model(ours_name, img_size=SIZE, features_only=True).eval()
    ours.load_state_dict({k: v for k, v in model.state_dict().items() if k in ours.state_dict()})
    tv = create_feature_extractor(model, return_nodes=[i["module"] for i in model.feature_info],
                                  tracer_kwargs={"leaf_modules": [MHSA2d, MHSA2dQK]})
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        a, b, c = fx_timm(x), ours(x), list(tv(x).values())
    assert fx_timm.feature_info.channels() == ours.feature_info.channels() == [t.shape[1] for t in c]
    for u, v, w in zip(a, b, c):
        torch.testing.assert_close(u, v)
        torch.testing.assert_close(v, w)
