"""Label tables and encodings: reading a labelled CSV, class order, class indices and tag matrices."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lightning_cv.errors import DataError


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """Read a CSV and check it has `columns`, naming the file and what it does have."""
    if not path.is_file():
        raise DataError(f"{path}: CSV not found")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)} (see --data.*_col)")
    return frame


def labels_from_columns(frame: pd.DataFrame, columns: list[str], source: Path, single: bool) -> list[str]:
    """One-hot (or multi-hot) label columns (Plant Pathology: healthy,multiple_diseases,rust,scab) -> each
    row's label, or its space-separated tags when several may be 1; a row that breaks that is an error."""
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1) | ~values.isin([0, 1]).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{source}: row {row + 2}: label columns {columns} must hold 0 or 1")
    hot = values.to_numpy() > 0
    counts = hot.sum(axis=1)
    wrong = np.flatnonzero(counts != 1) if single else np.flatnonzero(counts == 0)
    if len(wrong):
        row = int(wrong[0])
        hint = ("several 1s: a multi-label table (configs/multilabel.yaml takes --data.label_cols too)" if single and counts[row]
                else "no 1: every row needs a label")
        raise DataError(f"{source}: row {row + 2}: {int(counts[row])} of the label columns {columns} are 1 ({hint})")
    return [" ".join(c for c, on in zip(columns, row) if on) for row in hot]


def integer_names(names: list[str] | set[str]) -> bool:
    """Every name is an integer ("0", "12", "-1"): numeric order, and grades where there are more than two."""
    return all(str(name).lstrip("-").isdigit() for name in names)


def sorted_labels(labels: list[str]) -> list[str]:
    """Class order: numeric when every label is an integer (so "10" follows "9"), else alphabetical."""
    unique = set(labels)
    if integer_names(unique):
        return sorted(unique, key=int)
    return sorted(unique)


def encode_labels(labels: list[str], classes: list[str], source: Path, first_row: int = 2) -> np.ndarray:
    """Map label names to indices, naming the first row with a label outside `classes`."""
    index = {name: i for i, name in enumerate(classes)}
    for row, label in enumerate(labels, start=first_row):
        if label not in index:
            raise DataError(f"{source}: row {row}: unknown label {label!r}; known classes are {classes}")
    return np.array([index[label] for label in labels], dtype=np.int64)


def split_tags(labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Space-separated tags (Planet style) -> a (rows, tags) 0/1 matrix and the sorted tag names."""
    rows = [str(label).split() for label in labels]
    names = sorted({tag for row in rows for tag in row})
    index = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(rows), len(names)), dtype=np.int64)
    for r, tags in enumerate(rows):
        matrix[r, [index[t] for t in tags]] = 1
    return matrix, names


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
