"""Image regression data: a CSV of image + one numeric target (or several), e.g. PetFinder's Pawpularity."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_cv.data.augment import AugmentSpec
from lightning_cv.data.base import CVDataModule, Rows
from lightning_cv.data.dataset import ImageDataset
from lightning_cv.data.label_layouts import find_label_table, table_options
from lightning_cv.data.survey import (
    Reading,
    Survey,
    grades,
    is_binary_column,
    measured,
    numbers,
    shared_layout,
)
from lightning_cv.io.images import DataError
from lightning_cv.io.labels import read_table

BIN_COL = "target_bin"


def read_targets(frame: pd.DataFrame, columns: list[str], source: Path) -> np.ndarray:
    """The target columns as a float32 (rows, targets) array, naming the first row without a number."""
    values = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(bad):
        row = int(bad[0])
        raw = ", ".join(f"{c}={frame[c].iloc[row]!r}" for c in columns)
        raise DataError(f"{source}: row {row + 2}: targets must be numbers, got {raw}")
    return values.astype(np.float32)


def quantile_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin index of each value by quantiles (ties share a bin), for stratifying folds and hold-outs."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right")


class RegressionDataModule(CVDataModule):
    """Reads `data_dir/<csv>` (an image column and one numeric target column, or several) with images under
    `data_dir/<image_dir>/`; the classification table layout with numbers for labels.

    PetFinder Pawpularity: `--data.image_col Id --data.label_col Pawpularity --data.image_suffix .jpg`.
    Folds and the hold-out are stratified by `bins` quantile bins of the first target.

    Args:
        csv: training CSV, relative to data_dir.
        image_dir: folder of training images, relative to data_dir.
        image_col: CSV column with the file name (or id, see image_suffix).
        label_col: CSV column with the target.
        label_cols: several target columns, predicted together (instead of label_col).
        image_suffix: appended to image_col values to form file names (e.g. ".jpg" when the CSV has ids).
        test_csv: labelled CSV (same columns) for `test`, images in predict_dir.
        bins: quantile bins of the first target that folds and the hold-out are stratified by.
    """

    def __init__(
        self,
        data_dir: str = "data/regression",
        csv: str = "train.csv",
        image_dir: str = "train",
        image_col: str = "image",
        label_col: str = "target",
        label_cols: list[str] | None = None,
        image_suffix: str = "",
        test_csv: str | None = None,
        bins: int = 5,
        **kwargs: Any,
    ):
        # The standard options (image_size, batch_size, fold, cache, sample_submission ...) are CVDataModule's.
        super().__init__(data_dir=data_dir, **kwargs)
        self.csv = self.data_dir / csv
        self.image_dir = self.data_dir / image_dir
        self.image_col = image_col
        self.label_cols = list(label_cols) if label_cols else [label_col]
        self.image_suffix = image_suffix
        self.test_csv = self.data_dir / test_csv if test_csv else None
        if bins < 1:
            raise DataError(f"--data.bins must be at least 1, got {bins}")
        self.bins = bins

    @classmethod
    def recognize(cls, survey: Survey) -> Reading | None:
        """A table of images with a numeric target: measurements (PetFinder's 1-100), or ordinal grades (APTOS
        0-4), which regression with --model.grades scores by quadratic weighted kappa."""
        table = find_label_table(survey)
        if table is None:
            return None
        targets, why = table.targets(survey)
        numeric = [c for c in targets if numbers(table.frame[c]) is not None and not is_binary_column(table.frame[c])]
        if not numeric:
            return None
        label, target = numeric[0], numbers(table.frame[numeric[0]])
        reading = Reading(cls.task_name, 0.85)
        graded = grades(table.frame[label])
        if graded is not None:
            reading.score = 0.75
            reading.evidence.append(("task", cls.task_name, table.name, f"{label}: grades {graded[0]}-{graded[-1]}, read as "
                                     "regression scored by QWK (as APTOS winners did); --task cls classifies them instead"))
            reading.set("model.grades", True, table.name, "ordinal grades: values rounded, cut points tuned by cv")
            reading.set("model.monitor", "val/qwk", table.name, "grades are scored by quadratic weighted kappa")
        elif measured(table.frame[label]):
            reading.evidence.append(("task", cls.task_name, table.name, f"{label}: numbers {target.min():g} to "
                                     f"{target.max():g}, {target.nunique()} values ({why})"))
        else:
            return None
        table_options(reading, table, label, {"csv": "train.csv", "image_col": "image", "label_col": "target"})
        shared_layout(reading, survey, table.images)
        return reading

    @property
    def class_names(self) -> list[str]:
        """The target names: the model has one output per target."""
        return self.label_cols

    @cached_property
    def table(self) -> pd.DataFrame:
        if not self.data_dir.is_dir():
            raise DataError(
                f"{self.data_dir}: data directory not found. Create the demo with `lightning-cv demo --task "
                f"{self.task_name} --out {self.data_dir}` or point --data.data_dir at a folder with {self.csv.name} "
                f"and {self.image_dir.name}/"
            )
        return self._read(self.csv)

    def _read(self, csv: Path) -> pd.DataFrame:
        frame = read_table(csv, [self.image_col, *self.label_cols])
        if frame.empty:
            raise DataError(f"{csv}: no rows")
        duplicated = frame[self.image_col][frame[self.image_col].duplicated()]
        if len(duplicated):
            raise DataError(f"{csv}: row {duplicated.index[0] + 2}: duplicate image {duplicated.iloc[0]!r}")
        return frame

    def _rows(self, frame: pd.DataFrame, source: Path, image_dir: Path) -> Rows:
        targets = read_targets(frame, self.label_cols, source)
        ids = frame[self.image_col].astype(str).tolist()
        paths = [image_dir / f"{name}{self.image_suffix}" for name in ids]
        for path in paths:
            self.decoder.check(path)
        return Rows(ids, paths, targets)

    # -- the setup hooks -----------------------------------------------------------------------------------
    def labelled_rows(self) -> Rows:
        return self._rows(self.table, self.csv, self.image_dir)

    def test_rows(self) -> Rows:
        if self.test_csv is None:
            raise DataError("`test` needs targets: pass --data.test_csv (same columns as the training CSV, images in predict_dir)")
        return self._rows(self._read(self.test_csv), self.test_csv, self.predict_dir)

    def stratify(self, rows: Rows) -> np.ndarray | None:
        """Quantile bins of the first target (none when a bin would hold a single row)."""
        bins = quantile_bins(np.asarray(rows.targets)[:, 0], self.bins)
        return bins if np.bincount(bins).min() >= 2 else None

    def fold_table(self) -> tuple[pd.DataFrame, str, str | None]:
        """The training CSV with the first target's quantile bin (`target_bin`), folds stratified by it."""
        frame = self.table.copy()
        frame[BIN_COL] = quantile_bins(read_targets(frame, self.label_cols, self.csv)[:, 0], self.bins).astype(str)
        return frame, self.image_col, BIN_COL

    def build_dataset(self, rows: Rows, augment: AugmentSpec | None) -> ImageDataset:
        return self.image_dataset(rows, augment, np.float32)
