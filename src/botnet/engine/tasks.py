"""The tasks a recipe can name (``task: classification`` / ``task: detection``).

``get_task(name)`` gives the ``Task`` class (imported on first use, so the CLI stays quick);
``register_task(name, "module:Class")`` or ``register_task(name, cls)`` adds one. A task class has
``config_class``: the dataclass its recipes fill.
"""

from __future__ import annotations

import difflib
import importlib

__all__ = ["TASKS", "get_task", "register_task"]

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
