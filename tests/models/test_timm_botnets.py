"""timm's BoTNet family in our description: converted timm state dicts reproduce timm's logits, at any
size, from the caches ``pretrained=True`` reads (offline), with timm's eval preprocessing.

The reference is timm itself (``timm.create_model(name, pretrained=False)``: built offline) with every
weight and BN statistic randomised: timm zero-inits the last BN of each block, so a comparison with
its default init would pass with every residual branch switched off."""

import numpy as np
import pytest
import torch
from PIL import Image

import botnet
from botnet.cli import main as cli_main
from botnet.counter import profile_model
from botnet.data.transforms import build_eval_transform
from botnet.models.hub import PretrainedNotFound
from botnet.models.weights import read_state_dict
from runs import cli_errors

timm = pytest.importorskip("timm")

NAMES = ["botnet26t_256", "sebotnet33ts_256", "eca_botnext26ts_256", "botnet50ts_256"]
# timm results/benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv (param_count, infer_gmacs at 256) and
# results-imagenet.csv (eca_botnext26ts_256: 10.59M, no benchmark row)
TIMM_COUNTS = {"botnet26t_256": (12.49e6, 3.32e9), "sebotnet33ts_256": (13.70e6, 3.89e9),
               "eca_botnext26ts_256": (10.59e6, None), "botnet50ts_256": (22.74e6, 5.54e9)}


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every float tensor of the state dict random: weights N(0, 1/fan_in), BN weight and
    running_var in [0.5, 1.5), BN bias / running_mean N(0, 0.25), position tables N(0, 1/d)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if not v.dtype.is_floating_point:
                continue
            if k.endswith(("running_var", "bn.weight", "post_attn.weight")):
                v.copy_(torch.rand(v.shape, generator=g) + 0.5)
            elif v.dim() == 1:
                v.copy_(torch.randn(v.shape, generator=g) * 0.5)
            else:
                v.copy_(torch.randn(v.shape, generator=g) * v[0].numel() ** -0.5)
    return model


