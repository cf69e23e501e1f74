"""BoTNet: Bottleneck Transformers for Visual Recognition (Srinivas et al., arXiv:2101.11605)."""

from .models import NetCfg, ResNet, create_model, list_models, load_model

__version__ = "0.1.0"
__all__ = ["NetCfg", "ResNet", "create_model", "list_models", "load_model", "__version__"]
