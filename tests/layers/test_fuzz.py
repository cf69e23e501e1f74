"""Property tests (hypothesis) of the attention layers and blocks over random small configurations.

Shapes (non-square maps, 1-pixel rows, maps of another size than ``feat_size``), dtypes (float32,
float64, bfloat16) and values (zeros, tiny, large magnitudes): the output has the right shape and
dtype and is finite wherever the input is; every MHSA kernel (reference, chunked, sdpa_bias, sdpa_fold)
agrees with the reference; impossible configurations
raise ``ValueError`` (the last tests cover the gaps fuzzing found: non-positive heads, head_dim 0,
modules with 0 inner channels, an odd map into a stride-2 BoT block).
"""

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from botnet.layers import KERNELS, POS_ENCODINGS, BoTBlock, MHSA2d, NonLocal2d, RelPosEmb2d, SEModule, use_kernel

# the number of examples and the randomness come from the profile (tests/conftest.py): a fixed,
# derandomized set in CI, 20x as many random ones under `make fuzz`
FUZZ = settings()
DTYPES = st.sampled_from([torch.float32, torch.float64, torch.bfloat16])
SCALES = st.sampled_from([0.0, 1e-6, 1.0, 1e3, 1e4])
SIDE = st.integers(1, 7)
# every exact kernel, the CPU default (chunked) and the CUDA default (sdpa_fold) among them
FUZZ_KERNELS = tuple(k for k in KERNELS if k != "auto")
assert FUZZ_KERNELS[0] == "reference"


