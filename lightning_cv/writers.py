"""Prediction writers: side outputs of `predict`, written once per run (all DDP ranks merged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from lightning_cv.io import rle_encode, write_csv, write_image
from lightning_cv.submission import SUBMISSION, follow_sample, read_sample, sample_for, submission_frame


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
    """`predictions.csv`: image, predicted label, one probability column per class; with the
    DataModule's `sample_submission`, also `submission.csv` in the sample's shape."""

    def __init__(self, output_dir: str | Path, class_names: list[str], filename: str = "predictions.csv"):
        super().__init__(write_interval="epoch")
        self.output_dir = Path(output_dir)
        self.class_names = class_names
        self.filename = filename

    def thresholds(self, pl_module: L.LightningModule) -> np.ndarray | float | None:
        """Per-class decision thresholds (multi-label tags); None: one label per image (argmax)."""
        return None

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any) -> None:
        merged = gather_predictions(trainer, predictions)
        if merged is None:
            return
        ids, probs, thresholds = np.asarray(merged["id"]), merged["probs"], self.thresholds(pl_module)
        frame = submission_frame(ids, probs, self.class_names, thresholds=thresholds).drop_duplicates("image")
        write_csv(frame, self.output_dir / self.filename)
        print(f"wrote {len(frame)} predictions to {self.output_dir / self.filename}")
        sample = sample_for(trainer.datamodule)
        if sample is not None:
            submission = submission_frame(ids, probs, self.class_names, sample=read_sample(sample), source=sample,
                                          thresholds=thresholds)
            write_csv(submission, self.output_dir / SUBMISSION)
            print(f"wrote {len(submission)} rows shaped like {sample} to {self.output_dir / SUBMISSION}")


def restore_mask(probs: np.ndarray, size: tuple[int, int], binary: bool, threshold: float = 0.5) -> np.ndarray:
    """Probabilities (C, h, w) at model resolution -> an index mask (H, W) at the original size.

    The probabilities are resized (bilinear) before thresholding / argmax, so edges stay smooth.
    """
    height, width = int(size[0]), int(size[1])
    probs = np.ascontiguousarray(np.asarray(probs, dtype=np.float32).transpose(1, 2, 0))
    resized = cv2.resize(probs, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, -1)
    if binary:
        return (resized[..., 0] > threshold).astype(np.uint8)
    return resized.argmax(axis=2).astype(np.uint8)


class SegmentationWriter(BasePredictionWriter):
    """Masks at each image's original size (`masks/<id>.png`: 0/255 when binary, else class index)
    and `submission.csv` with run-length encodings (id, rle_mask; multiclass: id, class, rle_mask per
    foreground class; an empty mask is an empty string), or in the shape of the DataModule's
    `sample_submission` (binary masks).

    Each rank writes the PNGs of its own images; only the RLE rows are gathered.
    """

    def __init__(self, output_dir: str | Path, binary: bool = True, threshold: float = 0.5, rle_order: str | None = None,
                 filename: str = "submission.csv", mask_dir: str = "masks"):
        super().__init__(write_interval="epoch")
        self.output_dir = Path(output_dir)
        self.binary = binary
        self.threshold = threshold
        self.rle_order = rle_order
        self.filename = filename
        self.mask_dir = mask_dir

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any) -> None:
        # The RLE pixel order of the competition: the DataModule's rle_order unless given here.
        order = self.rle_order or getattr(trainer.datamodule, "rle_order", "C")
        batches = [b for part in predictions for b in (part if isinstance(part, list) else [part])]
        rows: dict[str, list] = {"id": [], "class": [], "rle_mask": []}
        for batch in batches:
            probs = batch["probs"].float().cpu().numpy()
            for id_, prob, size in zip(batch["id"], probs, batch["size"].tolist()):
                mask = restore_mask(prob, size, self.binary, self.threshold)
                write_image(self.output_dir / self.mask_dir / f"{id_}.png", mask * 255 if self.binary else mask)
                for k in [1] if self.binary else range(1, prob.shape[0]):
                    rows["id"].append(id_)
                    rows["class"].append(k)
                    rows["rle_mask"].append(rle_encode(mask == k, order))
        merged = gather_predictions(trainer, [rows])
        if merged is None:
            return
        frame = pd.DataFrame(merged)
        frame = frame.drop_duplicates(["id", "class"]).sort_values(["id", "class"], kind="stable")
        if self.binary:
            frame = frame.drop(columns="class")
        n_masks = frame["id"].nunique()
        sample = sample_for(trainer.datamodule)
        if sample is not None and self.binary:
            frame = follow_sample(frame["id"].to_numpy(), {"rle_mask": frame["rle_mask"].to_numpy()}, read_sample(sample), sample)
        write_csv(frame, self.output_dir / self.filename)
        print(f"wrote {n_masks} masks to {self.output_dir / self.mask_dir} and {self.output_dir / self.filename}")


class BoxWriter(BasePredictionWriter):
    """`boxes.csv` in the box-training format (image, x, y, size: squares in original pixels)."""

    def __init__(self, output_dir: str | Path, image_size: int, filename: str = "boxes.csv"):
        super().__init__(write_interval="epoch")
        self.output_dir = Path(output_dir)
        self.image_size = image_size
        self.filename = filename

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any) -> None:
        from lightning_cv.data.bbox import original_square

        merged = gather_predictions(trainer, predictions)
        if merged is None:
            return
        squares = [original_square(box, int(h), int(w), self.image_size) for box, (h, w) in zip(merged["box"], merged["orig_size"])]
        frame = pd.DataFrame(squares, columns=["x", "y", "size"]).assign(image=merged["id"])[["image", "x", "y", "size"]]
        frame = frame.drop_duplicates("image").sort_values("image", kind="stable")
        write_csv(frame, self.output_dir / self.filename)
        print(f"wrote {len(frame)} boxes to {self.output_dir / self.filename}")


class MultiLabelWriter(ClassificationWriter):
    """`predictions.csv`: image, tags (space-separated: each tag above its threshold, at least the most
    likely one), one probability column per tag; `submission.csv` as ClassificationWriter's.
    Thresholds: as given, else the model's `label_thresholds`."""

    def __init__(self, output_dir: str | Path, class_names: list[str], thresholds: np.ndarray | float | None = None,
                 filename: str = "predictions.csv"):
        super().__init__(output_dir, class_names, filename)
        self.fixed_thresholds = thresholds

    def thresholds(self, pl_module: L.LightningModule) -> np.ndarray | float:
        thresholds = self.fixed_thresholds
        if thresholds is None:
            thresholds = pl_module.label_thresholds.detach().cpu().numpy()
        shown = ", ".join(f"{n} {t:.2f}" for n, t in zip(self.class_names, np.broadcast_to(thresholds, len(self.class_names))))
        print(f"tag thresholds: {shown}")
        return thresholds
