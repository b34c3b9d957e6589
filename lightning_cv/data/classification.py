"""Image classification data: a CSV of image + label, or one folder per class."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info

from lightning_cv.augment import AugmentSpec, build_pipeline, resize
from lightning_cv.data.base import CVDataModule, list_images
from lightning_cv.data.dataset import ImageDataset
from lightning_cv.io import DataError, check_image
from lightning_cv.pseudo import PseudoLabels, select_pseudo_labels
from lightning_cv.submission import read_sample, sample_for, sample_rows


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """Read a CSV and check it has `columns`, naming the file and what it does have."""
    if not path.is_file():
        raise DataError(f"{path}: CSV not found")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)} (see --data.*_col)")
    return frame


def sorted_labels(labels: list[str]) -> list[str]:
    """Class order: numeric when every label is an integer (so "10" follows "9"), else alphabetical."""
    unique = set(labels)
    if all(s.lstrip("-").isdigit() for s in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def encode_labels(labels: list[str], classes: list[str], source: Path, first_row: int = 2) -> np.ndarray:
    """Map label names to indices, naming the first row with a label outside `classes`."""
    index = {name: i for i, name in enumerate(classes)}
    for row, label in enumerate(labels, start=first_row):
        if label not in index:
            raise DataError(f"{source}: row {row}: unknown label {label!r}; known classes are {classes}")
    return np.array([index[label] for label in labels], dtype=np.int64)


class ClassificationDataModule(CVDataModule):
    """Reads `data_dir/<csv>` (image, label) with images under `data_dir/<image_dir>/`, or, when the
    CSV is absent, an ImageFolder layout: `data_dir/<image_dir>/<class>/*.png`.

    Args:
        csv: training CSV, relative to data_dir.
        image_dir: folder of training images, relative to data_dir.
        image_col: CSV column with the file name (or id, see image_suffix).
        label_col: CSV column with the label (names or integers).
        image_suffix: appended to image_col values to form file names (e.g. ".jpg" when the CSV has ids).
        classes: explicit class list and order; labels outside it are an error. Default: from the CSV.
        test_csv: labelled CSV (same columns) for `test`, images in predict_dir.
        sample_submission: the competition's sample submission (relative to data_dir, or absolute):
            `predict` also writes submission.csv with its ids, order and columns (a class-name
            column gets that class's probability, any other column the label).
        pseudo_labels: a predictions file of test images (predict's predictions.csv, or an ensemble's
            submission.csv/.npz with probabilities; relative to the working directory): the rows whose
            highest probability is at least pseudo_threshold join the training split (never
            validation), as images in predict_dir labelled with that class.
        pseudo_threshold: the confidence a prediction needs to become a pseudo label.
    """

    task_name = "cls"

    def __init__(
        self,
        data_dir: str = "data/cls",
        csv: str = "train.csv",
        image_dir: str = "train",
        image_col: str = "image",
        label_col: str = "label",
        image_suffix: str = "",
        classes: list[str] | None = None,
        test_csv: str | None = None,
        sample_submission: str | None = None,
        pseudo_labels: str | None = None,
        pseudo_threshold: float = 0.9,
        **kwargs: Any,
    ):
        # The standard options (image_size, batch_size, fold, cache, sampler, ...) are CVDataModule's;
        # jsonargparse follows **kwargs to them, so the command line and --help list them all.
        super().__init__(data_dir=data_dir, **kwargs)
        self.sample_submission = self.data_dir / sample_submission if sample_submission else None
        self.pseudo_labels = Path(pseudo_labels) if pseudo_labels else None
        self.pseudo_threshold = pseudo_threshold
        self.csv = self.data_dir / csv
        self.image_dir = self.data_dir / image_dir
        self.image_col = image_col
        self.label_col = label_col
        self.image_suffix = image_suffix
        self.classes = classes
        self.test_csv = self.data_dir / test_csv if test_csv else None

    # -- the labelled table ----------------------------------------------------------------------
    @property
    def is_image_folder(self) -> bool:
        return not self.csv.is_file() and self.image_dir.is_dir() and any(p.is_dir() for p in self.image_dir.iterdir())

    @cached_property
    def table(self) -> pd.DataFrame:
        """Columns `path`, `label`, `id`: one row per training image, from the CSV or the folders."""
        if self.is_image_folder:
            rows = [(p, d.name, f"{d.name}/{p.name}") for d in sorted(self.image_dir.iterdir()) if d.is_dir() for p in list_images(d)]
            return pd.DataFrame(rows, columns=["path", "label", "id"])
        if not self.csv.is_file() and not self.data_dir.is_dir():
            raise DataError(
                f"{self.data_dir}: data directory not found. Create the demo with `lightning-cv demo --task {self.task_name} "
                f"--out {self.data_dir}` or point --data.data_dir at a folder with {self.csv.name} and {self.image_dir.name}/"
            )
        return self._read_labelled(self.csv, self.image_dir)

    def _read_labelled(self, csv: Path, image_dir: Path) -> pd.DataFrame:
        frame = read_table(csv, [self.image_col, self.label_col])
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
        return list(self.classes) if self.classes else sorted_labels(self.table["label"].tolist())

    def fold_table(self) -> tuple[pd.DataFrame, str, str | None]:
        """The training CSV as it is (ImageFolder: id, label), keyed by image."""
        if self.is_image_folder:
            return self.table[["id", "label"]], "id", "label"
        return read_table(self.csv, [self.image_col, self.label_col]), self.image_col, self.label_col

    # -- setup ------------------------------------------------------------------------------------
    # What a target is: a class index per image (multi-label data: a 0/1 row per image).
    target_dtype: type = np.int64

    def encode_targets(self, labels: list[str], source: Path) -> np.ndarray:
        """The labels of a CSV (or of the folders) as targets, naming the first bad row of `source`."""
        return encode_labels(labels, self.class_names, source)

    def _check_images(self, paths: list[Path]) -> None:
        """Fail before the first epoch: every image exists, has a readable header and is not truncated."""
        for path in paths:
            check_image(path)

    def _dataset(self, paths: list[Path], targets: np.ndarray | None, augment: AugmentSpec | None,
                 ids: list[str] | None = None) -> ImageDataset:
        """The resize runs in the pipeline, or once into the cache (then not again in the pipeline)."""
        pre = [resize(self.image_size, self.image_size)]
        reader = self.image_reader(pre)
        pipeline = build_pipeline(augment, pre=[] if reader else pre, seed=self.seed)
        return ImageDataset(paths, targets, pipeline, ids, **({"reader": reader} if reader else {}),
                            target_dtype=self.target_dtype)

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and "val" not in self.datasets:
            table = self.table
            source = self.image_dir if self.is_image_folder else self.csv
            targets = self.encode_targets(table["label"].tolist(), source)
            self._check_images(table["path"].tolist())
            train, val = self.split_rows(table["id"].tolist(), stratify=targets, names=self.class_names)
            pseudo = self._pseudo_labels(table)
            for split, rows, augment in (("train", train, self.train_augment), ("val", val, None)):
                part = table.iloc[rows]
                paths, split_targets, ids = part["path"].tolist(), targets[rows], part["id"].tolist()
                if split == "train" and pseudo is not None:
                    # Only ever training rows: validation (or a fold's held-out rows) stays the labelled data.
                    paths, ids = paths + pseudo.paths, ids + pseudo.ids
                    split_targets = np.concatenate([split_targets, pseudo.targets])
                self.datasets[split] = self._dataset(paths, split_targets, augment, ids)
        if stage == "test" and "test" not in self.datasets:
            if self.test_csv is None:
                raise DataError("`test` needs labels: pass --data.test_csv (same columns as the training CSV, images in predict_dir)")
            table = self._read_labelled(self.test_csv, self.predict_dir)
            targets = self.encode_targets(table["label"].tolist(), self.test_csv)
            self._check_images(table["path"].tolist())
            self.datasets["test"] = self._dataset(table["path"].tolist(), targets, None, table["id"].tolist())
        if stage == "predict" and "predict" not in self.datasets and self.predict_split == "val":
            self.setup("validate")
            self.datasets["predict"] = self.datasets["val"]
        if stage == "predict" and "predict" not in self.datasets:
            paths = list_images(self.predict_dir)
            self._check_images(paths)
            self.datasets["predict"] = self._dataset(paths, None, None)
        if stage == "predict" and sample_for(self) is not None:
            # Before the model runs: every id of the sample must be among the images to predict.
            sample_rows(self.datasets["predict"].ids, read_sample(self.sample_submission), self.sample_submission)

    def _pseudo_labels(self, table: pd.DataFrame) -> PseudoLabels | None:
        """The confident test predictions of --data.pseudo_labels (checked, logged), or None."""
        if self.pseudo_labels is None:
            return None
        pseudo = select_pseudo_labels(self.pseudo_labels, self.class_names, self.pseudo_threshold, self.predict_dir,
                                      table["path"].tolist(), table["id"].tolist())
        self._check_images(pseudo.paths)
        rank_zero_info(pseudo.summary)
        return pseudo
