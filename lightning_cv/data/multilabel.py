"""Multi-label image classification data (Planet style): a CSV whose label column holds space-separated tags."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_cv.augment import AugmentSpec
from lightning_cv.data.classification import ClassificationDataModule
from lightning_cv.data.dataset import ImageDataset
from lightning_cv.errors import DataError, UserInputError
from lightning_cv.folds import iterative_stratification, split_tags
from lightning_cv.io import read_image


def encode_tags(labels: Sequence[str], classes: list[str], source: Path, first_row: int = 2) -> np.ndarray:
    """Space-separated tags -> a float 0/1 matrix (rows, classes), naming the first row with an unknown
    or empty tag list."""
    index = {name: i for i, name in enumerate(classes)}
    matrix = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for row, label in enumerate(labels):
        tags = str(label).split()
        if not tags:
            raise DataError(f"{source}: row {row + first_row}: no tags")
        unknown = [t for t in tags if t not in index]
        if unknown:
            raise DataError(f"{source}: row {row + first_row}: unknown tag {unknown[0]!r}; known tags are {classes}")
        matrix[row, [index[t] for t in tags]] = 1.0
    return matrix


def multilabel_holdout(targets: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/val indices by iterative stratification: the rows of one of round(1 / val_fraction) folds
    are held out (0.2 -> 1/5 of the rows), so every tag keeps about its share in both parts."""
    n = len(targets)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--data.val_fraction must be in (0, 1), got {val_fraction}")
    if n < 2:
        raise DataError(f"{n} training image(s): a train/validation split needs at least 2")
    n_folds = min(max(2, round(1 / val_fraction)), n)
    folds = iterative_stratification(targets, n_folds, seed)
    return np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)


class MultiLabelDataset(ImageDataset):
    """`ImageDataset` whose target is a float 0/1 vector per image (one entry per tag)."""

    def __init__(self, items: Sequence[Any], targets: np.ndarray | None = None, transform: Callable[..., dict[str, Any]] | None = None,
                 ids: Sequence[str] | None = None, reader: Callable[[Any], np.ndarray] = read_image):
        super().__init__(items, None, transform, ids, reader)
        if targets is not None and len(targets) != len(self.items):
            raise ValueError(f"{len(self.items)} images but {len(targets)} targets")
        self.targets = None if targets is None else np.asarray(targets, dtype=np.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.reader(self.items[index])
        sample: dict[str, Any] = {"id": self.ids[index], "index": index}
        sample["image"] = self.transform(image=image)["image"] if self.transform else image
        if self.targets is not None:
            sample["target"] = self.targets[index]
        return sample


class MultiLabelDataModule(ClassificationDataModule):
    """Reads `data_dir/<csv>` (image, tags: space-separated, e.g. "clear primary water") with images
    under `data_dir/<image_dir>/`. Targets are 0/1 vectors over the sorted tags (or `classes`).

    For Planet: `--data.image_col image_name --data.image_suffix .jpg --data.image_dir train-jpg`.
    `classes` lists the tags (default: every tag in the CSV, sorted); the hold-out is one of
    round(1 / val_fraction) folds of an iterative stratification (0.2 holds out one fold of 5).
    Every other option is ClassificationDataModule's.

    Args:
        label_col: CSV column with the space-separated tags.
    """

    task_name = "multilabel"
    multilabel = True

    def __init__(self, data_dir: str = "data/multilabel", label_col: str = "tags", **kwargs: Any):
        # The other options are ClassificationDataModule's (jsonargparse follows **kwargs to them).
        super().__init__(data_dir=data_dir, label_col=label_col, **kwargs)
        if self.pseudo_labels is not None:
            raise UserInputError("--data.pseudo_labels labels each image with one class: it is for single-label data")

    @property
    def is_image_folder(self) -> bool:
        return False  # tags need a CSV

    @cached_property
    def table(self) -> pd.DataFrame:
        """Columns `path`, `label` (the tag string), `id`: one row per training image."""
        if not self.data_dir.is_dir():
            raise DataError(
                f"{self.data_dir}: data directory not found. Create the demo with `lightning-cv demo --task multilabel "
                f"--out {self.data_dir}` or point --data.data_dir at a folder with {self.csv.name} and {self.image_dir.name}/"
            )
        return self._read_labelled(self.csv, self.image_dir)

    @property
    def class_names(self) -> list[str]:
        return list(self.classes) if self.classes else split_tags(self.table["label"].tolist())[1]

    def split_rows(self, ids: Sequence[str], stratify: Any = None, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The fold's rows with --data.fold, else a hold-out stratified over the tags (`stratify`: the 0/1 matrix)."""
        if self.fold is None and stratify is not None:
            return multilabel_holdout(np.asarray(stratify), self.val_fraction, self.seed)
        return super().split_rows(ids, stratify, names)

    def _dataset(self, paths: list[Path], targets: np.ndarray | None, augment: AugmentSpec | None,
                 ids: list[str] | None = None) -> MultiLabelDataset:
        image = super()._dataset(paths, None, augment, ids)
        return MultiLabelDataset(image.items, targets, image.transform, image.ids, reader=image.reader)

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and "val" not in self.datasets:
            table = self.table
            targets = encode_tags(table["label"].tolist(), self.class_names, self.csv)
            self._check_images(table["path"].tolist())
            train, val = self.split_rows(table["id"].tolist(), stratify=targets)
            for split, rows, augment in (("train", train, self.train_augment), ("val", val, None)):
                part = table.iloc[rows]
                self.datasets[split] = self._dataset(part["path"].tolist(), targets[rows], augment, part["id"].tolist())
        if stage == "test" and "test" not in self.datasets:
            if self.test_csv is None:
                raise DataError("`test` needs labels: pass --data.test_csv (same columns as the training CSV, images in predict_dir)")
            table = self._read_labelled(self.test_csv, self.predict_dir)
            targets = encode_tags(table["label"].tolist(), self.class_names, self.test_csv)
            self._check_images(table["path"].tolist())
            self.datasets["test"] = self._dataset(table["path"].tolist(), targets, None, table["id"].tolist())
        if stage == "predict":
            super().setup(stage)  # the test folder, or the held-out rows (predict_split val) through setup("validate")
