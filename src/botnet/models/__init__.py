"""Model zoo: architecture configs, the ResNet-family network and the registry."""

from . import botnet as _entrypoints  # noqa: F401  (registers the models)
from ._registry import create_model, is_model, list_models, model_entrypoint, register_model
from .resnet import NetCfg, ResNet, build_model

__all__ = ["NetCfg", "ResNet", "build_model", "create_model", "is_model", "list_models", "model_entrypoint", "register_model"]
