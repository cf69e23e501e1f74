"""Model zoo: architecture configs, the ResNet-family network and the registry."""

from . import botnet as _entrypoints  # noqa: F401  (registers the models)
from . import timm_botnets as _timm_botnets  # noqa: F401  (registers timm's BoTNet family)
from ._builder import create_model
from ._registry import is_model, list_models, model_entrypoint, register_model
from ._timm import install as _register_with_timm
from ._timm import register_timm_models, timm_name
from .features import FeatureInfo, FeatureListNet
from .resnet import NetCfg, ResNet, build_model
from .weights import load_model, load_weights, save_weights

__all__ = [
    "FeatureInfo", "FeatureListNet", "NetCfg", "ResNet", "build_model", "create_model", "is_model", "list_models",
    "load_model", "load_weights", "model_entrypoint", "register_model", "register_timm_models", "save_weights",
    "timm_name",
]

# our models in timm's registry when timm is installed (timm is optional): now if timm is imported, else
# right after `import timm` (botnet.models._timm says why, with its cost); `import botnet` alone does not
# get here, so the CLI's help path imports neither torch nor timm
_register_with_timm()
