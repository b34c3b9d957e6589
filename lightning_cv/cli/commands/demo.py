"""`lightning-cv demo --task NAME`: a task's demo competition, generated offline (deterministic)."""

from __future__ import annotations

from pathlib import Path

from lightning_cv.tasks import get_task, task_names


def demo(task: str = "cls", out: Path | None = None, seed: int = 0, n_train: int | None = None) -> Path:
    """Write a demo competition for a task (default folder: data/<task>).

    Args:
        task: which task's competition to write: {tasks}.
        out: output folder.
        seed: generator seed; the same seed writes the same files.
        n_train: number of training images (default: the task's demo size).
    """
    entry = get_task(task)
    out = Path(out or f"data/{task}")
    entry.demo(out, seed=seed, **({"n_train": n_train} if n_train else {}))
    print(f"demo {task} data written to {out}")
    return out


demo.__doc__ = (demo.__doc__ or "").replace("{tasks}", ", ".join(task_names()))
