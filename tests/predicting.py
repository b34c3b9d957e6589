"""Driving the prediction writer as Lightning's prediction loop does, without a model or a Trainer."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np


def fake_trainer(datamodule: Any, rank: int = 0, world_size: int = 1) -> SimpleNamespace:
    """What the writer reads of a Trainer: rank, world size, the DataModule, the loop and a barrier."""
    return SimpleNamespace(world_size=world_size, global_rank=rank, is_global_zero=rank == 0, datamodule=datamodule,
                           predict_loop=SimpleNamespace(return_predictions=True),
                           strategy=SimpleNamespace(barrier=lambda: None, broadcast=lambda obj, src=0: obj))


def run_writer(writer: Any, module: Any, batches: list[dict], datamodule: Any, indices: list[Any] | None = None,
               rank: int = 0, world_size: int = 1, end: bool = True) -> SimpleNamespace:
    """Each batch to `write_on_batch_end` (with its dataset indices, if given), then the epoch's end."""
    trainer = fake_trainer(datamodule, rank, world_size)
    writer.on_predict_start(trainer, module)
    for i, batch in enumerate(batches):
        index = None if indices is None else np.asarray(indices[i])
        writer.write_on_batch_end(trainer, module, batch, index, None, i, 0)
    if end:
        writer.on_predict_epoch_end(trainer, module)
    return trainer
