"""The fused-kernel forms (botnet.layers.fused_attn) against the brute-force reference: the
zero-padded ``sdpa_fold`` (outputs and gradients, float32 and bfloat16, and that the padding makes
SDPA's flash kernel eligible) and the ``flex`` candidate (forward; FlexAttention has no CPU backward;
torch 2.4 has no FlexAttention: there the flex tests are skipped and the kernel must be refused)."""

import copy

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from botnet.compat import FLEX_MISSING, HAS_FLEX
from botnet.layers import CANDIDATE_KERNELS, MHSA2d, use_kernel
from botnet.layers.fused_attn import flex_attention_rel, fold_attention, fold_width
from reference import mhsa_reference

needs_flex = pytest.mark.skipif(not HAS_FLEX, reason=FLEX_MISSING)
SWITCHES = [(p, c) for p in ("relative", "absolute", "none") for c in (True, False) if p != "none" or c]


def _grads(m, x, g, fn):
    m.zero_grad()
    xi = x.clone().requires_grad_(True)
    out = fn(m, xi)
    out.backward(g.to(out.dtype))
    return out.detach().double(), xi.grad.double(), {n: p.grad.double() for n, p in m.named_parameters()}


def test_fold_width_is_a_common_multiple_of_eight():
    assert fold_width(128 + 14 + 14, 128) == 160  # BoT50 c5 at 224
    assert fold_width(128 + 7 + 7, 128) == 144
    assert fold_width(128 + 32 + 32, 128) == 192  # c5 at 1024 (detection)
    assert fold_width(128, 128) == 128  # no position terms: nothing to pad
    assert fold_width(6 + 3 + 5, 6) == 16


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("pos_enc,content", SWITCHES)
def test_padded_fold_matches_bruteforce(pos_enc, content, dtype, tol):
    """sdpa_fold in float32 and bfloat16 against the brute force in float64, same weights."""
    torch.manual_seed(0)
    m = MHSA2d(16, num_heads=2, feat_size=(3, 5), pos_enc=pos_enc, content=content, kernel="sdpa_fold")
    x, g = torch.randn(2, 16, 3, 5), torch.randn(2, 16, 3, 5)
    ref = _grads(copy.deepcopy(m).double(), x.double(), g.double(), mhsa_reference)
    got = _grads(m.to(dtype), x.to(dtype), g.to(dtype), lambda mod, t: mod(t))
    scale = lambda t: max(1.0, float(t.abs().max()))
    for a, b, what in ((got[0], ref[0], "out"), (got[1], ref[1], "grad x")):
        torch.testing.assert_close(a, b, atol=tol * scale(b), rtol=tol, msg=what)
    assert got[2].keys() == ref[2].keys()
    for name in ref[2]:
        torch.testing.assert_close(got[2][name], ref[2][name], atol=tol * scale(ref[2][name]), rtol=tol, msg=name)


