"""Image classification data: a CSV of image + label, or one folder per class."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from lightning_cv.data.augment import AugmentSpec
from lightning_cv.data.base import CVDataModule, Rows, list_images
from lightning_cv.data.dataset import ImageDataset
from lightning_cv.data.label_layouts import (
    class_folders,
    find_label_table,
    name_labels,
    one_hot,
    table_options,
)
from lightning_cv.data.pseudo import select_pseudo_labels
from lightning_cv.data.survey import (
    Reading,
    Survey,
    grades,
    is_tag_column,
    measured,
    numbers,
    shared_layout,
    values,
)
from lightning_cv.errors import UserInputError
from lightning_cv.io.images import DataError
from lightning_cv.io.labels import encode_labels, labels_from_columns, read_table, sorted_labels


class ClassificationDataModule(CVDataModule):
    """Reads `data_dir/<csv>` (image, label) with images under `data_dir/<image_dir>/`, or, when the
    CSV is absent, an ImageFolder layout: `data_dir/<image_dir>/<class>/*.png`.

    Args:
        csv: training CSV, relative to data_dir.
        image_dir: folder of training images, relative to data_dir.
        image_col: CSV column with the file name (or id, see image_suffix).
        label_col: CSV column with the label (names or integers).
        label_cols: one column per class instead, 0/1 (one-hot tables: Plant Pathology's
            healthy,multiple_diseases,rust,scab); the classes are these columns, in this order, and
            predictions and submissions come back in them.
        image_suffix: appended to image_col values to form file names (e.g. ".jpg" when the CSV has ids).
        classes: explicit class list and order; labels outside it are an error. Default: from the CSV.
        test_csv: labelled CSV (same columns) for `test`, images in predict_dir.
        pseudo_labels: a predictions file of test images (predict's predictions.csv, or an ensemble's
            submission.csv/.npz with probabilities; relative to the working directory): the rows whose
            highest probability is at least pseudo_threshold join the training split (never
            validation), as images in predict_dir labelled with that class.
        pseudo_threshold: the confidence a prediction needs to become a pseudo label.
        submission_labels: with two classes, a sample-submission column not named after a class gets the
            label instead of P(positive class) (AUC and log-loss competitions want the probability).
        label_pattern: a regular expression with one group that takes each image's label from its file name,
            for folders without a CSV (Dogs vs. Cats' `cat.123.jpg`: '^([a-z]+)\\.').
    """

    def __init__(
        self,
        data_dir: str = "data/cls",
        csv: str = "train.csv",
        image_dir: str = "train",
        image_col: str = "image",
        label_col: str = "label",
        label_cols: list[str] | None = None,
        image_suffix: str = "",
        classes: list[str] | None = None,
        test_csv: str | None = None,
        pseudo_labels: str | None = None,
        pseudo_threshold: float = 0.9,
        submission_labels: bool = False,
        label_pattern: str | None = None,
        **kwargs: Any,
    ):
        # The standard options (image_size, batch_size, fold, cache, sampler, sample_submission ...) are
        # CVDataModule's; jsonargparse follows **kwargs to them, so the command line and --help list them all.
        super().__init__(data_dir=data_dir, **kwargs)
        self.pseudo_labels = Path(pseudo_labels) if pseudo_labels else None
        self.pseudo_threshold = pseudo_threshold
        self.submission_labels = submission_labels
        self.csv = self.data_dir / csv
        self.image_dir = self.data_dir / image_dir
        self.image_col = image_col
        self.label_col = label_col
        self.label_cols = list(label_cols) if label_cols else None
        self.image_suffix = image_suffix
        self.classes = classes
        self.test_csv = self.data_dir / test_csv if test_csv else None
        self.label_pattern = label_pattern
        if label_pattern is not None and re.compile(label_pattern).groups != 1:
            raise UserInputError(f"--data.label_pattern {label_pattern!r}: needs exactly one (group), the label")

    # -- recognizing a competition folder (`lightning-cv init`) ------------------------------------
    TABLE_DEFAULTS: ClassVar[dict[str, str]] = {"csv": "train.csv", "image_col": "image", "label_col": "label"}

    @classmethod
    def recognize(cls, survey: Survey) -> Reading | None:
        """A table of images with one label each (names or integers; grades too, though regression claims
        those first), one-hot columns, a folder per class, or labels in the file names."""
        table = find_label_table(survey)
        if table is None:
            return cls._recognize_folders(survey)
        targets, why = table.targets(survey)
        reading = Reading(cls.task_name, 0.9)
        if one_hot(table.frame, targets):
            reading.evidence.append(("task", cls.task_name, table.name, f"one-hot columns {', '.join(targets)} ({why})"))
            table_options(reading, table, None, cls.TABLE_DEFAULTS)
            reading.set("label_cols", targets, table.name, "one 1 a row: a class per image")
            if survey.sample is not None:
                reading.set("model.monitor", "val/logloss", survey.sample[0], "a probability per class (AUC, log loss)")
        else:
            labels = [c for c in targets if _label_column(table.frame[c])]
            if not labels:
                return None
            label, names = labels[0], sorted(values(table.frame[labels[0]]).unique())
            if len(labels) > 1:
                reading.ask("label_col", f"{len(labels)} columns of {table.name} could be the label ({', '.join(labels)}): "
                                         "pass --data.label_col NAME")
            graded = grades(table.frame[label]) is not None
            reading.score = 0.6 if graded else 0.85
            reading.evidence.append(("task", cls.task_name, table.name, f"{label}: {len(names)} classes "
                                     f"({', '.join(names[:6])}{' ...' if len(names) > 6 else ''}; {why})"))
            table_options(reading, table, label, cls.TABLE_DEFAULTS)
            target = next((c for c in survey.sample_targets()), None)
            if len(names) == 2 and target is not None and numbers(survey.sample[1][target]) is not None:
                reading.set("model.monitor", "val/auc", survey.sample[0], f"{target}: a probability (ROC AUC, log loss)")
        shared_layout(reading, survey, table.images)
        return reading

    @classmethod
    def _recognize_folders(cls, survey: Survey) -> Reading | None:
        """A folder per class (`train/<class>/*.jpg`), or labels in file names (Dogs vs. Cats)."""
        folders = class_folders(survey)
        reading = Reading(cls.task_name, 0.85)
        if folders is not None:
            parent, names = folders
            reading.evidence.append(("task", cls.task_name, f"{parent}/", f"a folder per class: {', '.join(names[:6])}"))
            shared_layout(reading, survey, f"{parent}/{names[0]}", image_dir=parent)
            return reading
        train = next((f for f in survey.image_folders() if "test" not in f.lower()), None)
        named = name_labels(survey, train) if train is not None else None
        if named is None:
            return None
        pattern, names = named
        reading.score = 0.8
        reading.evidence.append(("task", cls.task_name, f"{train}/", f"labels in the file names: {', '.join(names[:6])}"))
        reading.set("label_pattern", pattern, f"{train}/", f"e.g. {survey.folders[train][0].name}")
        shared_layout(reading, survey, train)
        return reading

    # -- the labelled table ----------------------------------------------------------------------
    @property
    def is_image_folder(self) -> bool:
        """Rows from the folders (a folder per class, or labels in the file names), not from a CSV."""
        if self.csv.is_file() or not self.image_dir.is_dir():
            return False
        return self.label_pattern is not None or any(p.is_dir() for p in self.image_dir.iterdir())

    @cached_property
    def table(self) -> pd.DataFrame:
        """Columns `path`, `label`, `id`: one row per training image, from the CSV or the folders."""
        if self.is_image_folder and self.label_pattern is not None:
            return self._named_rows()
        if self.is_image_folder:
            rows = [(p, d.name, f"{d.name}/{p.name}") for d in sorted(self.image_dir.iterdir()) if d.is_dir() for p in list_images(d)]
            return pd.DataFrame(rows, columns=["path", "label", "id"])
        if not self.csv.is_file() and not self.data_dir.is_dir():
            raise DataError(
                f"{self.data_dir}: data directory not found. Create the demo with `lightning-cv demo --task {self.task_name} "
                f"--out {self.data_dir}` or point --data.data_dir at a folder with {self.csv.name} and {self.image_dir.name}/"
            )
        return self._read_labelled(self.csv, self.image_dir)

    def _named_rows(self) -> pd.DataFrame:
        """One row per image of image_dir, labelled by --data.label_pattern's group in its file name."""
        paths = list_images(self.image_dir)
        labels = [re.search(self.label_pattern, p.name) for p in paths]
        missing = next((p for p, m in zip(paths, labels) if m is None), None)
        if missing is not None:
            raise DataError(f"{missing}: --data.label_pattern {self.label_pattern!r} finds no label in its name")
        return pd.DataFrame({"path": paths, "label": [m.group(1) for m in labels], "id": [p.name for p in paths]})

    def _read_table(self, csv: Path) -> pd.DataFrame:
        """The labelled CSV, with one-hot label columns (--data.label_cols) read into the label column."""
        if not self.label_cols:
            return read_table(csv, [self.image_col, self.label_col])
        frame = read_table(csv, [self.image_col, *self.label_cols])
        return frame.assign(**{self.label_col: labels_from_columns(frame, self.label_cols, csv, single=not self.multilabel)})

    def _read_labelled(self, csv: Path, image_dir: Path) -> pd.DataFrame:
        frame = self._read_table(csv)
        if frame.empty:
            raise DataError(f"{csv}: no rows")
        ids = frame[self.image_col].astype(str)
        duplicated = ids[ids.duplicated()]
        if len(duplicated):
            raise DataError(f"{csv}: row {duplicated.index[0] + 2}: duplicate image {duplicated.iloc[0]!r}")
        empty = frame[frame[self.label_col].str.strip() == ""]
        if len(empty):
            raise DataError(f"{csv}: row {empty.index[0] + 2}: empty label for {empty[self.image_col].iloc[0]!r}")
        paths = [image_dir / f"{name}{self.image_suffix}" for name in ids]
        return pd.DataFrame({"path": paths, "label": frame[self.label_col].str.strip().tolist(), "id": ids.tolist()})

    @property
    def class_names(self) -> list[str]:
        return list(self.classes or self.label_cols or sorted_labels(self.table["label"].tolist()))

    def fold_table(self) -> tuple[pd.DataFrame, str, str | None]:
        """The training CSV as it is (ImageFolder: id, label), keyed by image."""
        if self.is_image_folder:
            return self.table[["id", "label"]], "id", "label"
        return self._read_table(self.csv), self.image_col, self.label_col

    # -- the setup hooks -----------------------------------------------------------------------------------
    # What a target is: a class index per image (multi-label data: a 0/1 row per image).
    target_dtype: type = np.int64

    def encode_targets(self, labels: list[str], source: Path) -> np.ndarray:
        """The labels of a CSV (or of the folders) as targets, naming the first bad row of `source`."""
        return encode_labels(labels, self.class_names, source)

    def _rows(self, table: pd.DataFrame, source: Path) -> Rows:
        """Labelled rows of a table (path, label, id); every image exists, has a readable header and is
        not truncated, before the first epoch."""
        targets = self.encode_targets(table["label"].tolist(), source)
        for path in table["path"]:
            self.decoder.check(path)
        return Rows(table["id"].tolist(), table["path"].tolist(), targets)

    def labelled_rows(self) -> Rows:
        return self._rows(self.table, self.image_dir if self.is_image_folder else self.csv)

    def test_rows(self) -> Rows:
        if self.test_csv is None:
            raise DataError("`test` needs labels: pass --data.test_csv (same columns as the training CSV, images in predict_dir)")
        return self._rows(self._read_labelled(self.test_csv, self.predict_dir), self.test_csv)

    def stratify(self, rows: Rows) -> np.ndarray:
        return rows.targets

    def training_rows(self, rows: Rows) -> Rows:
        """With --data.pseudo_labels, the confident test predictions join the training rows (checked, logged)."""
        if self.pseudo_labels is None:
            return rows
        table = self.table
        pseudo = select_pseudo_labels(self.pseudo_labels, self.class_names, self.pseudo_threshold, self.predict_dir,
                                      table["path"].tolist(), table["id"].tolist())
        for path in pseudo.paths:
            self.decoder.check(path)
        rank_zero_info(pseudo.summary)
        return rows + Rows(pseudo.ids, pseudo.paths, pseudo.targets)

    def build_dataset(self, rows: Rows, augment: AugmentSpec | None) -> ImageDataset:
        return self.image_dataset(rows, augment, self.target_dtype)


def _label_column(column: pd.Series) -> bool:
    """A single label per row: 2 to 50 names or integers, repeated (not an id, not tags, not measurements)."""
    found = values(column)
    return (not measured(column) and not is_tag_column(column) and 2 <= found.nunique() <= 50
            and found.nunique() < 0.5 * len(column))

