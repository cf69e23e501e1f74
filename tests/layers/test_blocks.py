"""BoT block (Fig. 1, Fig. 12), SE and Non-Local blocks against explicit compositions."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from botnet.layers import BoTBlock, Bottleneck, NonLocal2d, SEModule


def _randomize_bn(module):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)


def test_strided_bot_block_pools_after_attention_with_strided_1x1_shortcut():
    torch.manual_seed(0)
    blk = BoTBlock(64, 32, stride=2, feat_size=8).eval()
    _randomize_bn(blk)
    x = torch.randn(2, 64, 8, 8)
    y = blk.act1(blk.bn1(blk.conv1(x)))
    y = F.avg_pool2d(blk.attn(y), 2, 2)  # attention at 8x8, then 2x2 average pooling
    y = blk.bn3(blk.conv3(blk.act2(blk.bn2(y))))
    sc_conv = blk.downsample[0]
    assert sc_conv.kernel_size == (1, 1) and sc_conv.stride == (2, 2)
    expected = torch.relu(y + blk.downsample(x))
    torch.testing.assert_close(blk(x), expected)
    assert blk(x).shape == (2, 128, 4, 4)
    assert blk.attn.pos.feat_size == (8, 8)


def test_unstrided_bot_block_keeps_identity_shortcut():
    blk = BoTBlock(128, 32, stride=1, feat_size=(4, 6))
    assert blk.downsample is None and isinstance(blk.pool, nn.Identity)
    assert blk(torch.randn(1, 128, 4, 6)).shape == (1, 128, 4, 6)
    with pytest.raises(ValueError):
        BoTBlock(128, 32, stride=3)


def test_bottleneck_v1_and_v15_strides():
    v15 = Bottleneck(64, 16, stride=2)
    v1 = Bottleneck(64, 16, stride=2, stride_in_1x1=True)
    assert v15.conv1.stride == (1, 1) and v15.conv2.stride == (2, 2)
    assert v1.conv1.stride == (2, 2) and v1.conv2.stride == (1, 1)
    x = torch.randn(1, 64, 8, 8)
    assert v15(x).shape == v1(x).shape == (1, 64, 4, 4)


def test_se_module_matches_formula():
    torch.manual_seed(1)
    se = SEModule(64)
    assert se.fc1.out_channels == 4  # 64 / 16
    x = torch.randn(2, 64, 5, 5)
    s = x.mean((2, 3))
    gate = torch.sigmoid(F.linear(torch.relu(F.linear(s, se.fc1.weight[:, :, 0, 0], se.fc1.bias)), se.fc2.weight[:, :, 0, 0], se.fc2.bias))
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])


def test_non_local_block():
    torch.manual_seed(2)
    nl = NonLocal2d(32).eval()
    x = torch.randn(2, 32, 4, 5)
    torch.testing.assert_close(nl(x), x)  # zero-initialised BN: starts as the identity
    assert nl.g is None and nl.out.in_channels == 32  # no value projection (BoTNet Fig. 4)
    _randomize_bn(nl)
    theta, phi = nl.theta(x).flatten(2), nl.phi(x).flatten(2)  # (B, 16, N)
    attn = torch.softmax(theta.transpose(1, 2) @ phi, -1)  # one head, no scaling, no positions
    y = (x.flatten(2) @ attn.transpose(1, 2)).reshape(2, 32, 4, 5)
    torch.testing.assert_close(nl(x), x + nl.bn(nl.out(y)))
    nlv = NonLocal2d(32, value_proj=True)
    assert nlv.g.out_channels == 16 and nlv.out.in_channels == 16
    assert nlv(x).shape == x.shape


def test_drop_path_only_in_training():
    torch.manual_seed(3)
    blk = Bottleneck(64, 16, drop_path=0.5)
    x = torch.randn(16, 64, 4, 4)
    blk.eval()
    torch.testing.assert_close(blk(x), blk(x))
    blk.train()
    assert not torch.allclose(blk(x), blk(x))
