"""Registered models of the BoTNet paper (arXiv:2101.11605) and its baselines.

Each entry point is the architecture as data (``NetCfg``) plus its default input size. Keyword
arguments override both (see ``build_model``). docs/models.md lists every name with its paper row.
"""

from __future__ import annotations

from ._registry import register_model
from .resnet import NetCfg, build_model

R50, R101, R152, R200 = (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3), (3, 24, 36, 3)
SE_ALL = (True, True, True, True)
BOT_C5 = (1, 1, 1)


def _s1(layers, **kw) -> NetCfg:
    # BoTNet-S1 (Sec. 4.8.1, Table 13): c5 of stride 1, all of it BoT blocks, SE and SiLU. The text
    # puts SE in c2-c4 only; the parameter counts of Table 14 include SE in the c5 BoT blocks too
    # (docs/paper-fidelity.md), and the tables are followed: se_attn=True.
    return NetCfg(layers=layers, attn_layers="all", c5_stride=1, se_stages=SE_ALL, se_attn=True, act="silu", **kw)


# ResNets (v1.5, torchvision layout) ------------------------------------------------------------
@register_model
def resnet50(**kw):
    """ResNet-50 [3,4,6,3] (Tables 1, 10, 14)."""
    return build_model(NetCfg(layers=R50), **kw)


@register_model
def resnet101(**kw):
    """ResNet-101 [3,4,23,3] (Tables 6, 14)."""
    return build_model(NetCfg(layers=R101), **kw)


@register_model
def resnet152(**kw):
    """ResNet-152 [3,8,36,3] (Tables 6, 14)."""
    return build_model(NetCfg(layers=R152), **kw)


@register_model
def resnet200(**kw):
    """ResNet-200 [3,24,36,3] (the backbone of BoT200, Table 9)."""
    return build_model(NetCfg(layers=R200), **kw)


# SENets: SE in every block, SiLU (Tables 12-14) ---------------------------------------------------
@register_model
def seresnet50(**kw):
    """SENet-50 (Tables 12, 14: SE50, S0)."""
    return build_model(NetCfg(layers=R50, se_stages=SE_ALL, act="silu"), **kw)


@register_model
def seresnet101(**kw):
    """SENet-101 (Table 14: S1)."""
    return build_model(NetCfg(layers=R101, se_stages=SE_ALL, act="silu"), **kw)


@register_model
def seresnet152(**kw):
    """SENet-152 (Table 14: S2 at 224, S3 at 288)."""
    return build_model(NetCfg(layers=R152, se_stages=SE_ALL, act="silu"), **kw)


@register_model
def seresnet350(**kw):
    """SENet-350 [4,40,60,12] (Table 13; Table 14: S4 at 320, S5 at 384)."""
    return build_model(NetCfg(layers=(4, 40, 60, 12), se_stages=SE_ALL, act="silu"), **kw)


# BoTNets: the c5 3x3 convs replaced by MHSA (Table 1, Fig. 12) -------------------------------------
@register_model
def botnet50(**kw):
    """BoTNet-50 (BoT50, Table 1): ResNet-50 with MHSA in all three c5 blocks."""
    return build_model(NetCfg(layers=R50, attn_layers=BOT_C5), **kw)


@register_model
def botnet101(**kw):
    """BoTNet-101 (Table 6)."""
    return build_model(NetCfg(layers=R101, attn_layers=BOT_C5), **kw)


@register_model
def botnet152(**kw):
    """BoTNet-152 (Tables 6, 9, 16)."""
    return build_model(NetCfg(layers=R152, attn_layers=BOT_C5), **kw)


@register_model
def botnet200(**kw):
    """BoTNet-200 (Table 9: the 44.4 mask AP backbone)."""
    return build_model(NetCfg(layers=R200, attn_layers=BOT_C5), **kw)


# Table 5: which c5 blocks get attention ([1,1,1] is botnet50, [0,0,0] is resnet50) -------------------
@register_model
def botnet50_c5_001(**kw):
    """BoT50 with MHSA in the last c5 block only (Table 5, [0,0,1])."""
    return build_model(NetCfg(layers=R50, attn_layers=(0, 0, 1)), **kw)


