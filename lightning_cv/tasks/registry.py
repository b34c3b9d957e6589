"""The task registry: a task module registers its LightningModule and DataModule with
`register_task(name, ...)`, and every command finds them by name (as timm's `register_model` /
`create_model` do for models).

`lightning_cv.tasks` imports every task module, so importing it fills the registry.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_cv.errors import UserInputError


@dataclass(frozen=True)
class TaskEntry:
    """What commands need to know of a task beyond its LightningModule's protocol.

    name: the registry key (`--task NAME`, runs/<name>/, configs/<name>.yaml).
    module: the LightningModule class (a `CVTask`).
    datamodule: its LightningDataModule class (a `CVDataModule`).
    demo: writes the task's demo competition: demo(out, seed=..., n_train=...).
    summary: one line for `--help` and the project template.
    """

    name: str
    module: type
    datamodule: type
    demo: Callable[..., Any]
    summary: str

    @property
    def config(self) -> Path:
        """The shipped config (configs/<name>.yaml in a checkout)."""
        return Path("configs") / f"{self.name}.yaml"


_TASKS: dict[str, TaskEntry] = {}


def register_task(name: str, module: type, datamodule: type, *, demo: Callable[..., Any], summary: str) -> TaskEntry:
    """Register a task: a CVTask subclass paired with its DataModule class (one DataModule per task; a
    LightningModule may serve several, e.g. classification for `cls` and `mnist`)."""
    taken = next((e for e in _TASKS.values() if e.datamodule is datamodule and e.name != name), None)
    if taken is not None:
        raise ValueError(f"{datamodule.__name__} already belongs to task {taken.name!r}")
    datamodule.task_name = name
    _TASKS[name] = TaskEntry(name, module, datamodule, demo, summary)
    return _TASKS[name]


def task_names() -> list[str]:
    return list(_TASKS)


def get_task(name: str) -> TaskEntry:
    """The registered task `name`; an unknown name is a UserInputError listing close matches."""
    if name not in _TASKS:
        close = difflib.get_close_matches(name, list(_TASKS), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserInputError(f"unknown task {name!r}: {hint}registered tasks are {', '.join(_TASKS)}")
    return _TASKS[name]


def task_for(obj: Any) -> TaskEntry:
    """The task of a DataModule (instance or class), by its registered name."""
    name = getattr(obj, "task_name", None)
    if not name:
        raise UserInputError(f"{type(obj).__name__} is not a registered lightning_cv task")
    return get_task(name)
