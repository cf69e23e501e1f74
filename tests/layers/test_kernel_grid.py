"""Every MHSA kernel against the brute-force reference on a fixed grid of shapes (issue 18).

Degenerate maps (1x1, 1xN, Nx1, 2x1, 1x2), small primes and non-square maps are checked against
the loop-by-loop reference (tests/reference.py: ``mhsa_reference``); the sizes the models see
(7x7, 8x8, 14x14, 16x16, 32x32, thin 13x1 / 1x13) against the same definition vectorised
(``mhsa_dense_reference``). Every position encoding, content on and off, batch 1 and 2, float32
and float64, outputs and the gradients of x and of every parameter (qkv weight, both relative
tables, both absolute embeddings). ``chunked`` runs twice: with its default block sizes and with
one query per block and P recomputed in the backward. ``flex`` (eager FlexAttention; forward only:
it has no CPU backward) runs where this torch has it, on maps of up to 16 positions. Then whole models: every registered model at
its smallest input and at thin inputs gives the same logits under ``reference`` and the default.
"""

from __future__ import annotations

import contextlib
import zlib

import pytest
import torch

import botnet
from botnet.layers import MHSA2d, use_kernel
from botnet.layers import chunked_attn
from botnet.layers.mhsa import AUTO_ORDER, kernel_handles
from reference import mhsa_dense_reference, mhsa_reference

from botnet.compat import HAS_FLEX
from botnet.layers.fused_attn import flex_attention_rel

SWITCHES = [(p, c) for p in ("relative", "absolute", "none") for c in (True, False) if p != "none" or c]
SMALL = [(1, 1), (1, 2), (2, 1), (1, 5), (5, 1), (3, 1), (1, 3), (2, 2), (3, 5), (5, 3), (2, 7), (7, 2), (4, 4)]
MODEL = [(7, 7), (8, 8), (13, 1), (1, 13), (14, 14), (16, 16), (32, 32)]
KERNELS = ["reference", "chunked", "chunked_blocks", "sdpa_bias", "sdpa_fold"]
TOL = {torch.float64: 1e-6, torch.float32: 2e-4}
# the reference kernel's softmax runs in float32 whatever the input dtype (by design): in float64 it
# is as exact as float32
TOL_F32_SOFTMAX = 2e-5


@contextlib.contextmanager
def _kernel(name):
    """use_kernel(name); ``chunked_blocks``: chunked with one query per block and no kept P."""
    if name != "chunked_blocks":
        with use_kernel(name):
            yield
        return
    saved = chunked_attn.CHUNK_BYTES, chunked_attn.SAVE_BYTES
    chunked_attn.CHUNK_BYTES, chunked_attn.SAVE_BYTES = 1, 0
    try:
        with use_kernel("chunked"):
            yield
    finally:
        chunked_attn.CHUNK_BYTES, chunked_attn.SAVE_BYTES = saved


def _layer(size, pos_enc, content, dtype, seed):
    torch.manual_seed(seed)
    m = MHSA2d(8, num_heads=2, feat_size=(3, 4), pos_enc=pos_enc, content=content)  # tables resized to `size`
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)  # logits of order 1: softmax far from uniform
    return m.to(dtype)


def _run(m, fn, x, g):
    """Output and gradients (x and every parameter) of fn(x) against the cotangent g."""
    m.zero_grad()
    xi = x.clone().requires_grad_(True)
    out = fn(xi)
    out.backward(g)
    return out.detach(), xi.grad, {n: p.grad.clone() for n, p in m.named_parameters()}


def _close(a, b, tol, what):
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    torch.testing.assert_close(a, b.to(a.dtype), atol=tol * scale, rtol=tol, msg=lambda m: f"{what}: {m}")