@pytest.fixture(scope="module")
def timm_files(tmp_path_factory):
    """name -> (randomised timm model in eval mode, its state dict saved as .pth or .safetensors)."""
    from safetensors.torch import save_file

    out = {}
    d = tmp_path_factory.mktemp("timm_weights")
    for i, name in enumerate(NAMES):
        ref = randomise(timm.create_model(name, pretrained=False), seed=i).eval()
        sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
        path = d / f"{name}.{'safetensors' if i % 2 else 'pth'}"
        save_file(sd, path) if i % 2 else torch.save(sd, path)
        out[name] = (ref, path)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_converted_weights_reproduce_timm(name, timm_files):
    ref, path = timm_files[name]
    ours = botnet.create_model(name, pretrained=path).eval()
    assert ours.pretrained_report.complete, ours.pretrained_report.summary()
    assert all(b.bn3.weight.abs().min() > 0 for layer in (ours.layer1, ours.layer4) for b in layer)  # branches on
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = ref(x), ours(x)
        assert want.std() > 0.1
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.forward_head(ours.forward_features(x), pre_logits=True),
                                   ref.forward_head(ref.forward_features(x), pre_logits=True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_counts_match_timm(name):
    params, macs = TIMM_COUNTS[name]
    p = profile_model(name)
    assert p.img_size == (256, 256) and p.params == pytest.approx(params, abs=0.005e6)
    if macs:  # timm's count (fvcore-style) also counts the normalisation layers: ours is up to 1.5% lower
        assert 0.985 * macs < p.madds <= macs


def test_architecture_as_timm_describes_it():
    with torch.device("meta"):
        m = {n: botnet.create_model(n) for n in NAMES}
    b26, se33, eca, b50 = (m[n] for n in NAMES)
    attn = {n: [k for k, v in mod.named_modules() if isinstance(v, botnet.layers.BoTBlock)] for n, mod in m.items()}
    assert attn["botnet26t_256"] == ["layer3.1", "layer4.0", "layer4.1"]
    assert attn["sebotnet33ts_256"] == ["layer2.2", "layer3.2", "layer4.0", "layer4.1"]
    assert attn["botnet50ts_256"] == ["layer2.3", "layer3.1", "layer3.3", "layer3.5", "layer4.1"]
    assert (b26.conv1.out_channels, b26.conv2.out_channels, b26.conv3.out_channels) == (24, 32, 64)
    assert isinstance(se33.maxpool, torch.nn.Identity) and se33.conv3.stride == (2, 2) and se33.num_features == 1280
    assert se33.layer4[0].attn.dim == 512 and se33.layer1[0].mid_se.fc1.out_channels == 8  # 1536 * 0.333 -> 512
    assert eca.layer1[0].conv2.groups == 4 and eca.layer4[0].attn.qk_head_dim == 16 and eca.layer4[0].attn.head_dim == 128
    assert isinstance(b50.act1, torch.nn.SiLU) and b50.size_divisor == 1 and b26.size_divisor == 32
    assert b26.layer4[0].attn.pos.feat_size == (16, 16) and b26.layer4[1].attn.pos.feat_size == (8, 8)


def test_any_resolution_and_another_size_on_load(timm_files):
    _, path = timm_files["botnet26t_256"]
    at256 = botnet.create_model("botnet26t_256", pretrained=path).eval()
    at384 = botnet.create_model("botnet26t_256", pretrained=path, img_size=384).eval()
    assert at384.layer4[0].attn.pos.rel_height.shape[0] == 2 * 24 - 1
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        torch.testing.assert_close(at384(x), at256(x))  # loading resizes the tables as running does
        assert at256(torch.randn(1, 3, 320, 224)).shape == (1, 1000)  # rectangular
        b50 = botnet.create_model("botnet50ts_256", pretrained=timm_files["botnet50ts_256"][1]).eval()
        assert torch.isfinite(b50(torch.randn(1, 3, 200, 136))).all()  # no stride-2 attention: any size
    with pytest.raises(ValueError, match="multiples of 32"):
        at256(torch.randn(1, 3, 300, 256))


def _hf_cache(root, repo_id, file):
    from safetensors.torch import save_file

    snap = root / f"models--{repo_id.replace('/', '--')}" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (root / f"models--{repo_id.replace('/', '--')}" / "refs").mkdir()
    (root / f"models--{repo_id.replace('/', '--')}" / "refs" / "main").write_text("a" * 40)
    save_file({k: v.contiguous() for k, v in read_state_dict(file).items()}, snap / "model.safetensors")


def test_pretrained_true_offline_from_the_caches(tmp_path, monkeypatch, timm_files, capsys):
    _, path = timm_files["eca_botnext26ts_256"]  # a .pth file
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    want = botnet.create_model("eca_botnext26ts_256", pretrained=path).state_dict()
    # nowhere: one line naming both places to put the file
    with pytest.raises(PretrainedNotFound) as e:
        botnet.create_model("eca_botnext26ts_256", pretrained=True)
    msg = str(e.value)
    assert "\n" not in msg and "https://huggingface.co/timm/eca_botnext26ts_256.c1_in1k/resolve/main/model.safetensors" in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "eca_botnext26ts_c_256-95a898f6.pth") in msg
    capsys.readouterr()
    assert cli_main(["eval", "--model", "eca_botnext26ts_256", "--data", str(tmp_path)]) == 2
    err = cli_errors(capsys.readouterr().err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "pretrained=PATH" in err
    # the torch hub cache (timm's URL file name)
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / "eca_botnext26ts_c_256-95a898f6.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(path.read_bytes())
    for k, v in botnet.create_model("eca_botnext26ts_256", pretrained=True).state_dict().items():
        torch.testing.assert_close(v, want[k], msg=k)
    ckpt.unlink()
    # the Hugging Face cache, as huggingface_hub lays it out
    _hf_cache(tmp_path / "hf", "timm/eca_botnext26ts_256.c1_in1k", path)
    m = botnet.create_model("eca_botnext26ts_256", pretrained=True, num_classes=7)  # new head, as timm does
    assert m.fc.out_features == 7 and set(m.pretrained_report.missing) == {"fc.weight", "fc.bias"}
    torch.testing.assert_close(m.layer4[1].attn.qkv.weight, want["layer4.1.attn.qkv.weight"])
    with pytest.raises(ValueError, match="ships no downloadable weights"):
        botnet.create_model("botnet50ts_256", pretrained=True)  # timm publishes no weights for it


def test_eval_preprocessing_is_timms():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (300, 411, 3), dtype=np.uint8))
    for name, crop in (("botnet26t_256", 0.95), ("sebotnet33ts_256", 0.94)):
        cfg = botnet.create_model(name, num_classes=0).pretrained_cfg
        assert cfg["crop_pct"] == crop and cfg["interpolation"] == "bicubic" and cfg["license"] == "apache-2.0"
        ref = timm.data.create_transform(**timm.data.resolve_data_config(model=timm.create_model(name)))
        torch.testing.assert_close(build_eval_transform(cfg)(img), ref(img))


