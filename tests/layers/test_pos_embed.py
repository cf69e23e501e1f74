"""Resizing of position tables: the interpolation itself and loading across sizes."""

import numpy as np
import pytest
import torch

from botnet.layers import MHSA2d, RelPosEmb2d, rel_index, resize_pos_table


def test_rel_index_is_key_minus_query():
    idx = rel_index(4)
    for i in range(4):
        for k in range(4):
            assert idx[i, k] == k - i + 3


def test_resize_identity_and_linear_with_fixed_ends():
    torch.manual_seed(0)
    t = torch.randn(13, 5)  # a map of 7 positions: offsets -6..6
    assert resize_pos_table(t, 13) is t
    r = resize_pos_table(t, 21)  # 11 positions: offsets -10..10
    old = np.linspace(-6, 6, 13) / 6
    new = np.linspace(-10, 10, 21) / 10
    for c in range(5):
        np.testing.assert_allclose(r[:, c].numpy(), np.interp(new, old, t[:, c].numpy()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r[[0, 10, 20]], t[[0, 6, 12]])  # far edges and offset 0 kept


def test_resize_to_single_position_reads_offset_zero():
    t = torch.randn(7, 3)
    torch.testing.assert_close(resize_pos_table(t, 1), t[3:4])
    with pytest.raises(ValueError):
        resize_pos_table(t, 0)


def test_state_dict_loads_across_sizes_and_equals_runtime_resize():
    torch.manual_seed(1)
    small = MHSA2d(16, 4, (4, 6))
    big = MHSA2d(16, 4, (8, 4))
    big.load_state_dict(small.state_dict())
    assert big.pos.rel_height.shape == (15, 4) and big.pos.rel_width.shape == (7, 4)
    x = torch.randn(2, 16, 8, 4)
    torch.testing.assert_close(big(x), small(x))  # small resizes at run time, big at load time
    # and the original is untouched by the load
    assert small.pos.rel_height.shape == (7, 4)


def test_absolute_tables_load_across_sizes():
    a = MHSA2d(16, 4, (4, 4), pos_enc="absolute")
    b = MHSA2d(16, 4, (6, 2), pos_enc="absolute")
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 16, 6, 2)
    torch.testing.assert_close(a(x), b(x))


def test_relposemb_rejects_bad_size():
    with pytest.raises(ValueError):
        RelPosEmb2d((0, 3), 8)
