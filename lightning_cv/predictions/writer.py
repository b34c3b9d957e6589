"""The prediction writer: what `predict` leaves in its run directory, for every task.

Rows go to disk as each batch comes (`stores.RowWriter`, one shard per DDP rank, nothing kept by the
prediction loop), so memory does not grow with the test set. At the end rank 0 merges the shards in
the dataset's order (the sample submission's, when there is one; the rows a DDP sampler repeats are
dropped), saves `predictions.npz` (what `ensemble` and `cv` read) and lets the task write its readable
files one image at a time (`CVTask.write_outputs`: predictions.csv, masks, boxes.csv, submission.csv in
a sample's shape).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_cv.predictions.files import PREDICTIONS, Predictions, load_predictions
from lightning_cv.predictions.stores import DiskRows, RowWriter, gather_rows, read_rows, scratch_dir
from lightning_cv.predictions.submission import read_sample, sample_for


def _numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return (value.float() if value.dtype == torch.bfloat16 else value).cpu().numpy()
    return value


def merge_shards(shards: Sequence[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """Every rank's rows (each shard: the arrays a RowWriter wrote, with the dataset `index` of each row)
    in the dataset's order, each index once; maps are copied to `out_dir` a chunk at a time and come back
    as DiskRows. A single shard already in order is used as it is."""
    index = np.concatenate([np.asarray(s["index"], dtype=np.int64) for s in shards])
    if len(shards) == 1 and (np.diff(index) > 0).all():
        return {k: v for k, v in shards[0].items() if k != "index"}
    part = np.concatenate([np.full(len(s["index"]), k, dtype=np.int64) for k, s in enumerate(shards)])
    row = np.concatenate([np.arange(len(s["index"]), dtype=np.int64) for s in shards])
    _, first = np.unique(index, return_index=True)  # sorted by index: the dataset's order, repeats dropped
    part, row = part[first], row[first]
    merged: dict[str, Any] = {}
    writer = RowWriter(out_dir)
    for name in shards[0]:
        if name == "index":
            continue
        values = [s[name] for s in shards]
        if isinstance(values[0], DiskRows):
            gather_rows(values, part, row, writer, name)
        else:
            merged[name] = gather_rows([np.asarray(v) for v in values], part, row)
    return {**writer.close(), **merged}


class PredictionWriter(BasePredictionWriter):
    """`predictions.npz` (ids, the task's arrays, class names, decisions; the targets too when the rows
    are labelled held-out rows, `--data.predict_split val`, as cv's out-of-fold predictions are) and the
    task's readable files, once per predict run; with the DataModule's `sample_submission`, also
    submission.csv in its shape. Rows are written to `.predict-rank<r>/` as each batch comes."""

    def __init__(self, output_dir: str | Path):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self._shard: RowWriter | None = None
        self._rows = 0

    def shard_dir(self, rank: int) -> Path:
        return self.output_dir / f".predict-rank{rank}"

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.predict_loop.return_predictions = False  # the rows are on disk; the loop must not keep them too
        # Every rank writes where rank 0 merges (a rank started later may have named its run directory
        # by another second); on several machines that directory has to be on a shared filesystem.
        self.output_dir = Path(trainer.strategy.broadcast(str(self.output_dir), src=0))
        shutil.rmtree(self.shard_dir(trainer.global_rank), ignore_errors=True)
        self._shard, self._rows = RowWriter(self.shard_dir(trainer.global_rank)), 0

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        if self._shard is None:
            self.on_predict_start(trainer, pl_module)
        size = 0
        for key, value in prediction.items():
            value = _numpy(value)
            self._shard.append(key, value if isinstance(value, np.ndarray) else list(value))
            size = len(value)
        # Lightning records each batch's dataset indices (its index-tracking batch sampler); else rows count up.
        known = batch_indices is not None and len(batch_indices) == size
        self._shard.append("index", np.asarray(batch_indices, dtype=np.int64) if known else np.arange(self._rows, self._rows + size))
        self._rows += size

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._shard is None:
            return
        self._shard.close()
        self._shard = None
        trainer.strategy.barrier()  # every rank's shard is complete
        if trainer.is_global_zero:
            try:
                self.write(trainer, pl_module)
            finally:
                for rank in range(trainer.world_size):
                    shutil.rmtree(self.shard_dir(rank), ignore_errors=True)
        trainer.strategy.barrier()

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Merge the shards, save predictions.npz, then the task's readable files from it."""
        shards = [read_rows(self.shard_dir(rank)) for rank in range(trainer.world_size)]
        datamodule = trainer.datamodule
        task = getattr(datamodule, "task_name", None) or type(pl_module).__name__
        with scratch_dir(self.output_dir, "predict-merged") as merged_dir:
            merged = merge_shards(shards, merged_dir)
            ids = np.asarray(merged.pop("id")).astype(str)
            result = Predictions(task, ids, merged, list(pl_module.class_names), pl_module.prediction_meta(datamodule))
            if getattr(datamodule, "predict_split", "test") == "val":
                result.targets = datamodule.targets("predict", result.ids)
            result.save(self.output_dir / PREDICTIONS)
        result = load_predictions(self.output_dir / PREDICTIONS)  # maps read back one chunk at a time
        sample = sample_for(datamodule)
        type(pl_module).write_outputs(result, self.output_dir, read_sample(sample) if sample else None, sample or "")