def test_eval_on_an_image_folder(tmp_path, timm_files, capsys):
    """``evaluate_pretrained`` (``botnet eval --model NAME --weights FILE --data DIR``) scores the
    converted model with timm's preprocessing: timm's top-1 on the same images (a 2-class head here)."""
    from botnet.engine.pretrained import evaluate_pretrained

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "val" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (270, 300, 3), dtype=np.uint8)).save(tmp_path / "val" / c / f"{i}.png")
    ref, path = timm_files["botnet26t_256"]
    ds = timm.data.ImageDataset(str(tmp_path / "val"), transform=timm.data.create_transform(
        **timm.data.resolve_data_config(model=ref)))
    with torch.no_grad():
        feats = torch.cat([ref.forward_head(ref.forward_features(x[None]), pre_logits=True) for x, _ in ds])
    w = torch.randn(feats.shape[1], generator=torch.Generator().manual_seed(0))
    b = -(feats @ w).median() + 1e-3  # a 2-class head splitting these images 3 / 3 (or so)
    sd = torch.load(path)
    sd["head.fc.weight"], sd["head.fc.bias"] = torch.stack([w, -w]) / 2, torch.stack([b, -b]) / 2
    small = tmp_path / "two.pth"
    torch.save(sd, small)
    logits = feats @ sd["head.fc.weight"].t() + sd["head.fc.bias"]
    targets = torch.tensor([y for _, y in ds])
    assert logits.argmax(1).unique().numel() == 2  # both classes predicted: top-1 is not trivially 0 or 100
    res = evaluate_pretrained("botnet26t_256", tmp_path, weights=small, batch_size=4, workers=0, num_classes=2)
    assert res["count"] == 6 and res["top1"] == pytest.approx(100 * float((logits.argmax(1) == targets).float().mean()))
    assert res["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, targets)), rel=1e-4)
    assert res["crop_pct"] == 0.95 and res["published_top1"] == 79.256
    assert cli_main(["eval", "--model", "botnet26t_256", "--weights", str(small), "--data", str(tmp_path),
                            "--workers", "0"]) == 2  # the 1000-class model and 2 class folders: one clear line
    err = cli_errors(capsys.readouterr().err)
    assert "2 class folders" in err and len(err.splitlines()) == 1


def test_converted_backbone_in_a_detector(timm_files):
    """maskrcnn_<timm botnet>_fpn: the converted weights in the backbone (tables resized to the
    detector's size), c2..c5 into the FPN, a forward in eval mode (small heads and size for CPU)."""
    from botnet.detection import create_detector

    ref, path = timm_files["sebotnet33ts_256"]  # strided stem, SE, final conv (not used by the FPN)
    det = create_detector("maskrcnn_sebotnet33ts_256_fpn", num_classes=3, img_size=128, backbone_weights=str(path),
                          fpn_channels=32, box_fc=64, mask_channels=32).eval()
    assert det.backbone_load_report.complete
    body, clf = det.backbone.body, botnet.create_model("sebotnet33ts_256", pretrained=path, img_size=128).eval()
    lateral = det.backbone.fpn.inner_blocks[3]  # TPU FPN: a plain conv; torchvision's: Conv2dNormActivation
    assert (lateral if isinstance(lateral, torch.nn.Conv2d) else lateral[0]).in_channels == 1536  # c5 = layer4, before the final 1x1 conv
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(body.forward_pyramid(x)["c5"], clf.forward_pyramid(x)["c5"])
        out = det([torch.rand(3, 100, 140)])
    assert set(out[0]) == {"boxes", "labels", "scores", "masks"}


def test_model_card_roundtrip(tmp_path, timm_files):
    """save_weights with the card fields of a converted model: the source's top-1 and licence, timm's
    preprocessing; load_model rebuilds the same model (architecture as data in the card)."""
    from botnet.models.timm_botnets import card_fields
    from botnet.models.weights import load_model, read_card, save_weights

    _, path = timm_files["sebotnet33ts_256"]
    model = botnet.create_model("sebotnet33ts_256", pretrained=path).eval()
    save_weights(model, tmp_path / "se33.safetensors", card=card_fields("sebotnet33ts_256"))
    card = read_card(tmp_path / "se33.safetensors")
    assert card["published_metrics"] == {"imagenet1k_top1": 81.156, "reported_by": card["published_metrics"]["reported_by"]}
    assert "timm" in card["published_metrics"]["reported_by"] and card["license"] == "apache-2.0"
    assert card["crop_pct"] == 0.94 and card["interpolation"] == "bicubic" and card["metrics"] == {}
    again, _ = load_model(tmp_path / "se33.safetensors")
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
