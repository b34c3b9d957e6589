"""Saved predictions: one model's (or one ensemble's) arrays per image, kept as `predictions.npz`.

A task says which arrays it predicts (`CVTask.outputs`: probabilities, boxes, values ...); every array
has one row per id. `meta` holds the decisions that turn them into a submission (thresholds, the RLE
pixel order, the letterbox size), so an ensemble or a later submission decides as `predict` did.

Arrays of images (probability maps: `stores.is_map`) are stored uncompressed in the `.npz` and read
back row by row (`stores.DiskRows`), so a test set of any size is written and read one chunk at a time;
the small per-image arrays (class probabilities, boxes, sizes) are compressed and read whole.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lightning_cv.errors import DataError, MissingFileError
from lightning_cv.io.images import atomic_path
from lightning_cv.predictions.stores import DiskRows, array_chunks, is_map, npy_header, take_rows

PREDICTIONS = "predictions.npz"
_RESERVED = ("ids", "class_names", "task", "meta")


@dataclass
class Predictions:
    """`arrays` by name (first axis: one row per id); `targets` when the rows are labelled (out of fold)."""

    task: str
    ids: np.ndarray
    arrays: dict[str, np.ndarray]
    class_names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    targets: np.ndarray | None = None
    source: Path | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> Predictions:
        """The predictions of some rows, in that order."""
        return replace(self, ids=self.ids[rows], arrays={k: take_rows(v, rows) for k, v in self.arrays.items()},
                       targets=None if self.targets is None else take_rows(self.targets, rows))

    def with_meta(self, **meta: Any) -> Predictions:
        """A copy whose decisions are updated with the given ones (None values are ignored)."""
        return replace(self, meta={**self.meta, **{k: v for k, v in meta.items() if v is not None}})

    def save(self, path: str | Path) -> Path:
        """Write the npz atomically (floating arrays as they are: float16 stays float16): predicted maps
        stored uncompressed, a chunk of rows at a time; the rest (targets too) compressed."""
        path = Path(path)
        extra = {} if self.targets is None else {"targets": self.targets}
        members = {"ids": np.asarray(self.ids, dtype=str), "task": np.array(self.task),
                   "class_names": np.array(self.class_names, dtype=str), "meta": np.array(json.dumps(self.meta)),
                   **self.arrays, **extra}
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
            for name, array in members.items():
                if is_map(array) and name in self.arrays:  # targets (true masks) compress well: read whole
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        member.write(npy_header(array.dtype, array.shape))
                        for chunk in array_chunks(array):
                            member.write(np.ascontiguousarray(chunk).tobytes())
                else:
                    buffer = io.BytesIO()
                    np.save(buffer, np.asarray(array), allow_pickle=False)
                    archive.writestr(zipfile.ZipInfo(f"{name}.npy", (1980, 1, 1, 0, 0, 0)), buffer.getvalue(),
                                     compress_type=zipfile.ZIP_DEFLATED)
        return path


def load_predictions(path: str | Path) -> Predictions:
    """A `predictions.npz` (predict, cv's fold predictions, oof.npz, an ensemble's .npz), or a
    `predictions.csv` with prob_<class> columns (its `tags` column marks multi-label predictions)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: predictions not found")
    if path.suffix != ".npz":
        return _load_csv(path)
    with np.load(path, allow_pickle=False) as saved:
        files = set(saved.files)
        if "ids" not in files:
            raise DataError(f"{path}: not a predictions file (no ids)")
        stored = {info.filename[:-4] for info in saved.zip.infolist() if info.compress_type == zipfile.ZIP_STORED}

        def member(name: str) -> Any:  # maps stored uncompressed (as `save` writes them) stay on disk
            try:
                rows = DiskRows.open(path, f"{name}.npy") if name in stored else None
            except ValueError:  # e.g. Fortran order, from another writer
                rows = None
            return rows if rows is not None and rows.ndim >= 3 else saved[name]

        arrays = {k: member(k) for k in files - {*_RESERVED, "targets"}}
        meta = json.loads(str(saved["meta"])) if "meta" in files else {}
        return Predictions(str(saved["task"]) if "task" in files else "cls", saved["ids"].astype(str), arrays,
                           saved["class_names"].astype(str).tolist() if "class_names" in files else [],
                           meta, saved["targets"] if "targets" in files else None, path)


def _load_csv(path: Path) -> Predictions:
    frame = pd.read_csv(path, dtype={0: str}, keep_default_na=False)
    prob_cols = [c for c in frame.columns if c.startswith("prob_")]
    if not prob_cols:
        raise DataError(f"{path}: no prob_<class> columns; ensembles need probabilities (predictions.csv or .npz)")
    task = "multilabel" if "tags" in frame.columns else "cls"
    return Predictions(task, frame.iloc[:, 0].astype(str).to_numpy(), {"probs": frame[prob_cols].to_numpy(np.float32)},
                       [c[len("prob_"):] for c in prob_cols], source=path)


def find_predictions(path: str | Path, split: Literal["test", "oof"] = "test") -> list[Path]:
    """Prediction files under a path: a file itself; a CV run (every fold's test predictions, or its
    oof.npz); a fold or run dir (test/, its newest predict-*/); a predict dir."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MissingFileError(f"{path}: no such file or directory")
    if (path / "folds.csv").is_file():
        if split == "oof":
            return [path / "oof.npz"] if (path / "oof.npz").is_file() else []
        return [p for fold in sorted(path.glob("fold[0-9]*")) if "-replaced-" not in fold.name
                for p in find_predictions(fold, split)[:1]]
    for candidate in (path / "test" / PREDICTIONS, path / PREDICTIONS, path / "test" / "predictions.csv",
                      path / "predictions.csv"):
        if candidate.is_file():
            return [candidate]
    runs = sorted(path.glob("predict-*"), key=lambda p: p.stat().st_mtime)
    return find_predictions(runs[-1], split) if runs else []


def align(predictions: list[Predictions]) -> list[Predictions]:
    """Reorder every prediction set to the first one's ids; all must be of one task, cover the same ids
    and have the same classes."""
    first = predictions[0]
    order = {i: r for r, i in enumerate(first.ids)}
    aligned = [first]
    for p in predictions[1:]:
        if p.task != first.task:
            raise DataError(f"{p.source}: {p.task} predictions cannot be combined with {first.source}'s {first.task} ones")
        if p.class_names != first.class_names:
            raise DataError(f"{p.source}: classes {p.class_names} differ from {first.source}'s {first.class_names}")
        if set(p.ids) != set(order) or len(p.ids) != len(order):
            raise DataError(f"{p.source}: its {len(p.ids)} ids are not the {len(order)} of {first.source}")
        aligned.append(p.take(np.argsort([order[i] for i in p.ids])))
    return aligned
