"""The training engine: one loop (``Trainer``) for every task, and the pieces around it.

``Trainer(task).fit()`` trains any ``Task`` (``ClassificationTask`` in ``botnet.engine.classify``,
``DetectionTask`` in ``botnet.engine.detect``, or your own); ``Callback`` watches a run;
``train_one_epoch`` is the inner loop on its own. docs/architecture.md shows how they fit.
"""

from .epoch import EpochOptions, RunState, train_one_epoch
from .task import Callback, Task, TaskData
from .trainer import Trainer, fit

__all__ = ["Callback", "EpochOptions", "RunState", "Task", "TaskData", "Trainer", "fit", "train_one_epoch"]
