"""Multi-label image classification data (Planet style): a CSV whose label column holds space-separated tags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_cv.data.base import Rows, check_holdout, holdout_split
from lightning_cv.data.classification import ClassificationDataModule
from lightning_cv.data.folds import iterative_stratification
from lightning_cv.data.label_layouts import find_label_table, one_hot, table_options
from lightning_cv.data.survey import Reading, Survey, is_tag_column, shared_layout, values
from lightning_cv.errors import UserInputError
from lightning_cv.io.labels import encode_tags, split_tags


def multilabel_holdout(targets: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/val indices by iterative stratification: the rows of one of round(1 / val_fraction) folds
    are held out (0.2 -> 1/5 of the rows), so every tag keeps about its share in both parts."""
    n = len(targets)
    check_holdout(n, val_fraction)
    n_folds = min(max(2, round(1 / val_fraction)), n)
    folds = iterative_stratification(targets, n_folds, seed)
    return np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)


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

    multilabel = True
    target_dtype = np.float32

    def __init__(self, data_dir: str = "data/multilabel", label_col: str = "tags", **kwargs: Any):
        # The other options are ClassificationDataModule's (jsonargparse follows **kwargs to them).
        super().__init__(data_dir=data_dir, label_col=label_col, **kwargs)
        if self.pseudo_labels is not None:
            raise UserInputError("--data.pseudo_labels labels each image with one class: it is for single-label data")

    @property
    def is_image_folder(self) -> bool:
        return False  # tags need a CSV

    @classmethod
    def recognize(cls, survey: Survey) -> Reading | None:
        """A table of images with space-separated tags (Planet; HPA's integers, per-channel files too), or
        0/1 columns with any number of 1s a row."""
        table = find_label_table(survey)
        if table is None:
            return None
        targets, why = table.targets(survey)
        reading = Reading(cls.task_name, 0.9)
        tags = [c for c in targets if is_tag_column(table.frame[c])]
        defaults = {**cls.TABLE_DEFAULTS, "label_col": "tags"}
        if tags:
            names = sorted({t for cell in values(table.frame[tags[0]]) for t in cell.split()})
            reading.evidence.append(("task", cls.task_name, table.name, f"{tags[0]}: space-separated tags, {len(names)} in all "
                                     f"({', '.join(names[:6])}{' ...' if len(names) > 6 else ''}; {why})"))
            table_options(reading, table, tags[0], defaults)
        elif one_hot(table.frame, targets) is False:
            reading.score = 0.85
            reading.evidence.append(("task", cls.task_name, table.name, f"0/1 columns {', '.join(targets)} with any number of 1s a row"))
            table_options(reading, table, None, defaults)
            reading.set("label_cols", targets, table.name, "a tag per column")
        else:
            return None
        shared_layout(reading, survey, table.images)
        return reading

    @property
    def class_names(self) -> list[str]:
        return list(self.classes or self.label_cols or split_tags(self.table["label"].tolist())[1])

    def encode_targets(self, labels: list[str], source: Path) -> np.ndarray:
        return encode_tags(labels, self.class_names, source)

    def holdout(self, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        """A hold-out stratified over the tags (iterative stratification of the 0/1 rows); with
        --data.group_pattern, grouped instead (as `cv`, which does not stratify grouped multi-label folds either)."""
        groups = self.fold_groups(pd.Series(rows.ids))
        if groups is not None:
            return holdout_split(len(rows), self.val_fraction, self.seed, groups=groups.tolist())
        return multilabel_holdout(np.asarray(rows.targets), self.val_fraction, self.seed)
