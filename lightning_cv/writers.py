"""Prediction writers: side outputs of `predict`, written once per run (all DDP ranks merged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_cv.io import write_csv


def gather_predictions(trainer: L.Trainer, predictions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Concatenate the per-batch prediction dicts of every rank, on rank 0 (None elsewhere)."""
    local: dict[str, list] = {}
    for batch in predictions:
        for key, value in batch.items():
            value = value.cpu().numpy() if isinstance(value, torch.Tensor) else value
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


class ClassificationWriter(BasePredictionWriter):
    """`predictions.csv`: image, predicted label, one probability column per class."""

    def __init__(self, output_dir: str | Path, class_names: list[str], filename: str = "predictions.csv"):
        super().__init__(write_interval="epoch")
        self.output_dir = Path(output_dir)
        self.class_names = class_names
        self.filename = filename

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any) -> None:
        merged = gather_predictions(trainer, predictions)
        if merged is None:
            return
        probs = merged["probs"]
        frame = pd.DataFrame({"image": merged["id"], "label": [self.class_names[i] for i in probs.argmax(axis=1)]})
        for i, name in enumerate(self.class_names):
            frame[f"prob_{name}"] = probs[:, i].round(6)
        frame = frame.drop_duplicates("image").sort_values("image", kind="stable")
        write_csv(frame, self.output_dir / self.filename)
        print(f"wrote {len(frame)} predictions to {self.output_dir / self.filename}")
