"""Model zoo: architecture configs, the ResNet-family network and the registry."""

from . import _timm
from . import botnet as _entrypoints  # noqa: F401  (registers the models)
from . import timm_botnets as _timm_botnets  # noqa: F401  (registers timm's BoTNet family)
from ._registry import create_model, is_model, list_models, model_entrypoint, register_model
from ._timm import register_timm_models, timm_name
from .features import FeatureInfo, FeatureListNet
from .resnet import NetCfg, ResNet, build_model
from .weights import load_model, load_weights, save_weights

__all__ = [
    "FeatureInfo", "FeatureListNet", "NetCfg", "ResNet", "build_model", "create_model", "is_model", "list_models",
    "load_model", "load_weights", "model_entrypoint", "register_model", "register_timm_models", "save_weights",
    "timm_name",
]

_timm.install()  # our models in timm's registry once timm is imported (timm is optional)
