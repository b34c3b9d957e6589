"""The prediction writer: what `predict` leaves in its run directory, for every task.

It gathers the arrays `predict_step` returned (all DDP ranks, on rank 0), saves them as
`predictions.npz` (what `ensemble` and `cv` read), and lets the task write its readable files
(`CVTask.write_outputs`: predictions.csv, masks, boxes.csv, submission.csv in a sample's shape).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_cv.predictions import PREDICTIONS, Predictions
from lightning_cv.submission import read_sample, sample_for


def gather_predictions(trainer: L.Trainer, predictions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Concatenate the per-batch prediction dicts of every rank, on rank 0 (None elsewhere)."""
    local: dict[str, list] = {}
    for batch in predictions:
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = (value.float() if value.dtype == torch.bfloat16 else value).cpu().numpy()
            local.setdefault(key, []).append(value)
    merged = {k: (np.concatenate(v) if isinstance(v[0], np.ndarray) else [x for part in v for x in part]) for k, v in local.items()}
    if trainer.world_size > 1:
        parts: list = [None] * trainer.world_size
        torch.distributed.all_gather_object(parts, merged)
        if not trainer.is_global_zero:
            return None
        merged = {
            k: (np.concatenate([p[k] for p in parts]) if isinstance(merged[k], np.ndarray) else [x for p in parts for x in p[k]])
            for k in merged
        }
    return merged if trainer.is_global_zero else None


class PredictionWriter(BasePredictionWriter):
    """`predictions.npz` (ids, the task's arrays, class names, decisions; the targets too when the rows
    are labelled held-out rows, `--data.predict_split val`, as cv's out-of-fold predictions are) and the
    task's readable files, once per predict run; with the DataModule's `sample_submission`, also
    submission.csv in its shape."""

    def __init__(self, output_dir: str | Path):
        super().__init__(write_interval="epoch")
        self.output_dir = Path(output_dir)

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any) -> None:
        batches = [b for part in predictions for b in (part if isinstance(part, list) else [part])]
        merged = gather_predictions(trainer, batches)
        if merged is None:
            return
        ids = np.asarray(merged.pop("id")).astype(str)
        _, first = np.unique(ids, return_index=True)  # a DDP sampler may repeat a few images
        datamodule = trainer.datamodule
        task = getattr(datamodule, "task_name", None) or type(pl_module).__name__
        result = Predictions(task, ids, {k: np.asarray(v) for k, v in merged.items()}, list(pl_module.class_names),
                             pl_module.prediction_meta(datamodule)).take(np.sort(first))
        if getattr(datamodule, "predict_split", "test") == "val":
            result.targets = datamodule.targets("predict", result.ids)
        result.save(self.output_dir / PREDICTIONS)
        sample = sample_for(datamodule)
        type(pl_module).write_outputs(result, self.output_dir, read_sample(sample) if sample else None, sample or "")
