"""The counter against hand-derived numbers, and the paper's rows (Tables 1, 10, 14, footnote 10)."""

import pytest
import torch
from torch import nn

from botnet.counter import count_madds, count_params, profile_model
from botnet.layers import MHSA2d
from botnet.paper import MADDS_TOL, PAPER_ROWS, PARAMS_TOL, compare_all


def test_attention_matmuls_are_counted():
    """MHSA at 14x14, 512 channels, 4 heads: every term derived by hand."""
    n, c, d = 196, 512, 128
    qkv = 3 * c * c * n
    qk, av = n * n * c, n * n * c  # q k^T and attention x v, all heads
    rel = n * (14 + 14) * c  # decomposed relative logits: q . R_h over H rows + q . R_w over W columns

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = MHSA2d(c, 4, 14)

        def forward(self, x):
            return self.m(x[:, :1].expand(-1, c, -1, -1).contiguous())

    with torch.device("meta"):
        w = Wrap()
    assert count_madds(w, 14, in_chans=1) == qkv + qk + av + rel


def test_params_without_norm():
    total, wo = count_params(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.GroupNorm(2, 8)))
    assert total == 3 * 8 * 9 + 8 + 16 + 16 and wo == 3 * 8 * 9 + 8


def test_profile_exact_resnet50():
    p = profile_model("resnet50")
    assert p.params == 25_557_032  # torchvision's ResNet-50
    assert p.madds == 4_089_184_256
    assert p.img_size == (224, 224)


def test_profile_uses_model_default_size():
    assert profile_model("botnet_t7").img_size == (384, 384)
    assert profile_model("botnet_t7", 320).madds == profile_model("botnet_t7_320").madds


ROWS = compare_all()


@pytest.mark.parametrize("row", [r for r, pr in zip(ROWS, PAPER_ROWS) if pr.model], ids=lambda r: f"T{r['table']}-{r['label']}-{r['img_size']}")
def test_paper_row(row):
    spec = next(p for p in PAPER_ROWS if (p.table, p.label, p.img_size) == (row["table"], row["label"], row["img_size"]))
    if row["params_delta"] is not None:
        inside = abs(row["params_delta"]) <= PARAMS_TOL
        assert inside == spec.params_ok, f"params {row['params_m']:.3f}M vs paper {spec.params_m}M"
    if row["madds_delta"] is not None:
        inside = abs(row["madds_delta"]) <= MADDS_TOL
        assert inside == spec.madds_ok, f"M.Adds {row['madds_g']:.3f}G vs paper {spec.madds_g}G"
    assert row["status"] != "MISMATCH"


def test_every_table_row_is_listed():
    counts = {t: sum(r.table == t for r in PAPER_ROWS) for t in ("1", "10", "14")}
    assert counts == {"1": 2, "10": 3, "14": 26}