def _input(shape, dtype, scale, seed, spike=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    if spike and x.numel():
        x.view(-1)[0] = 1e4  # one large value among small ones
    return x.to(dtype)


def _finite(t):
    return bool(torch.isfinite(t.float()).all())


@st.composite
def mhsa_configs(draw):
    heads, head_dim = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    pos_enc = draw(st.sampled_from(POS_ENCODINGS))
    content = True if pos_enc == "none" else draw(st.booleans())
    return dict(dim=heads * head_dim, num_heads=heads, feat_size=(draw(SIDE), draw(SIDE)), pos_enc=pos_enc,
                content=content, qkv_bias=draw(st.booleans()))


@FUZZ
@given(cfg=mhsa_configs(), size=st.tuples(SIDE, SIDE), batch=st.integers(1, 2), dtype=DTYPES, scale=SCALES,
       spike=st.booleans(), seed=st.integers(0, 2**16))
# issue 18: chunked was wrong on every H x 1 map with batch x heads > 1 (the case hypothesis shrank to)
@example(cfg=dict(dim=4, num_heads=2, feat_size=(2, 1), pos_enc="relative", content=False, qkv_bias=False),
         size=(2, 1), batch=1, dtype=torch.float64, scale=1.0, spike=False, seed=0)
def test_mhsa_shapes_dtypes_values(cfg, size, batch, dtype, scale, spike, seed):
    torch.manual_seed(seed)
    layer = MHSA2d(**cfg).to(dtype)
    x = _input((batch, cfg["dim"], *size), dtype, scale, seed, spike)
    outs = {}
    for kernel in FUZZ_KERNELS:
        with use_kernel(kernel), torch.no_grad():
            y = layer(x)
        assert y.shape == x.shape and y.dtype == dtype, kernel
        assert _finite(y), (kernel, cfg, size, dtype, scale)
        outs[kernel] = y.double()
    if dtype == torch.float64 and scale <= 1 and not spike:
        # the kernels are exact rewrites of each other; the reference's softmax runs in float32
        # (by design), so they are compared where the logits are O(1)
        ref = outs["reference"]
        tol = 1e-6 * max(1.0, float(ref.abs().max()))
        for kernel in FUZZ_KERNELS[1:]:
            assert torch.allclose(outs[kernel], ref, rtol=1e-6, atol=tol), kernel


@FUZZ
@given(feat=st.tuples(SIDE, SIDE), size=st.tuples(SIDE, SIDE), head_dim=st.integers(1, 8), heads=st.integers(1, 3),
       dtype=DTYPES, scale=SCALES, seed=st.integers(0, 2**16))
def test_rel_pos_emb_any_size(feat, size, head_dim, heads, dtype, scale, seed):
    torch.manual_seed(seed)
    emb = RelPosEmb2d(feat, head_dim).to(dtype)
    q = _input((2, heads, size[0] * size[1], head_dim), dtype, scale, seed)
    with torch.no_grad():
        logits = emb(q, size)
        rows, cols = emb.axis_logits(q, size)
    n = size[0] * size[1]
    assert logits.shape == (2, heads, n, n) and logits.dtype == dtype and _finite(logits)
    assert rows.shape == (2, heads, n, size[0]) and cols.shape == (2, heads, n, size[1])
    if scale == 0.0:
        assert not logits.any()


@FUZZ
@given(channels=st.integers(1, 48), rd=st.sampled_from([1 / 16, 0.25, 1.0]), size=st.tuples(SIDE, SIDE),
       dtype=DTYPES, scale=SCALES, seed=st.integers(0, 2**16))
def test_se_module_gates_between_zero_and_one(channels, rd, size, dtype, scale, seed):
    torch.manual_seed(seed)
    se = SEModule(channels, rd_ratio=rd).to(dtype)
    x = _input((2, channels, *size), dtype, scale, seed)
    with torch.no_grad():
        y = se(x)
    assert y.shape == x.shape and y.dtype == dtype and _finite(y)
    assert bool((y.double().abs() <= x.double().abs() * 1.01 + 1e-30).all())  # x * sigmoid(.): never amplified


@FUZZ
@given(channels=st.integers(2, 16), value_proj=st.booleans(), size=st.tuples(SIDE, SIDE), dtype=DTYPES,
       scale=SCALES, train=st.booleans(), seed=st.integers(0, 2**16))
def test_non_local_starts_as_identity(channels, value_proj, size, dtype, scale, train, seed):
    torch.manual_seed(seed)
    block = NonLocal2d(channels, value_proj=value_proj).to(dtype).train(train)
    x = _input((2, channels, *size), dtype, scale, seed)
    with torch.no_grad():
        y = block(x)
    assert y.shape == x.shape and y.dtype == dtype and _finite(y)
    assert torch.equal(y, x)  # the zero-initialised BN makes a new block the identity
    torch.nn.init.ones_(block.bn.weight)
    with torch.no_grad():
        assert _finite(block(x))


@FUZZ
@given(in_chs=st.integers(1, 16), heads=st.integers(1, 2), head_dim=st.integers(1, 4), stride=st.sampled_from([1, 2]),
       half=st.tuples(st.integers(1, 4), st.integers(1, 4)), feat=st.tuples(SIDE, SIDE), se=st.booleans(),
       dtype=DTYPES, scale=SCALES, seed=st.integers(0, 2**16))
def test_bot_block_shapes(in_chs, heads, head_dim, stride, half, feat, se, dtype, scale, seed):
    torch.manual_seed(seed)
    planes = heads * head_dim
    size = (half[0] * stride, half[1] * stride)  # a stride-2 block needs even sides
    block = BoTBlock(in_chs, planes, stride=stride, feat_size=feat, num_heads=heads, se=se).to(dtype).eval()
    x = _input((2, in_chs, *size), dtype, scale, seed)
    with torch.no_grad():
        y = block(x)
    assert y.shape == (2, 4 * planes, size[0] // stride, size[1] // stride) and y.dtype == dtype and _finite(y)


@settings(max_examples=30, deadline=None)
@given(heads=st.integers(2, 8), extra=st.integers(1, 7))
def test_dim_not_divisible_by_heads_is_a_value_error(heads, extra):
    dim = heads * 3 + (extra % heads or 1)
    with pytest.raises(ValueError, match=rf"dim \({dim}\) must be divisible by num_heads \({heads}\)"):
        MHSA2d(dim, num_heads=heads)
    with pytest.raises(ValueError, match="must be divisible by num_heads"):
        BoTBlock(64, dim, num_heads=heads)


@pytest.mark.parametrize("make,match", [
    (lambda: MHSA2d(8, 2, pos_enc="sinusoidal"), "pos_enc must be one of"),
    (lambda: MHSA2d(8, 2, kernel="flash"), "kernel must be one of"),
    (lambda: MHSA2d(8, 2, pos_enc="none", content=False), "needs content logits"),
    (lambda: MHSA2d(8, 2, feat_size=(3, 0)), "feat_size must be positive"),
    (lambda: RelPosEmb2d(0, 4), "feat_size must be positive"),
    (lambda: BoTBlock(16, 8, stride=3), "stride 1 or 2"),
], ids=["pos_enc", "kernel", "no logits", "feat_size 0", "rel feat 0", "stride 3"])
def test_impossible_configurations_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# Gaps fuzzing found, now refused with a ValueError.


@pytest.mark.parametrize("heads", [0, -2])
def test_refuses_non_positive_heads(heads):
    with pytest.raises(ValueError):
        MHSA2d(8, num_heads=heads)


def test_refuses_zero_head_dim():
    with pytest.raises(ValueError):
        RelPosEmb2d(4, 0)


def test_refuses_zero_channels():
    with pytest.raises(ValueError):
        SEModule(0)
    with pytest.raises(ValueError):
        NonLocal2d(1)


def test_refuses_stride_two_block_on_odd_map():
    block = BoTBlock(16, 4, stride=2, feat_size=5, num_heads=2).eval()
    with pytest.raises(ValueError):
        block(torch.randn(1, 16, 5, 5))
