"""Tasks: one LightningModule per task on `CVTask` (the task protocol), the registry, and rebuilding a task
from its checkpoint; importing this package registers every task. May import every subpackage below `training`.

Every module of this package is imported (a new task module registers itself: no list to edit), and so
is every module another installed package declares under the `lightning_cv.tasks` entry-point group.
"""

import importlib
import pkgutil
from importlib.metadata import entry_points

from lightning_cv.tasks.base import CVTask
from lightning_cv.tasks.bbox import BBoxCropTask
from lightning_cv.tasks.classification import ClassificationTask
from lightning_cv.tasks.multilabel import MultiLabelTask
from lightning_cv.tasks.registry import TaskEntry, get_task, register_task, task_for, task_names
from lightning_cv.tasks.segmentation import SegmentationTask

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
for _plugin in entry_points(group="lightning_cv.tasks"):
    _plugin.load()

__all__ = ["BBoxCropTask", "CVTask", "ClassificationTask", "MultiLabelTask", "SegmentationTask", "TaskEntry", "get_task",
           "register_task", "task_for", "task_names"]
