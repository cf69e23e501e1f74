"""timm's current model interface on every registered model: ``forward_intermediates``,
``prune_intermediate_layers`` and ``set_input_size``, checked against ``forward_features``, our
``features_only`` (``FeatureListNet``) and timm's ``features_only`` wrappers (list and getter).

Semantics: timm ``models/resnet.py`` / ``byobnet.py`` (timm 1.0.31). ResNet-family models are built
at width 1/8 and every model at 64x64 so the whole file takes seconds per model.
"""

import copy
import dataclasses

import pytest
import torch

import botnet
from botnet.models import FeatureListNet, timm_name
from botnet.models.features import take_indices
from botnet.models.timm_botnets import MODEL_CFGS

ALL = botnet.list_models()
SIZE = 64


def _kw(name: str, img_size=SIZE) -> dict:
    """Small models: the ResNet family at width 1/8, timm's ResNet-T family with its stages (and final
    conv) at 1/4 of their widths, every block, stride and attention flag kept."""
    if name not in MODEL_CFGS:
        return dict(img_size=img_size, width=0.125)
    cfg = MODEL_CFGS[name]
    stages = tuple(dataclasses.replace(s, out_chs=s.out_chs // 4) for s in cfg.stages)
    return dict(img_size=img_size, stages=stages, num_features=cfg.num_features // 4)


def _model(name: str, img_size=SIZE, **kw):
    torch.manual_seed(0)
    return botnet.create_model(name, zero_init_last=False, **_kw(name, img_size), **kw).eval()


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.allclose(x, y, atol=1e-5, rtol=1e-4) for x, y in zip(a, b))


def test_take_indices_is_timms():
    """Our take_indices gives timm's feature_take_indices for every kind of ``indices`` (timm keeps
    it in a private module, and botnet works without timm)."""
    timm_features = pytest.importorskip("timm.models._features")
    cases = [None, 0, 1, 3, 5, 6, [0], [4], [5], [-1], [-6], [0, 2, 4], [3, 1], [-5, -1], (1, 1), [2, -3]]
    for n in (4, 5):
        for idx in cases:
            try:
                want = timm_features.feature_take_indices(n, idx)
            except AssertionError:  # timm asserts; we raise ValueError
                with pytest.raises(ValueError, match="indices"):
                    take_indices(n, idx)
                continue
            assert take_indices(n, idx) == (list(want[0]), want[1]), (n, idx)
    with pytest.raises(ValueError, match="indices"):
        take_indices(5, [])


@pytest.mark.parametrize("name", ALL)
def test_forward_intermediates(name):
    model = _model(name)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        info = model.feature_info
        assert [t.shape[1:] for t in inter] == [(i["num_chs"], SIZE // i["reduction"], SIZE // i["reduction"]) for i in info]
        assert _same(inter, FeatureListNet(model)(x))  # our features_only
        assert _same(model.forward_intermediates(x, intermediates_only=True), inter)
        assert _same(model.forward_intermediates(x, indices=2, intermediates_only=True), inter[3:])
        assert _same(model.forward_intermediates(x, indices=[-1, 1], intermediates_only=True), [inter[1], inter[4]])
        last, early = model.forward_intermediates(x, indices=[0, 2], stop_early=True)
        assert _same(early, [inter[0], inter[2]]) and torch.equal(last, inter[2])
        last, _ = model.forward_intermediates(x, indices=[3], stop_early=True)
        assert torch.equal(last, inter[3])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(ValueError, match="indices"):
        model.forward_intermediates(x, indices=[5])


@pytest.mark.parametrize("name", ALL)
def test_prune_intermediate_layers(name):
    model = _model(name)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        inter = model.forward_intermediates(x, intermediates_only=True)
        for indices, kept in (([1, 2], [1, 2]), ([-5], [0]), (2, [3, 4]), (1, [4])):
            pruned = copy.deepcopy(model)
            assert pruned.prune_intermediate_layers(indices) == kept
            assert _same(pruned.forward_intermediates(x, indices=kept, intermediates_only=True), [inter[i] for i in kept])
            end = max(kept)
            want = inter[end] if end < 4 else model.forward_features(x)
            assert torch.allclose(pruned.forward_features(x), want, atol=1e-5, rtol=1e-4)
            assert torch.allclose(pruned(x), want, atol=1e-5, rtol=1e-4)  # no head: the unpooled map
            assert pruned.num_classes == 0 and pruned.num_features == pruned.head_hidden_size == want.shape[1]
            dropped = [f"layer{i}" for i in range(end + 1, 5)]
            assert not any(n.split(".")[0] in dropped for n, _ in pruned.named_parameters()), indices
        kept_head = copy.deepcopy(model)
        assert kept_head.prune_intermediate_layers(prune_head=False) == [4]
        assert torch.equal(kept_head(x), model(x))  # nothing pruned but what was asked


@pytest.mark.parametrize("name", ALL)
def test_timm_features_only(name):
    """timm's FeatureListNet (features_only=True) and FeatureGetterNet (feature_cls="getter", which
    calls prune_intermediate_layers and forward_intermediates) give our intermediates."""
    timm = pytest.importorskip("timm")
    model = _model(name)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        inter = model.forward_intermediates(x, intermediates_only=True)
        for kw, want in ((dict(), inter), (dict(feature_cls="getter", out_indices=(1, -2)), [inter[1], inter[3]])):
            feats = timm.create_model(timm_name(name), features_only=True, **_kw(name), **kw).eval()
            target = feats.model if kw else feats
            missing, unexpected = target.load_state_dict(sd, strict=False)
            assert not missing and all(k.startswith(("layer4.", "final_features.")) for k in unexpected), (missing, unexpected)
            assert _same(feats(x), want)
            assert feats.feature_info.channels() == [t.shape[1] for t in want]


@pytest.mark.parametrize("name", ALL)
def test_set_input_size(name, new_size=(96, 128)):
    """set_input_size resizes the position tables in place to what a model built at the new size gets
    from the old state dict, so both give the same outputs at that size."""
    model = _model(name)
    sd = copy.deepcopy(model.state_dict())
    model.set_input_size(new_size)
    assert model.img_size == new_size
    built = _model(name, img_size=new_size)
    built.load_state_dict(sd)
    got, want = model.state_dict(), built.state_dict()
    assert list(got) == list(want)
    assert all(got[k].shape == want[k].shape and torch.equal(got[k], want[k]) for k in got)
    tables = [m for m in model.modules() if hasattr(m, "table_names")]
    assert all(m.feat_size == b.feat_size for m, b in zip(tables, (m for m in built.modules() if hasattr(m, "table_names"))))
    x = torch.randn(1, 3, *new_size)
    with torch.no_grad():
        assert torch.allclose(model(x), built(x), atol=1e-5, rtol=1e-4)
    if model.size_divisor > 1:
        with pytest.raises(ValueError, match="multiples of"):
            model.set_input_size(model.size_divisor + 1)
