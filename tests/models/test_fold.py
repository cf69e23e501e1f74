"""botnet.models.fold: Conv + BN folding and the inference layout give the unfolded model's outputs."""

import pytest
import torch
from torch import nn

from botnet.models import create_model
from botnet.models.fold import conv_bn_pairs, fold_batchnorm, optimize_for_inference
from botnet.models.timm_botnets import MODEL_CFGS

# timm's family at a small size (the layout and the pairs do not depend on it) and a paper model
CASES = [(name, 64) for name in MODEL_CFGS] + [("botnet50", 64)]


def _randomised(name: str, size: int) -> nn.Module:
    """The model with BatchNorm statistics and affine parameters far from their defaults (a fold of
    fresh BNs would be close to the identity and prove little), in eval mode."""
    torch.manual_seed(0)
    model = create_model(name, img_size=size)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)
    return model.eval()


@pytest.mark.parametrize("name,size", CASES)
def test_folded_model_matches_the_unfolded_one(name, size):
    model = _randomised(name, size)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want = model(x)
        folded = fold_batchnorm(model)
        fast = optimize_for_inference(model)
        got, got_cl = folded(x), fast(x)
        got_cl_in = fast(x.contiguous(memory_format=torch.channels_last))
    scale = want.abs().max()
    for out in (got, got_cl, got_cl_in):
        assert ((out - want).abs().max() / scale) < 1e-4
    # every BN after a convolution is gone, the BoT blocks' bn2 (after attention) stays
    n_bn = lambda m: sum(isinstance(s, nn.BatchNorm2d) for s in m.modules())
    n_attn = sum(1 for n, _ in model.named_modules() if n.endswith(".attn"))
    assert n_bn(folded) == n_attn and n_bn(model) == len(conv_bn_pairs(model)) + n_attn
    assert all(model.get_submodule(c).bias is None and folded.get_submodule(c).bias is not None
               for c, _ in conv_bn_pairs(model))
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert n_bn(model) > n_attn  # the copy's fold left the original alone


def test_pairs_need_a_conv_whose_output_only_the_bn_reads():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.conv2, self.bn2 = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            z = self.conv2(self.bn(y))
            return self.bn2(z) + y  # conv's output is read twice: its BN cannot absorb it

    m = Branch().eval()
    m.bn.running_mean.normal_()
    assert conv_bn_pairs(m) == [("conv2", "bn2")]
    x = torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(m)(x), m(x), rtol=1e-5, atol=1e-5)


def test_fold_inplace_returns_the_same_module_in_eval_mode():
    model = _randomised("botnet26t_256", 64).train()
    assert fold_batchnorm(model, inplace=True) is model and not model.training
