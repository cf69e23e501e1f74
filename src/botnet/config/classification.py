"""The classification recipe (``task: classification``, the default): the paper's ImageNet settings
(Tables 10-14) as defaults, in the shared ``optim`` / ``run`` sections and its own ``model`` / ``data``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .fields import in_range
from .sections import STEP_SCHEDULE, Recipe, compile_ranges, left_at_default, optim_ranges, run_ranges

__all__ = ["ModelConfig", "DataConfig", "TrainConfig"]


@dataclass
class ModelConfig:
    name: str = "botnet50"
    kwargs: dict = field(default_factory=dict)  # extra create_model options (e.g. se_stages, act)
    drop_rate: float = 0.0  # dropout on the pooled features (the "dropout on the logits" of Table 14)
    drop_path_rate: float = 0.0  # DropConnect
    pretrained: Union[str, None] = None  # ImageNet ResNet checkpoint (ours, torchvision or timm)
    sync_bn: bool = False
    channels_last: bool = False
    compile: bool = False
    compile_shapes: str = "static"  # with compile: "static" (a graph per shape) or "batch" (batch axis dynamic)


@dataclass
class DataConfig:
    root: Union[str, None] = None  # ROOT/train/<class>/*, ROOT/val/<class>/*; None: built-in shapes
    img_size: int = 224
    eval_size: Union[int, None] = None  # defaults to img_size
    crop_pct: float = 0.875
    scale_min: float = 0.08  # RandomResizedCrop lower scale
    hflip: float = 0.5
    randaug_magnitude: Union[int, None] = None  # RandAugment (2 layers) when set: 10, 15 or 24
    randaug_layers: int = 2
    workers: int = 4


@dataclass
class TrainConfig(Recipe):
    """A classification recipe: the shared ``optim`` / ``run`` sections at their defaults."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: str = "classification"

    def ranges(self) -> list[tuple[str, object, str, bool]]:
        m, d, o, r = self.model, self.data, self.optim, self.run
        between = in_range
        return [
            ("model.name", m.name, "a model name (see `botnet list`)", bool(m.name)),
            ("model.drop_rate", m.drop_rate, "a probability in [0, 1)", between(m.drop_rate, 0, 1, hi_open=True)),
            ("model.drop_path_rate", m.drop_path_rate, "a probability in [0, 1)", between(m.drop_path_rate, 0, 1, hi_open=True)),
            *compile_ranges(m),
            ("data.img_size", d.img_size, "an int >= 8 (pixels)", d.img_size >= 8),
            ("data.eval_size", d.eval_size, "null or an int >= 8", d.eval_size is None or d.eval_size >= 8),
            ("data.crop_pct", d.crop_pct, "a fraction in (0, 1]", between(d.crop_pct, 0, 1, lo_open=True)),
            ("data.scale_min", d.scale_min, "a fraction in (0, 1]", between(d.scale_min, 0, 1, lo_open=True)),
            ("data.hflip", d.hflip, "a probability in [0, 1]", between(d.hflip, 0, 1)),
            ("data.randaug_magnitude", d.randaug_magnitude, "null or an int in [0, 30]",
             d.randaug_magnitude is None or between(d.randaug_magnitude, 0, 30)),
            ("data.randaug_layers", d.randaug_layers, "an int >= 1", d.randaug_layers >= 1),
            ("data.workers", d.workers, "an int >= 0", d.workers >= 0),
            ("optim.epochs", o.epochs, "an int >= 1", o.epochs >= 1),
            *optim_ranges(o),
            ("optim.warmup_epochs", o.warmup_epochs, "a number >= 0", o.warmup_epochs >= 0),
            ("optim.warmup_start_factor", o.warmup_start_factor, "a number in [0, 1]", between(o.warmup_start_factor, 0, 1)),
            ("optim.label_smoothing", o.label_smoothing, "a number in [0, 1)", between(o.label_smoothing, 0, 1, hi_open=True)),
            *left_at_default("optim", o, STEP_SCHEDULE, "classification recipes are scheduled in epochs (optim.epochs, "
                                                        "optim.warmup_epochs)"),
            *run_ranges(r),
            ("run.eval_every", r.eval_every, "an int >= 1", r.eval_every >= 1),
        ]
