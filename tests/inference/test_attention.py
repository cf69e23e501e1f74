"""Attention maps of BoT blocks: normalised, equal to a brute-force recomputation, drawn, and the CLI."""

import pytest
import torch
from PIL import Image
from tiny_checkpoints import make_checkpoint, write_images

import botnet
from botnet.cli import main
from botnet.inference.attention import (
    attention_maps, draw_attention_grid, mhsa_layers, pixel_to_feature, resolve_layer,
)

SIZE = 64


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return botnet.create_model("botnet_tiny", num_classes=3, img_size=SIZE).eval()


def _block_input(model, name, x):
    """The input of MHSA layer ``name`` for image batch ``x``."""
    grabbed = {}
    h = dict(model.named_modules())[name].register_forward_pre_hook(lambda m, a: grabbed.setdefault("x", a[0]))
    with torch.no_grad():
        model(x)
    h.remove()
    return grabbed["x"]


def _brute_force(mhsa, x, query):
    """softmax_j(q_i . k_j + q_i . R_h[r_j - r_i] + q_i . R_w[c_j - c_i]), one query, loops over the keys."""
    _, c, h, w = x.shape
    nh, d = mhsa.num_heads, mhsa.head_dim
    qkv = torch.einsum("oc,chw->ohw", mhsa.qkv.weight[:, :, 0, 0].double(), x[0].double())
    q, k = qkv[:c].reshape(nh, d, h, w), qkv[c : 2 * c].reshape(nh, d, h, w)
    rh, rw = mhsa.pos.rel_height.double(), mhsa.pos.rel_width.double()
    y0, x0 = query
    out = torch.empty(nh, h, w, dtype=torch.float64)
    for n in range(nh):
        qi = q[n, :, y0, x0] * d**-0.5
        for r in range(h):
            for col in range(w):
                out[n, r, col] = qi @ k[n, :, r, col] + qi @ rh[r - y0 + h - 1] + qi @ rw[col - x0 + w - 1]
    return out.flatten(1).softmax(-1).reshape(nh, h, w)


def test_maps_sum_to_one_and_match_brute_force(model):
    assert mhsa_layers(model) == ["layer4.0.attn", "layer4.1.attn"]
    x = torch.randn(1, 3, SIZE, SIZE)
    for layer, size in (("layer4.0.attn", 4), ("layer4.1.attn", 2), (None, 2)):
        maps = attention_maps(model, x[0], layer, query=(1, 0))
        assert maps.shape == (4, size, size) and maps.dtype == torch.float32
        torch.testing.assert_close(maps.sum((1, 2)), torch.ones(4))
    inp = _block_input(model, "layer4.0.attn", x)
    for query in ((0, 0), (1, 2), (3, 3)):
        maps = attention_maps(model, x, "layer4.0.attn", query)
        ref = _brute_force(model.layer4[0].attn, inp, query)
        torch.testing.assert_close(maps.double(), ref, atol=1e-6, rtol=1e-5)
    default = attention_maps(model, x, "layer4.0")  # a block's name stands for its MHSA; default query: center
    torch.testing.assert_close(default, attention_maps(model, x, "layer4.0.attn", (2, 2)))


def test_pixel_queries_and_errors(model):
    x = torch.randn(3, SIZE, SIZE)
    assert pixel_to_feature((0, 63), (64, 64), (4, 4)) == (0, 3)
    assert pixel_to_feature((16, 15.9), (64, 64), (4, 4)) == (1, 0)
    torch.testing.assert_close(attention_maps(model, x, "layer4.0.attn", query_px=(40, 10)),
                               attention_maps(model, x, "layer4.0.attn", (2, 0)))
    model.train()
    attention_maps(model, x)
    assert model.training  # mode restored
    model.eval()
    with pytest.raises(ValueError, match="layer4.0.attn, layer4.1.attn"):
        attention_maps(model, x, "layer3.0")
    with pytest.raises(ValueError, match="outside the 2x2 feature map"):
        attention_maps(model, x, query=(2, 0))
    with pytest.raises(ValueError, match="outside the 64x64 input"):
        attention_maps(model, x, query_px=(64, 0))
    with pytest.raises(ValueError, match="no MHSA layer"):
        attention_maps(botnet.create_model("resnet50", layers=(1, 1, 1, 1), width=0.25), x)
    assert resolve_layer(model) == ("layer4.1.attn", model.layer4[1].attn)


def test_draw_grid(model, tmp_path):
    img = torch.rand(3, SIZE, SIZE)
    maps = attention_maps(model, (img - 0.45) / 0.25, "layer4.0.attn", (1, 2))
    out = draw_attention_grid(img, maps, (1, 2), tmp_path / "grid.png", title="t")
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > png.height > 100  # 5 panels in a row


def test_cli(tmp_path, capsys):
    image = write_images(tmp_path / "imgs", n=1, size=(80, 64))[0]
    out = tmp_path / "a.png"
    assert main(["attention", "--model", "botnet_tiny", "--img-size", "128", str(image), "--query", "1,2",
                 "--layer", "layer4.0", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "layer4.0.attn: query (1, 2) on the 8x8 map, 4 heads" in text and out.is_file()
    ckpt = make_checkpoint(tmp_path / "ck.pt")
    assert main(["attention", "--checkpoint", str(ckpt), str(image), "--query", "63,0", "--pixels",
                 "--output", str(out)]) == 0
    assert "layer4.1.attn: query (1, 0) on the 2x2 map" in capsys.readouterr().out
    for argv in (["--query", "1,1"], ["--model", "botnet_tiny", "--query", "1.5,1"],
                 ["--model", "botnet_tiny", "--query", "9,9"], ["--model", "resnet50", "--query", "0,0"]):
        assert main(["attention", str(image), *argv]) == 2
        assert capsys.readouterr().err.startswith("botnet attention: ")
