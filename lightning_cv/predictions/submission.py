"""Submissions in the competition's shape: a sample submission's ids, their order and its columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_cv.errors import DataError, MissingFileError

SUBMISSION = "submission.csv"


def read_sample(path: str | Path) -> pd.DataFrame:
    """A sample submission, checked: an id column first, at least one value column, unique ids."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: sample submission not found (--data.sample_submission is relative to data_dir, or absolute)")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if frame.shape[1] < 2:
        raise DataError(f"{path}: a sample submission needs an id column and a value column; columns are {list(frame.columns)}")
    if frame.empty:
        raise DataError(f"{path}: no rows")
    ids = frame.iloc[:, 0]
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise DataError(f"{path}: row {duplicated.index[0] + 2}: duplicate id {duplicated.iloc[0]!r}")
    return frame


def sample_for(datamodule: Any) -> Path | None:
    """The sample submission a `predict` run follows: the DataModule's, when it predicts the test
    images (not a fold's held-out rows)."""
    path = getattr(datamodule, "sample_submission", None)
    if path is None or getattr(datamodule, "predict_split", "test") != "test":
        return None
    return Path(path)


def sample_rows(ids: Any, sample: pd.DataFrame, source: str | Path = "sample submission") -> list[int]:
    """For each id of the sample, the row of its prediction in `ids`: the same id, else the same file
    stem (Carvana's `img` holds `<id>.jpg`, predictions of masks are keyed by stem)."""
    lookup = {str(i): r for r, i in enumerate(ids)}
    stems = {Path(str(i)).stem: r for r, i in enumerate(ids)}
    id_col = sample.columns[0]
    rows = [lookup.get(str(i), stems.get(Path(str(i)).stem)) for i in sample[id_col]]
    missing = [(r, i) for r, (i, row) in enumerate(zip(sample[id_col], rows), start=2) if row is None]
    if missing:
        (row, first), n = missing[0], len(missing)
        raise DataError(f"{source}: row {row}: {id_col} {first!r} has no prediction "
                        f"({n} of {len(sample)} sample ids have none; predicted were {len(lookup)} images)")
    return rows  # type: ignore[return-value]


def follow_sample(ids: Any, values: dict[str, Any], sample: pd.DataFrame, source: str | Path = "sample submission") -> pd.DataFrame:
    """The sample's ids in its order and its columns; a column named in `values` gets those values,
    any other column the first entry of `values` (the label, or the RLE)."""
    rows = sample_rows(ids, sample, source)
    id_col = sample.columns[0]
    out = pd.DataFrame({id_col: sample[id_col].to_numpy()})
    default = next(iter(values))
    for column in sample.columns[1:]:
        out[column] = np.asarray(values.get(column, values[default]))[rows]
    return out
