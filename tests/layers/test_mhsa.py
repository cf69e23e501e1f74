"""MHSA2d against the brute-force reference, and the Table 4 ablation switches."""

import pytest
import torch

from botnet.layers import KERNELS, MHSA2d, use_kernel
from reference import mhsa_reference

EXACT_KERNELS = [k for k in KERNELS if k != "auto"]

torch.set_default_dtype(torch.float32)


def _pair(m, x):
    """Outputs and gradients (input and every parameter) of the layer and the reference."""
    g = torch.randn_like(x)
    res = []
    for fn in (m, lambda t: mhsa_reference(m, t)):
        m.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = fn(xi)
        out.backward(g)
        grads = {n: p.grad.clone() for n, p in m.named_parameters()}
        res.append((out.detach(), xi.grad.clone(), grads))
    return res


# every valid switch setting: (relative|absolute|none) x (content on|off), less none without content
SWITCHES = [(p, c) for p in ("relative", "absolute", "none") for c in (True, False) if p != "none" or c]


@pytest.mark.parametrize("kernel", EXACT_KERNELS)
@pytest.mark.parametrize("pos_enc,content", SWITCHES)
@pytest.mark.parametrize("size", [(4, 4), (3, 5)])
def test_matches_bruteforce(pos_enc, content, size, kernel):
    torch.manual_seed(0)
    h, w = size
    m = MHSA2d(16, num_heads=2, feat_size=size, pos_enc=pos_enc, content=content, kernel=kernel)
    x = torch.randn(2, 16, h, w)
    (o1, gx1, gp1), (o2, gx2, gp2) = _pair(m, x)
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx1, gx2, atol=1e-5, rtol=1e-5)
    assert gp1.keys() == gp2.keys() and gp1
    for name in gp1:
        torch.testing.assert_close(gp1[name], gp2[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("kernel", EXACT_KERNELS)
@pytest.mark.parametrize("built,run", [((4, 4), (6, 3)), ((5, 3), (2, 2)), ((3, 3), (1, 1))])
def test_other_size_matches_bruteforce_with_resized_tables(built, run, kernel):
    torch.manual_seed(1)
    m = MHSA2d(8, num_heads=2, feat_size=built, kernel=kernel)
    x = torch.randn(1, 8, *run)
    (o1, gx1, gp1), (o2, gx2, gp2) = _pair(m, x)
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
    for name in gp1:
        torch.testing.assert_close(gp1[name], gp2[name], atol=1e-5, rtol=1e-5, msg=name)


def _shared(pos_enc, content, ref: MHSA2d) -> MHSA2d:
    """A layer with another switch setting that shares ref's q/v weights and tables."""
    m = MHSA2d(ref.dim, ref.num_heads, ref.pos.feat_size if ref.pos else 4, pos_enc=pos_enc, content=content)
    c = ref.dim
    with torch.no_grad():
        w = ref.qkv.weight
        m.qkv.weight.copy_(w if content else torch.cat([w[:c], w[-c:]]))
        if m.pos is not None and ref.pos is not None:
            m.pos.load_state_dict(ref.pos.state_dict())
    return m


def test_switches_change_only_their_term():
    torch.manual_seed(2)
    full = MHSA2d(16, 4, (5, 4), pos_enc="relative", content=True)
    x = torch.randn(2, 16, 5, 4)
    q, k, _ = full.split_heads(x)
    qk = q @ k.transpose(-1, -2)
    qr = full.pos(q, (5, 4))
    torch.testing.assert_close(full.attention_logits(q, k, (5, 4)), qk + qr)

    qk_only = _shared("none", True, full)  # Table 4 "qk^T"
    q2, k2, _ = qk_only.split_heads(x)
    torch.testing.assert_close(qk_only.attention_logits(q2, k2, (5, 4)), qk)

    qr_only = _shared("relative", False, full)  # Table 4 "qr^T relative"
    q3, k3, _ = qr_only.split_heads(x)
    assert k3 is None
    torch.testing.assert_close(qr_only.attention_logits(q3, k3, (5, 4)), qr)
    # the value path is untouched by the switches: uniform logits give the mean of v for all three
    for m in (full, qk_only, qr_only):
        _, _, v = m.split_heads(x)
        torch.testing.assert_close(v, full.split_heads(x)[2])


def test_switch_parameters():
    names = lambda m: {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert names(MHSA2d(32, 4, (7, 5))) == {"qkv.weight": (96, 32, 1, 1), "pos.rel_height": (13, 8), "pos.rel_width": (9, 8)}
    assert names(MHSA2d(32, 4, (7, 5), pos_enc="absolute")) == {
        "qkv.weight": (96, 32, 1, 1), "pos.emb_height": (7, 8), "pos.emb_width": (5, 8)}
    assert names(MHSA2d(32, 4, (7, 5), pos_enc="none")) == {"qkv.weight": (96, 32, 1, 1)}
    assert names(MHSA2d(32, 4, (7, 5), content=False)) == {
        "qkv.weight": (64, 32, 1, 1), "pos.rel_height": (13, 8), "pos.rel_width": (9, 8)}


def test_no_position_is_permutation_equivariant_and_relative_is_not():
    torch.manual_seed(3)
    x = torch.randn(1, 8, 4, 4)
    perm = torch.randperm(16)
    permute = lambda t: t.flatten(2)[:, :, perm].reshape(t.shape)
    m = MHSA2d(8, 2, 4, pos_enc="none")
    torch.testing.assert_close(m(permute(x)), permute(m(x)), atol=1e-6, rtol=1e-5)
    r = MHSA2d(8, 2, 4, pos_enc="relative")
    assert not torch.allclose(r(permute(x)), permute(r(x)), atol=1e-4)


def test_needs_some_logits_and_valid_options():
    with pytest.raises(ValueError, match="content"):
        MHSA2d(8, 2, 4, pos_enc="none", content=False)
    with pytest.raises(ValueError, match="pos_enc"):
        MHSA2d(8, 2, 4, pos_enc="rotary")
    with pytest.raises(ValueError, match="divisible"):
        MHSA2d(10, 4, 4)


def test_init_and_scale():
    torch.manual_seed(4)
    m = MHSA2d(512, 4, 64)  # head_dim 128, tables (127, 128)
    assert m.scale == 128**-0.5
    for t in (m.pos.rel_height, m.pos.rel_width):
        assert abs(t.std().item() - 128**-0.5) < 0.01 and abs(t.mean().item()) < 0.01


@pytest.mark.parametrize("kernel", EXACT_KERNELS)
def test_bf16_autocast_stays_close(kernel):
    torch.manual_seed(5)
    m = MHSA2d(32, 4, (6, 6), kernel=kernel)
    x = torch.randn(2, 32, 6, 6)
    with use_kernel("reference"):
        ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)


def test_attention_rows_sum_to_one():
    m = MHSA2d(16, 4, (3, 5))
    a = m.attention(torch.randn(2, 16, 3, 5))
    assert a.shape == (2, 4, 15, 15)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 15))


