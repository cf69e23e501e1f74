"""The task interface of the one training loop (``botnet.engine.trainer``) and the registry of tasks.

The ``Trainer`` owns everything tasks share: launch under torchrun, resume, the global-batch sampler
and loaders, micro-batches and accumulation, AMP, the non-finite guard, checkpoints, preemption,
logging, the evaluation schedule and the choice of the best checkpoint. A ``Task`` provides only
what differs: the model and the data, the loss terms of a batch, evaluation, and which evaluation
metric is "best" (``best_metric``, ``best_mode``). ``Callback`` objects watch a run (detectron2's
hooks): override the methods you need.

The recipe (``cfg``) a task is built with is a ``botnet.config.Recipe``: the shared ``optim`` and
``run`` sections and the ``model`` / ``data`` fields the trainer reads (``TrainConfig`` and
``DetTrainConfig`` are two).

The tasks a recipe can name (``task: classification`` / ``task: detection``): ``get_task(name)``
gives the ``Task`` class (imported on first use, so the CLI stays quick); ``register_task(name,
"module:Class")`` or ``register_task(name, cls)`` adds one.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import Recipe
from .optim import build_optimizer

__all__ = ["Task", "TaskData", "Callback", "TASKS", "get_task", "register_task"]


@dataclass
class TaskData:
    """The datasets of a run. ``train`` items are ``(image, target)`` (or None for an unreadable
    file); ``collate`` turns a list of them into ``(images, targets, n_skipped)`` where ``len(images)``
    is the number of usable samples (a (B, C, H, W) tensor or a list of images)."""

    train: Dataset
    val: Dataset
    collate: Callable
    eval_collate: Callable | None = None  # default: ``collate``
    info: dict = field(default_factory=dict)  # saved in every checkpoint (e.g. {"classes": [...]})


class Task:
    """One kind of training job. Subclasses set ``name``, ``best_metric`` / ``best_mode`` and
    implement ``build_data``, ``build_model``, ``loss_terms`` and ``evaluate``; the rest has
    defaults. ``self.cfg`` is the recipe."""

    name = "task"
    best_metric = "loss"  # the key of ``evaluate``'s record that picks best.pt
    best_mode = "min"  # "max": higher is better
    best_key = "best_score"  # checkpoint entry holding the best score so far
    config_class: type[Recipe] | None = None  # the dataclass this task's recipes fill (``botnet train``)

    def __init__(self, cfg: Recipe):
        self.cfg = cfg
        self.resumed = False  # set by the Trainer before build_model: True when continuing a checkpoint

    def check(self) -> None:
        """Cheap checks before any work (raise ``ValueError`` naming the key)."""

    def build_data(self) -> TaskData:
        raise NotImplementedError

    def build_model(self, data: TaskData) -> nn.Module:
        """The model to train (on the CPU; the trainer moves and wraps it). Skip loading initial
        weights when ``self.resumed``: the checkpoint's replace them."""
        raise NotImplementedError

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """SGD / AdamW (``optim.name``) at ``optim.lr``, no weight decay on normalization parameters."""
        o = self.cfg.optim
        return build_optimizer(model, o.name, o.lr, o.weight_decay, o.momentum, o.nesterov, o.betas)

    def build_scheduler(self, optimizer, steps_per_epoch: int):
        """The per-step LR schedule (default: constant)."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run (``run.max_steps`` caps it)."""
        raise NotImplementedError

    def loss_terms(self, model: nn.Module, images, targets, device: torch.device) -> dict[str, torch.Tensor]:
        """The loss terms of one micro-batch (moved to ``device`` here); the trainer backpropagates
        their sum and logs each term and the sum ("loss")."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, loader, run) -> dict:
        """Metrics over this rank's shard of the validation data, reduced over ranks (same on every
        rank): a flat dict with ``best_metric``, "count" and "skipped_images". ``run`` is the
        ``Trainer`` (device, amp_dtype, dist, out, state, log)."""
        raise NotImplementedError

    def describe(self, data: TaskData) -> str:
        """One line about the data for the run's log."""
        return f"{len(data.train)} train / {len(data.val)} val samples"

    def log_step(self, rec: dict, total: int) -> str:
        """The log line of a step record (non-interactive runs)."""
        terms = ", ".join(f"{k[5:]} {v:.3f}" for k, v in rec.items() if k.startswith("loss_"))
        return (f"epoch {rec['epoch']} step {rec['step']}/{total} loss {rec['loss']:.4f}"
                + (f" ({terms})" if terms else "") + f" lr {rec['lr']:.4g} {rec['images_per_s']:.1f} img/s")

    def finish(self, run) -> None:
        """After the run, on rank 0 (e.g. draw the curves)."""


class Callback:
    """Hooks around the loop; every method gets the ``Trainer`` (``trainer.state``: epoch, step,
    step_in_epoch, best; ``trainer.model``, ``trainer.optimizer``, ``trainer.cfg``). They run on
    every rank; check ``trainer.dist.is_main`` to act once."""

    def before_train(self, trainer) -> None:
        pass

    def after_step(self, trainer, terms: dict[str, float]) -> None:
        """After each optimizer step; ``terms``: this rank's mean loss terms of the step (empty for
        a skipped non-finite step)."""

    def after_epoch(self, trainer, record: dict) -> None:
        """After each pass over the data (``record``: the "epoch" record of metrics.jsonl)."""

    def after_eval(self, trainer, record: dict) -> None:
        """After each evaluation (``record``: the "eval" record)."""

    def after_train(self, trainer, result: dict[str, Any]) -> None:
        """When the run ends (finished or preempted)."""


TASKS: dict[str, object] = {
    "classification": "botnet.engine.classify:ClassificationTask",
    "detection": "botnet.engine.detect:DetectionTask",
}


def register_task(name: str, task) -> None:
    """Make ``task`` (a ``Task`` subclass or "module:Class") the task of recipes with ``task: name``."""
    if name in TASKS:
        raise ValueError(f"a task {name!r} is already registered")
    TASKS[name] = task


def get_task(name: str):
    """The ``Task`` class registered as ``name``; ``ValueError`` names the known ones."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(f"task: unknown task {name!r}{hint} (known: {', '.join(sorted(TASKS))})")
    task = TASKS[name]
    if isinstance(task, str):
        module, cls = task.split(":")
        task = TASKS[name] = getattr(importlib.import_module(module), cls)
    return task
