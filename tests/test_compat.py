"""botnet.compat: each function gives the same answer through the new torch / torchvision API and
through its fallback for the floor pair (torch 2.4.1 + torchvision 0.19.1), both checked against a
brute-force reference. The fallback is forced by hiding the new API (monkeypatch), so both paths
run on whichever pair is installed."""

import math

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from botnet import compat


def _paths(monkeypatch, owner, name):
    """Yield once with the installed API (if any), once with it hidden (the fallback)."""
    yield "installed"
    monkeypatch.delattr(owner, name, raising=False)
    yield "fallback"


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.5, math.inf])
def test_total_norm_is_the_norm_of_all_tensors_concatenated(monkeypatch, norm_type):
    torch.manual_seed(0)
    tensors = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 2, 2) * 10]
    expected = torch.linalg.vector_norm(torch.cat([t.flatten() for t in tensors]), norm_type)
    for _ in _paths(monkeypatch, torch.nn.utils, "get_total_norm"):
        torch.testing.assert_close(compat.total_norm(tensors, norm_type=norm_type), expected)
        torch.testing.assert_close(compat.total_norm(tensors[0], norm_type=norm_type),
                                   torch.linalg.vector_norm(tensors[0], norm_type))


def test_total_norm_propagates_nan_and_inf_and_is_zero_for_no_tensors(monkeypatch):
    for _ in _paths(monkeypatch, torch.nn.utils, "get_total_norm"):
        for bad in (math.nan, math.inf):
            grads = [torch.ones(3), torch.tensor([1.0, bad])]
            assert not torch.isfinite(compat.total_norm(grads, norm_type=math.inf))
            assert not torch.isfinite(compat.total_norm(grads, norm_type=2.0))
        assert float(compat.total_norm([])) == 0.0


def test_query_size_reads_the_common_size_of_image_like_inputs(monkeypatch):
    image = tv_tensors.Image(torch.zeros(3, 5, 7))
    mask = tv_tensors.Mask(torch.zeros(2, 5, 7))
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), format="XYXY", canvas_size=(5, 7))
    for _ in _paths(monkeypatch, v2, "query_size"):
        assert compat.query_size([image, mask, boxes]) == (5, 7)
        assert compat.query_size([torch.zeros(3, 4, 6)]) == (4, 6)  # a plain tensor is an image
        with pytest.raises(ValueError):
            compat.query_size([image, tv_tensors.Mask(torch.zeros(1, 6, 7))])


def test_flex_flag_matches_the_installed_torch():
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:
        flex_attention = None
    assert compat.HAS_FLEX == (flex_attention is not None)
    if compat.HAS_FLEX:
        assert compat.flex_attention() is flex_attention and compat.FLEX_MISSING == ""
    else:
        assert "torch >= 2.5" in compat.FLEX_MISSING
        with pytest.raises(RuntimeError, match="flex_attention"):
            compat.flex_attention()


def test_versions_are_the_installed_pair():
    assert compat.TORCH_VERSION == tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    assert compat.TORCH_VERSION >= (2, 4) and compat.TORCHVISION_VERSION >= (0, 19)


def test_v2_transform_runs_its_public_hooks():
    class AddSize(compat.V2Transform):
        def make_params(self, flat_inputs):
            return {"hw": compat.query_size(flat_inputs)}

        def transform(self, inpt, params):
            return inpt + sum(params["hw"]) if isinstance(inpt, tv_tensors.Image) else inpt

    image, labels = tv_tensors.Image(torch.zeros(3, 2, 5)), torch.tensor([1, 2])
    out, target = AddSize()(image, {"labels": labels})
    assert out.shape == (3, 2, 5) and bool((out == 7).all())  # 2 + 5
    assert target["labels"] is labels  # pure tensors beside an image pass through


def test_restore_ieee_denormals_undoes_flush_to_zero():
    tiny = 5e-324  # the smallest subnormal double
    torch.set_flush_denormal(True)  # what loading a -ffast-math library does (False where unsupported)
    compat.restore_ieee_denormals()
    assert tiny * 2 > 0 and float(torch.tensor([tiny], dtype=torch.float64) * 2) > 0


def test_draw_labelled_boxes_fills_the_label_background_with_and_without_torchvision_s_option(monkeypatch):
    import torchvision.utils as tvu

    img = torch.full((3, 64, 64), 40, dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 20.0, 56.0, 60.0]])
    color = (255, 99, 71)
    outs = [compat.draw_labelled_boxes(img, boxes, ["ring 0.90"], [color], 2)]
    plain = tvu.draw_bounding_boxes

    def without_fill_labels(image, boxes, labels=None, colors=None, fill=False, width=1, font=None, font_size=None):
        return plain(image, boxes, labels=labels, colors=colors, fill=fill, width=width, font=font, font_size=font_size)

    monkeypatch.setattr(tvu, "draw_bounding_boxes", without_fill_labels)  # torchvision 0.19's signature
    outs.append(compat.draw_labelled_boxes(img, boxes, ["ring 0.90"], [color], 2))
    for out in outs:
        assert out.shape == img.shape and out.dtype == torch.uint8
        label = out[:, 24:36, 12:50]  # just inside the box's top-left corner
        assert (label == torch.tensor(color, dtype=torch.uint8)[:, None, None]).all(0).float().mean() > 0.4  # filled
        assert (label.int().sum(0) < 100).any()  # dark text on it
        assert (out[:, 40:50, 20:40] == 40).all()  # the inside of the box is untouched
