"""Registered models of the BoTNet paper (arXiv:2101.11605) and its baselines.

Each entry point is the architecture as data (``NetCfg``) plus its default input size. Keyword
arguments override both (see ``build_model``). docs/models.md lists every name with its paper row.
"""

from __future__ import annotations

from functools import partial

from ._registry import register_variant
from .resnet import NetCfg, build_model

R50, R101, R152, R200 = (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3), (3, 24, 36, 3)
SE_ALL = (True, True, True, True)
BOT_C5 = (1, 1, 1)


def _s1(layers, **kw) -> NetCfg:
    # BoTNet-S1 (Sec. 4.8.1, Table 13): c5 of stride 1, all of it BoT blocks, SE and SiLU. The text
    # puts SE in c2-c4 only; the parameter counts of Table 14 include SE in the c5 BoT blocks too
    # (docs/paper-fidelity.md), and the tables are followed: se_attn=True.
    return NetCfg(layers=layers, attn_layers="all", c5_stride=1, se_stages=SE_ALL, se_attn=True, act="silu", **kw)


# name: (architecture, docstring); each registered below as build_model(architecture, **kw)
PAPER_MODELS: dict[str, tuple[NetCfg, str]] = {
    # ResNets (v1.5, torchvision layout)
    "resnet50": (NetCfg(layers=R50), "ResNet-50 [3,4,6,3] (Tables 1, 10, 14)."),
    "resnet101": (NetCfg(layers=R101), "ResNet-101 [3,4,23,3] (Tables 6, 14)."),
    "resnet152": (NetCfg(layers=R152), "ResNet-152 [3,8,36,3] (Tables 6, 14)."),
    "resnet200": (NetCfg(layers=R200), "ResNet-200 [3,24,36,3] (the backbone of BoT200, Table 9)."),
    # SENets: SE in every block, SiLU (Tables 12-14)
    "seresnet50": (NetCfg(layers=R50, se_stages=SE_ALL, act="silu"), "SENet-50 (Tables 12, 14: SE50, S0)."),
    "seresnet101": (NetCfg(layers=R101, se_stages=SE_ALL, act="silu"), "SENet-101 (Table 14: S1)."),
    "seresnet152": (NetCfg(layers=R152, se_stages=SE_ALL, act="silu"), "SENet-152 (Table 14: S2 at 224, S3 at 288)."),
    "seresnet350": (NetCfg(layers=(4, 40, 60, 12), se_stages=SE_ALL, act="silu"),
                    "SENet-350 [4,40,60,12] (Table 13; Table 14: S4 at 320, S5 at 384)."),
    # BoTNets: the c5 3x3 convs replaced by MHSA (Table 1, Fig. 12)
    "botnet50": (NetCfg(layers=R50, attn_layers=BOT_C5),
                 "BoTNet-50 (BoT50, Table 1): ResNet-50 with MHSA in all three c5 blocks."),
    "botnet101": (NetCfg(layers=R101, attn_layers=BOT_C5), "BoTNet-101 (Table 6)."),
    "botnet152": (NetCfg(layers=R152, attn_layers=BOT_C5), "BoTNet-152 (Tables 6, 9, 16)."),
    "botnet200": (NetCfg(layers=R200, attn_layers=BOT_C5), "BoTNet-200 (Table 9: the 44.4 mask AP backbone)."),
    # Table 5: which c5 blocks get attention ([1,1,1] is botnet50, [0,0,0] is resnet50)
    "botnet50_c5_001": (NetCfg(layers=R50, attn_layers=(0, 0, 1)),
                        "BoT50 with MHSA in the last c5 block only (Table 5, [0,0,1])."),
    "botnet50_c5_011": (NetCfg(layers=R50, attn_layers=(0, 1, 1)),
                        "BoT50 with MHSA in the last two c5 blocks (Table 5, [0,1,1])."),
    "botnet50_c5_100": (NetCfg(layers=R50, attn_layers=(1, 0, 0)),
                        "BoT50 with MHSA in the first (strided, 64x64 at 1024) c5 block only (Table 5, [1,0,0])."),
    # Table 8 / Fig. 13: blocks inserted between the pre-final and final block of a stage
    "resnet50_nl_c4": (NetCfg(layers=R50, insert=(("nl", "c4"),)), "R50 + 1 Non-Local block in c4 (Table 8)."),
    "resnet50_bot_c4": (NetCfg(layers=R50, insert=(("bot", "c4"),)), "R50 + 1 BoT block inserted in c4 (Table 8)."),
    "resnet50_bot_c4c5": (NetCfg(layers=R50, insert=(("bot", "c4"), ("bot", "c5"))),
                          "R50 + 2 BoT blocks inserted, one in c4 and one in c5 (Table 8)."),
    # Table 17: SE in c5 only
    "resnet50_se_c5": (NetCfg(layers=R50, se_stages=(False, False, False, True)), "R50 + c5-SE (Table 17)."),
    # BoTNet-S1 family (Sec. 4.8, Table 13)
    "botnet_s1_50": (_s1(R50),
                     "BoTNet-S1-50 [3,4,6,3] with SE and SiLU (Tables 12, 19; Table 10 used it without SE/SiLU)."),
    "botnet_s1_59": (_s1((3, 4, 6, 6)), "BoTNet-S1-59 [3,4,6,6] (Table 13)."),
    "botnet_s1_77": (_s1((3, 4, 6, 12)), "BoTNet-S1-77 [3,4,6,12] (Table 13)."),
    "botnet_s1_110": (_s1((3, 4, 23, 6)), "BoTNet-S1-110 [3,4,23,6] (Table 13)."),
    "botnet_s1_128": (_s1((3, 4, 23, 12)), "BoTNet-S1-128 [3,4,23,12] (Table 13)."),
    # A CPU-sized BoTNet for demos and tests (not a paper model)
    "botnet_tiny": (NetCfg(layers=(1, 1, 1, 2), attn_layers=(1, 1), width=0.25),
                    "Demo-size BoTNet (not in the paper): [1,1,1,2] blocks at width 1/4, MHSA in both c5 blocks."),
}
for _name, (_arch, _doc) in PAPER_MODELS.items():
    register_variant(_name, partial(build_model, _arch), _doc, __name__)

# Table 14 presets at their resolutions: name, network (above), resolution, docstring ----------------
TABLE14_PRESETS = (
    ("botnet_t3", "botnet_s1_59", 224, "T3: BoTNet-S1-59 at 224 (Table 14)."),
    ("botnet_t4", "botnet_s1_110", 224, "T4: BoTNet-S1-110 at 224 (Table 14)."),
    ("botnet_t5", "botnet_s1_128", 256, "T5: BoTNet-S1-128 at 256 (Table 14)."),
    ("botnet_t6", "botnet_s1_77", 320, "T6: BoTNet-S1-77 at 320 (Table 14)."),
    ("botnet_t7", "botnet_s1_128", 384, "T7: BoTNet-S1-128 at 384 (Table 14, 84.7% top-1)."),
    ("botnet_t7_320", "botnet_s1_128", 320, "T7-320: BoTNet-S1-128 at 320 (Table 14)."),
)
for _name, _net, _size, _doc in TABLE14_PRESETS:
    register_variant(_name, partial(build_model, PAPER_MODELS[_net][0]), _doc, __name__, img_size=_size)
