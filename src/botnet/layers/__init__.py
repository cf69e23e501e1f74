"""Building blocks of BoTNet and its baselines."""

from .blocks import BoTBlock, Bottleneck, check_even, make_downsample
from .eca import EcaModule
from .mhsa import CANDIDATE_KERNELS, KERNELS, POS_ENCODINGS, MHSA2d, use_kernel
from .mhsa_qk import MHSA2dQK
from .non_local import NonLocal2d
from .pos_embed import AbsPosEmb2d, RelPosEmb2d, rel_index, resize_pos_table
from .squeeze_excite import SEModule

__all__ = [
    "AbsPosEmb2d",
    "CANDIDATE_KERNELS",
    "KERNELS",
    "BoTBlock",
    "EcaModule",
    "MHSA2dQK",
    "check_even",
    "Bottleneck",
    "MHSA2d",
    "NonLocal2d",
    "POS_ENCODINGS",
    "RelPosEmb2d",
    "SEModule",
    "make_downsample",
    "rel_index",
    "resize_pos_table",
    "use_kernel",
]