def _check_grid(size, pos_enc, content, batch, reference):
    """Every kernel in float64 and float32 against one float64 evaluation of ``reference``."""
    seed = zlib.crc32(repr((size, pos_enc, content, batch)).encode()) % 2**16  # the same in every run
    m = _layer(size, pos_enc, content, torch.float64, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 8, *size, generator=gen, dtype=torch.float64)
    g = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    ref = _run(m, lambda t: reference(m, t), x, g)
    assert ref[2], "no parameters"
    for dtype in (torch.float64, torch.float32):
        m, xd, gd = m.to(dtype), x.to(dtype), g.to(dtype)
        for kernel in KERNELS:
            tol = TOL_F32_SOFTMAX if kernel == "reference" and dtype == torch.float64 else TOL[dtype]
            with _kernel(kernel):
                out, gx, gp = _run(m, m, xd, gd)
            where = f"{kernel} {size} {pos_enc} content={content} batch={batch} {dtype}"
            assert out.dtype == dtype
            _close(out, ref[0], tol, f"{where} output")
            _close(gx, ref[1], tol, f"{where} grad x")
            assert gp.keys() == ref[2].keys()
            for name in gp:
                _close(gp[name], ref[2][name], tol, f"{where} grad {name}")
        if HAS_FLEX and size[0] * size[1] <= 16:
            with torch.no_grad():
                q, k, v = m.split_heads(xd)
                row, col = m.pos.axis_logits(q, size) if m.pos is not None else (None, None)
                out = flex_attention_rel(q, k, v, row, col, compile=False).transpose(-1, -2).reshape(xd.shape)
            _close(out, ref[0], TOL[dtype], f"flex {size} {pos_enc} content={content} batch={batch} {dtype} output")


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("pos_enc,content", SWITCHES, ids=[f"{p}-{'qk' if c else 'noqk'}" for p, c in SWITCHES])
@pytest.mark.parametrize("size", SMALL, ids=[f"{h}x{w}" for h, w in SMALL])
def test_every_kernel_matches_bruteforce_on_degenerate_and_small_maps(size, pos_enc, content, batch):
    _check_grid(size, pos_enc, content, batch, mhsa_reference)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("pos_enc,content", SWITCHES, ids=[f"{p}-{'qk' if c else 'noqk'}" for p, c in SWITCHES])
@pytest.mark.parametrize("size", MODEL, ids=[f"{h}x{w}" for h, w in MODEL])
def test_every_kernel_matches_the_definition_at_model_sizes(size, pos_enc, content, batch):
    _check_grid(size, pos_enc, content, batch, mhsa_dense_reference)


def test_dense_reference_is_the_bruteforce_reference():
    """The vectorised reference used at model sizes equals the loop-by-loop one."""
    for pos_enc, content in SWITCHES:
        m = _layer((3, 5), pos_enc, content, torch.float64, 7)
        x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
        torch.testing.assert_close(mhsa_dense_reference(m, x, block=4), mhsa_reference(m, x), atol=1e-12, rtol=1e-12)


def test_auto_takes_only_kernels_that_handle_the_call(monkeypatch):
    """auto passes over a kernel that does not handle a shape, and the fallback is exact."""
    m = _layer((2, 1), "relative", True, torch.float64, 3)
    x = torch.randn(2, 8, 2, 1, dtype=torch.float64)
    cpu = torch.device("cpu")
    assert m.resolved_kernel(cpu, (2, 1), True) == AUTO_ORDER["cpu"][0] == "chunked"
    import botnet.layers.mhsa as mhsa

    def no_thin_chunked(kernel, size, device, needs_grad):
        return not (kernel == "chunked" and min(size) == 1) and kernel_handles(kernel, size, device, needs_grad)

    monkeypatch.setattr(mhsa, "kernel_handles", no_thin_chunked)
    assert m.resolved_kernel(cpu, (2, 1), True) == "sdpa_fold"
    assert m.resolved_kernel(cpu, (2, 2), True) == "chunked"
    with use_kernel("reference"):
        ref = m(x)
    torch.testing.assert_close(m(x), ref, atol=1e-6, rtol=1e-6)
    # flex has no backward on CPU: it is never a choice for a call that needs one
    assert not kernel_handles("flex", (4, 4), cpu, True)
    assert kernel_handles("flex", (4, 4), cpu, False) == HAS_FLEX  # forward only, where torch has FlexAttention
    assert all(kernel_handles(k, s, cpu, True) for k in AUTO_ORDER["cpu"] for s in SMALL + MODEL)


MODELS = botnet.list_models()
INPUTS = [(32, 32), (64, 32), (32, 64), (96, 32)]


@pytest.mark.parametrize("name", MODELS)
def test_models_give_the_same_logits_under_reference_and_default(name):
    """Every registered model at its smallest input (32x32) and at thin inputs (c5 maps of 2x1,
    1x2, 3x1): the default kernel (auto) and the reference kernel give the same logits. A model
    without attention layers runs no kernel: it is checked at the smallest input only."""
    torch.manual_seed(0)
    model = botnet.create_model(name, num_classes=5, img_size=64).eval()
    has_attention = any(isinstance(m, MHSA2d) for m in model.modules())
    for size in INPUTS if has_attention else INPUTS[:1]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            default = model(x)
            with use_kernel("reference"):
                ref = model(x)
        assert default.shape == (1, 5)
        torch.testing.assert_close(default, ref, atol=1e-4, rtol=1e-4, msg=lambda m: f"{name} at {size}: {m}")