def _fold_inputs(b=2, nh=4, h=14, w=14, d=128, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    n = h * w
    mk = lambda *s: torch.randn(*s, generator=gen).to(dtype)
    return mk(b, nh, n, d) * d**-0.5, mk(b, nh, n, d), mk(b, nh, n, d), mk(b, nh, n, h), mk(b, nh, n, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padding_makes_flash_eligible_and_changes_nothing(dtype):
    """At BoT50 c5 at 224 (14x14, head_dim 128) the unpadded fold (156-wide q/k, 128-wide v) has no
    flash kernel; the padded one (160 everywhere) runs on it, with the math path's result."""
    q, k, v, row, col = _fold_inputs(dtype=dtype)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        with pytest.raises(RuntimeError):
            fold_attention(q, k, v, row, col, pad=False)
        flash = fold_attention(q, k, v, row, col)
    with sdpa_kernel([SDPBackend.MATH]):
        math = fold_attention(q, k, v, row, col, pad=False)
    assert flash.shape == v.shape and flash.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(flash.float(), math.float(), atol=tol, rtol=tol)


def test_padded_fold_gradients_on_the_flash_kernel():
    q, k, v, row, col = (t.requires_grad_(True) for t in _fold_inputs(b=1, nh=2, h=6, w=5, d=16))
    g = torch.randn_like(v)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        flash = torch.autograd.grad(fold_attention(q, k, v, row, col), (q, k, v, row, col), g)
    logits = q @ k.mT + (row[..., :, None] + col[..., None, :]).flatten(-2)
    plain = torch.autograd.grad(torch.softmax(logits, -1) @ v, (q, k, v, row, col), g)
    for a, b, name in zip(flash, plain, "q k v row col".split()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)


@needs_flex
@pytest.mark.parametrize("pos_enc,content", SWITCHES)
@pytest.mark.parametrize("size", [(4, 4), (3, 5)])
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_matches_bruteforce_forward(pos_enc, content, size):
    torch.manual_seed(2)
    m = MHSA2d(16, num_heads=2, feat_size=size, pos_enc=pos_enc, content=content)
    x = torch.randn(2, 16, *size)
    with torch.no_grad():
        ref = mhsa_reference(m, x)
        q, k, v = m.split_heads(x)
        row, col = m.pos.axis_logits(q, size) if m.pos is not None else (None, None)
        out = flex_attention_rel(q, k, v, row, col, compile=False)  # eager FlexAttention
        out = out.transpose(-1, -2).reshape(x.shape)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@needs_flex
@pytest.mark.slow
def test_flex_kernel_compiled_matches_bruteforce():
    """The compiled FlexAttention kernel (inductor on CPU, about 20 s to compile), via the layer."""
    torch.manual_seed(3)
    m = MHSA2d(16, num_heads=2, feat_size=(3, 5), kernel="flex")
    x = torch.randn(1, 16, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(m(x), mhsa_reference(m, x), atol=1e-5, rtol=1e-5)


@needs_flex
def test_flex_refuses_backward_on_cpu_with_a_clear_error():
    m = MHSA2d(8, num_heads=2, feat_size=3)
    with use_kernel("flex"), pytest.raises(RuntimeError, match="no backward on CPU"):
        m(torch.randn(1, 8, 3, 3))


@pytest.mark.skipif(HAS_FLEX, reason="this torch has FlexAttention: the flex kernel is accepted")
def test_flex_is_refused_with_its_reason_where_torch_has_no_flex_attention():
    assert CANDIDATE_KERNELS == ()
    for make in (lambda: MHSA2d(8, num_heads=2, feat_size=3, kernel="flex"), lambda: use_kernel("flex").__enter__()):
        with pytest.raises(ValueError, match=r"kernel 'flex' needs torch.nn.attention.flex_attention \(torch >= 2.5\)"):
            make()
    with pytest.raises(RuntimeError, match="needs torch.nn.attention.flex_attention"):
        flex_attention_rel(*torch.randn(3, 1, 1, 4, 2), None, None)
    assert MHSA2d(8, num_heads=2, feat_size=3).resolved_kernel(torch.device("cpu")) == "chunked"  # auto


def test_sdpa_fold_kernel_output_is_unpadded():
    m = MHSA2d(24, num_heads=2, feat_size=(3, 5))  # head_dim 12, folded 20 -> padded 24
    x = torch.randn(1, 24, 3, 5)
    with use_kernel("sdpa_fold"):
        y = m(x)
    assert y.shape == x.shape
    q, k, v = m.split_heads(x)
    row, col = m.pos.axis_logits(q, (3, 5))
    padded = fold_attention(q, k, v, row, col)
    unpadded = fold_attention(q, k, v, row, col, pad=False)
    assert padded.shape == unpadded.shape == v.shape
    torch.testing.assert_close(padded, unpadded, atol=1e-6, rtol=1e-6)