@register_model
def botnet50_c5_011(**kw):
    """BoT50 with MHSA in the last two c5 blocks (Table 5, [0,1,1])."""
    return build_model(NetCfg(layers=R50, attn_layers=(0, 1, 1)), **kw)


@register_model
def botnet50_c5_100(**kw):
    """BoT50 with MHSA in the first (strided, 64x64 at 1024) c5 block only (Table 5, [1,0,0])."""
    return build_model(NetCfg(layers=R50, attn_layers=(1, 0, 0)), **kw)


# Table 8 / Fig. 13: blocks inserted between the pre-final and final block of a stage ---------------
@register_model
def resnet50_nl_c4(**kw):
    """R50 + 1 Non-Local block in c4 (Table 8)."""
    return build_model(NetCfg(layers=R50, insert=(("nl", "c4"),)), **kw)


@register_model
def resnet50_bot_c4(**kw):
    """R50 + 1 BoT block inserted in c4 (Table 8)."""
    return build_model(NetCfg(layers=R50, insert=(("bot", "c4"),)), **kw)


@register_model
def resnet50_bot_c4c5(**kw):
    """R50 + 2 BoT blocks inserted, one in c4 and one in c5 (Table 8)."""
    return build_model(NetCfg(layers=R50, insert=(("bot", "c4"), ("bot", "c5"))), **kw)


# Table 17: SE in c5 only ----------------------------------------------------------------------------
@register_model
def resnet50_se_c5(**kw):
    """R50 + c5-SE (Table 17)."""
    return build_model(NetCfg(layers=R50, se_stages=(False, False, False, True)), **kw)


# BoTNet-S1 family (Sec. 4.8, Table 13) ------------------------------------------------------------
@register_model
def botnet_s1_50(**kw):
    """BoTNet-S1-50 [3,4,6,3] with SE and SiLU (Tables 12, 19; Table 10 used it without SE/SiLU)."""
    return build_model(_s1(R50), **kw)


@register_model
def botnet_s1_59(**kw):
    """BoTNet-S1-59 [3,4,6,6] (Table 13)."""
    return build_model(_s1((3, 4, 6, 6)), **kw)


@register_model
def botnet_s1_77(**kw):
    """BoTNet-S1-77 [3,4,6,12] (Table 13)."""
    return build_model(_s1((3, 4, 6, 12)), **kw)


@register_model
def botnet_s1_110(**kw):
    """BoTNet-S1-110 [3,4,23,6] (Table 13)."""
    return build_model(_s1((3, 4, 23, 6)), **kw)


@register_model
def botnet_s1_128(**kw):
    """BoTNet-S1-128 [3,4,23,12] (Table 13)."""
    return build_model(_s1((3, 4, 23, 12)), **kw)


# A CPU-sized BoTNet for demos and tests (not a paper model) ---------------------------------------
@register_model
def botnet_tiny(**kw):
    """Demo-size BoTNet (not in the paper): [1,1,1,2] blocks at width 1/4, MHSA in both c5 blocks."""
    return build_model(NetCfg(layers=(1, 1, 1, 2), attn_layers=(1, 1), width=0.25), **kw)


# Table 14 presets at their resolutions -------------------------------------------------------------
@register_model
def botnet_t3(img_size=224, **kw):
    """T3: BoTNet-S1-59 at 224 (Table 14)."""
    return botnet_s1_59(img_size=img_size, **kw)


@register_model
def botnet_t4(img_size=224, **kw):
    """T4: BoTNet-S1-110 at 224 (Table 14)."""
    return botnet_s1_110(img_size=img_size, **kw)


@register_model
def botnet_t5(img_size=256, **kw):
    """T5: BoTNet-S1-128 at 256 (Table 14)."""
    return botnet_s1_128(img_size=img_size, **kw)


@register_model
def botnet_t6(img_size=320, **kw):
    """T6: BoTNet-S1-77 at 320 (Table 14)."""
    return botnet_s1_77(img_size=img_size, **kw)


@register_model
def botnet_t7(img_size=384, **kw):
    """T7: BoTNet-S1-128 at 384 (Table 14, 84.7% top-1)."""
    return botnet_s1_128(img_size=img_size, **kw)


@register_model
def botnet_t7_320(img_size=320, **kw):
    """T7-320: BoTNet-S1-128 at 320 (Table 14)."""
    return botnet_s1_128(img_size=img_size, **kw)