def test_kernel_selection():
    m = MHSA2d(16, 4, 4)
    assert m.resolved_kernel(torch.device("cpu")) == "chunked"
    assert m.resolved_kernel(torch.device("cuda")) == "sdpa_fold"
    with use_kernel("sdpa_bias"):
        assert m.resolved_kernel(torch.device("cpu")) == "sdpa_bias"
    assert m.resolved_kernel(torch.device("cpu")) == "chunked"
    with pytest.raises(ValueError, match="kernel must be one of"):
        MHSA2d(16, 4, 4, kernel="flash")
    with pytest.raises(ValueError, match="kernel must be one of"):
        with use_kernel("flash"):
            pass


def test_counter_counts_the_reference_math_whatever_the_kernel():
    from botnet.counter import count_madds

    class Wrap(torch.nn.Module):
        def __init__(self, kernel):
            super().__init__()
            self.m = MHSA2d(64, 4, 8, kernel=kernel)

        def forward(self, x):
            return self.m(x.expand(-1, 64, -1, -1).contiguous())

    counts = set()
    for kernel in EXACT_KERNELS:
        with torch.device("meta"):
            w = Wrap(kernel)
        counts.add(count_madds(w, 8, in_chans=1))
    assert len(counts) == 1


@pytest.mark.parametrize("pos_enc,content", SWITCHES)
@pytest.mark.parametrize("chunk_bytes,save_bytes", [(1, 0), (2 * 15 * 15 * 4 * 2, 0), (1 << 30, 1 << 30)])
def test_chunked_blocks_and_recompute_match_bruteforce(monkeypatch, pos_enc, content, chunk_bytes, save_bytes):
    """The chunked kernel with one query per block, two blocks, and one block with P kept."""
    from botnet.layers import chunked_attn

    monkeypatch.setattr(chunked_attn, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(chunked_attn, "SAVE_BYTES", save_bytes)
    torch.manual_seed(6)
    m = MHSA2d(16, num_heads=2, feat_size=(3, 5), pos_enc=pos_enc, content=content, kernel="chunked")
    x = torch.randn(2, 16, 3, 5)
    (o1, gx1, gp1), (o2, gx2, gp2) = _pair(m, x)
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx1, gx2, atol=1e-5, rtol=1e-5)
    for name in gp1:
        torch.testing.assert_close(gp1[name], gp2[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("save_bytes", [0, 1 << 30])
def test_chunked_long_rows_match_reference(monkeypatch, save_bytes):
    """Rows of 576 keys (the in-place softmax and its backward over long vectorised rows), 4 blocks."""
    from botnet.layers import chunked_attn

    monkeypatch.setattr(chunked_attn, "CHUNK_BYTES", 2 * 2 * 576 * 4 * 144)
    monkeypatch.setattr(chunked_attn, "SAVE_BYTES", save_bytes)
    torch.manual_seed(7)
    m = MHSA2d(32, 2, feat_size=24)
    x = torch.randn(2, 32, 24, 24)
    g = torch.randn_like(x)
    res = []
    for kernel in ("reference", "chunked"):
        m.zero_grad()
        xi = x.clone().requires_grad_(True)
        with use_kernel(kernel):
            out = m(xi)
        out.backward(g)
        res.append((out.detach(), xi.grad, [p.grad.clone() for p in m.parameters()]))
    (o1, g1, p1), (o2, g2, p2) = res
    torch.testing.assert_close(o2, o1, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(g2, g1, atol=2e-5, rtol=1e-5)
    for a, b in zip(p1, p2):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    with torch.no_grad(), use_kernel("chunked"):
        torch.testing.assert_close(m(x), o1, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("content", [True, False])
def test_chunked_with_qkv_bias_matches_reference_kernel(content):
    torch.manual_seed(9)
    m = MHSA2d(16, 2, feat_size=(3, 5), content=content, qkv_bias=True)
    torch.nn.init.normal_(m.qkv.bias)
    x = torch.randn(2, 16, 3, 5)
    res = []
    for kernel in ("reference", "chunked"):
        m.zero_grad()
        with use_kernel(kernel):
            out = m(x)
        out.sum().backward()
        res.append((out.detach(), m.qkv.bias.grad.clone(), m.qkv.weight.grad.clone()))
    for a, b in zip(*res):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_chunked_attention_rejects_bad_inputs():
    from botnet.layers.chunked_attn import chunked_attention

    q, kv = torch.randn(2, 4, 6), torch.randn(2, 2, 4, 6)
    with pytest.raises(ValueError, match="both position logits"):
        chunked_attention(q, kv, torch.randn(2, 6, 2), None)
    with pytest.raises(ValueError, match="must cover the 6 keys"):
        chunked_attention(q, kv, torch.randn(2, 6, 2), torch.randn(2, 6, 2))
    with pytest.raises(ValueError, match="needs content logits"):
        chunked_attention(q, kv[:, 1:], None, None, has_k=False)
    with pytest.raises(ValueError, match="kv must hold k and v"):
        chunked_attention(q, kv[:, 1:], torch.randn(2, 6, 2), torch.randn(2, 6, 3))


@pytest.mark.parametrize("pos_enc,content", SWITCHES)
def test_scripted_layer_runs_the_reference(pos_enc, content):
    torch.manual_seed(8)
    m = MHSA2d(16, 2, feat_size=(3, 5), pos_enc=pos_enc, content=content).eval()
    scripted = torch.jit.script(m)
    x = torch.randn(2, 16, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), mhsa_reference(m, x), atol=1e-5, rtol=1e-5)
