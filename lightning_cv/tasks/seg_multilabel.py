"""Multi-label segmentation (Severstal steel, Understanding Clouds): a sigmoid channel per class, overlaps
allowed, scored as competitions do, by Dice over image x class pairs, with post-processing tuned out of fold."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelF1Score

from lightning_cv.data.demos import make_seg_multilabel
from lightning_cv.data.seg_multilabel import MultiLabelSegmentationDataModule, image_key, split_key
from lightning_cv.errors import DataError
from lightning_cv.io.images import write_csv
from lightning_cv.io.masks import restore_mask, rle_encode
from lightning_cv.models.losses import segmentation_loss
from lightning_cv.models.metrics import MeanOverImages
from lightning_cv.predictions.decisions import load_decisions, save_decisions
from lightning_cv.predictions.files import Predictions
from lightning_cv.predictions.postprocess import (
    THRESHOLDS,
    counted_dice,
    decide,
    pair_counts,
    search_postprocess,
)
from lightning_cv.predictions.stores import array_chunks
from lightning_cv.predictions.submission import SUBMISSION
from lightning_cv.tasks.registry import register_task
from lightning_cv.tasks.segmentation import SegmentationTask


class PairDice(MeanOverImages):
    """Mean Dice over image x class pairs (Severstal, Clouds): empty truth and empty prediction score 1."""

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.flatten(2) > 0, target.flatten(2) > 0
        inter, total = (pred & target).sum(-1).double(), (pred.sum(-1) + target.sum(-1)).double()
        self.add(torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total)))


class MultiLabelSegmentationTask(SegmentationTask):
    """A segmentation model with one sigmoid channel per class (no background; overlaps allowed), BCE+Dice
    over the channels, and `val/dice_pairs`: mean Dice over image x class pairs, the leaderboard's metric.

    Args:
        **kwargs: SegmentationTask's options (arch, encoder, loss (default bce+dice), threshold, tiles, tta,
            postprocess: here a threshold and minimum area per class ...).
    """

    monitor = "val/dice_pairs"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.activation = "sigmoid"

    @property
    def binary(self) -> bool:
        return False  # a channel per class, even for two classes

    def build_criterion(self) -> nn.Module:
        return segmentation_loss(self.hparams.get("loss") or "bce+dice", self.num_classes, multilabel=True)

    def make_metrics(self, prefix: str) -> MetricCollection:
        return MetricCollection({"dice_pairs": PairDice(), "dice": MultilabelF1Score(self.num_classes, average="micro",
                                                                                     multidim_average="global")}, prefix=prefix)

    def labels(self, outputs: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) -> 0/1 masks per class."""
        return (outputs.float().sigmoid() > self.threshold).long()

    def predict_outputs(self, outputs: torch.Tensor, batch: dict) -> dict[str, Any]:
        return {"probs": self._crop(outputs, batch).float().sigmoid().half(), "size": batch["size"]}

    def prediction_meta(self, datamodule: Any) -> dict[str, Any]:
        meta = {"threshold": self.threshold, "min_area": 0, "rle_order": getattr(datamodule, "rle_order", "F"),
                "key_sep": getattr(datamodule, "key_sep", "_"), "keep_aspect": bool(getattr(datamodule, "keep_aspect", False))}
        return {**meta, **(load_decisions(self.postprocess, self.class_names) if self.postprocess else {})}

    def _examples(self, batch: dict, outputs: torch.Tensor, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pictures show class k + 1 where a class mask is on (the last class on top)."""
        weights = np.arange(1, self.num_classes + 1).reshape(1, -1, 1, 1)
        return [(image, (t * weights[0]).max(0), (p * weights[0]).max(0)) for image, t, p in super()._examples(batch, outputs, n)]

    # -- predictions ---------------------------------------------------------------------------------------
    @classmethod
    def masks(cls, predictions: Predictions) -> Iterator[np.ndarray]:
        """Each image's (C, H, W) 0/1 masks at its original size, after the per-class post-processing, one
        image at a time."""
        meta = predictions.meta
        threshold, min_area = meta.get("threshold", 0.5), meta.get("min_area", 0)
        letterboxed = bool(meta.get("keep_aspect", False))
        for probs, size in zip(predictions.arrays["probs"], predictions.arrays["size"]):
            probs = probs.astype(np.float32)
            keep = decide(probs, threshold, min_area)
            thresholds = np.broadcast_to(np.asarray(threshold, np.float32), (len(probs),))
            yield np.stack([restore_mask(p[None], tuple(size), True, float(t), letterboxed) * k
                            for p, t, k in zip(probs, thresholds, keep)])

    @classmethod
    def submission(cls, predictions: Predictions, sample: pd.DataFrame | None = None,
                   source: str | Path = "sample submission", masks: Iterable[np.ndarray] | None = None) -> pd.DataFrame:
        """`ImageId_ClassId,EncodedPixels`: one RLE per image and class (empty: ''); in a sample's shape,
        its composite keys in its order."""
        masks = cls.masks(predictions) if masks is None else masks
        order, sep = predictions.meta.get("rle_order", "F"), predictions.meta.get("key_sep", "_")
        rles = {(image_key(i), name): rle_encode(m[c], order)
                for i, m in zip(predictions.ids, masks) for c, name in enumerate(predictions.class_names)}
        if sample is None:
            keys = sorted(rles)
            return pd.DataFrame({f"ImageId{sep}ClassId": [f"{i}{sep}{c}" for i, c in keys],
                                 "EncodedPixels": [rles[k] for k in keys]})
        values = []
        for row, key in enumerate(sample.iloc[:, 0], start=2):
            image, label = split_key(key, sep)
            if (image_key(image), label) not in rles:
                raise DataError(f"{source}: row {row}: {key!r}: no prediction for image {image!r} and class {label!r} "
                                f"(classes {predictions.class_names})")
            values.append(rles[(image_key(image), label)])
        return pd.DataFrame({sample.columns[0]: sample.iloc[:, 0].to_numpy(), sample.columns[1]: values})

    @classmethod
    def write_outputs(cls, predictions: Predictions, out_dir: Path, sample: pd.DataFrame | None,
                      source: str | Path = "sample submission") -> None:
        frame = cls.submission(predictions, sample, source)
        write_csv(frame, out_dir / SUBMISSION)
        print(f"wrote {len(frame)} image x class masks of {len(predictions)} images to {out_dir / SUBMISSION}")

    @classmethod
    def oof_columns(cls, predictions: Predictions) -> pd.DataFrame:
        """The share of each image each class covers (at model resolution, threshold 0.5)."""
        probs = predictions.arrays["probs"]
        shares = np.concatenate([(c.astype(np.float32) > 0.5).reshape(*c.shape[:2], -1).mean(-1)
                                 for c in array_chunks(probs)]).round(4)
        return pd.DataFrame({f"share_{name}": shares[:, c] for c, name in enumerate(predictions.class_names)})

    @classmethod
    def report_classes(cls, predictions: Predictions) -> list[str]:
        return predictions.class_names  # no background channel

    @classmethod
    def class_masks(cls, predictions: Predictions, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Class c's masks at its threshold, emptied below its minimum area (the run's post-processing)."""
        meta = predictions.meta
        threshold = np.broadcast_to(np.asarray(meta.get("threshold", 0.5), np.float32), (len(predictions.class_names),))[c]
        min_area = np.broadcast_to(np.asarray(meta.get("min_area", 0), np.float64), (len(predictions.class_names),))[c]
        above = predictions.arrays["probs"][:, c].astype(np.float32) > threshold
        keep = above.reshape(len(above), -1).sum(1) >= min_area
        return above & keep[:, None, None], np.asarray(predictions.targets)[:, c] > 0

    @classmethod
    def score(cls, predictions: Predictions) -> dict[str, float]:
        """Pair Dice at the predictions' decisions and at a plain 0.5, at model resolution (read a chunk at a time)."""
        meta, classes = predictions.meta, len(predictions.class_names)
        threshold = np.broadcast_to(np.asarray(meta.get("threshold", 0.5), np.float32), (classes,))
        min_area = np.broadcast_to(np.asarray(meta.get("min_area", 0), np.float64), (classes,))
        above, inter, truth = pair_counts(predictions.arrays["probs"], predictions.targets,
                                          np.stack([threshold, np.full(classes, 0.5, np.float32)], axis=1))
        decided = counted_dice(above[:, :, 0], inter[:, :, 0], truth, min_area)
        return {"dice_pairs": float(decided.mean()), "dice_pairs_raw": float(counted_dice(above[:, :, 1], inter[:, :, 1], truth).mean())}

    @classmethod
    def tune(cls, predictions: Predictions, out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """Per-class threshold and minimum area tuned for the pair Dice on the out-of-fold predictions, saved
        as out_dir/postprocess.json (for `predict --model.postprocess` and `ensemble`)."""
        counts = pair_counts(predictions.arrays["probs"], predictions.targets, THRESHOLDS)
        thresholds, areas, tuned = search_postprocess(counts)
        above, inter, truth = counts
        half = THRESHOLDS.index(0.5)
        raw = float(counted_dice(above[:, :, half], inter[:, :, half], truth).mean())
        path = save_decisions(out_dir, predictions.class_names, {"threshold": thresholds, "min_area": areas},
                              {"dice_pairs": tuned, "dice_pairs_raw": raw})
        print(f"out-of-fold pair Dice of {len(predictions)} images: {raw:.4f} at 0.5, {tuned:.4f} with per-class post-processing "
              f"-> {path} (use: predict --model.postprocess {path})")
        return {"threshold": thresholds, "min_area": areas}, {"dice_pairs_raw": raw, "dice_pairs_tuned": tuned,
                                                              "postprocess": str(path)}


register_task("seg-multilabel", MultiLabelSegmentationTask, MultiLabelSegmentationDataModule, demo=make_seg_multilabel,
              summary="multi-label segmentation: a mask per class, overlaps allowed, RLE tables (Severstal, Clouds)")
