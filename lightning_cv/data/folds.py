"""K-fold assignment: stratified (single-label), iterative (multi-label), grouped; persisted as a CSV.

Plain deterministic functions: the same rows, labels and seed always give the same folds. The
assignment is written once to `folds.csv` (the training CSV's columns plus `fold`) and read back on
every later run, so folds never change silently.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

from lightning_cv.errors import DataError, UserInputError
from lightning_cv.io.images import write_csv
from lightning_cv.io.labels import split_tags

FOLD_COL = "fold"


def _check_counts(names: Sequence[str], counts: np.ndarray, n_folds: int, what: str = "class") -> None:
    rare = [(name, int(c)) for name, c in zip(names, counts) if c < n_folds]
    if rare:
        listed = ", ".join(f"{name!r} ({c})" for name, c in rare[:5])
        raise DataError(f"{what} {listed} has fewer rows than the {n_folds} folds: merge rare {what}es, "
                        f"drop them, or use fewer folds")


def iterative_stratification(y: np.ndarray, n_folds: int, seed: int = 42) -> np.ndarray:
    """Fold per row for a (rows, labels) 0/1 matrix (Sechidis et al., 2011): the rarest remaining label's
    rows go one at a time to the fold that most lacks that label (ties: the fold lacking most rows)."""
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    n = len(y)
    want_rows = np.full(n_folds, n / n_folds)
    want_labels = np.tile(y.sum(axis=0) / n_folds, (n_folds, 1)).astype(np.float64)
    folds = np.full(n, -1, dtype=np.int64)
    free = np.ones(n, dtype=bool)

    def place(row: int, label: int | None) -> None:
        best = np.arange(n_folds)
        if label is not None:
            best = np.flatnonzero(want_labels[:, label] == want_labels[:, label].max())
        best = best[want_rows[best] == want_rows[best].max()]
        fold = int(rng.choice(best))
        folds[row] = fold
        free[row] = False
        want_rows[fold] -= 1
        want_labels[fold] -= y[row]

    while free.any():
        counts = y[free].sum(axis=0)
        if not counts.any():  # rows without any label: fill the emptiest folds
            for row in rng.permutation(np.flatnonzero(free)):
                place(int(row), None)
            break
        present = np.flatnonzero(counts)
        rarest = present[counts[present] == counts[present].min()]
        label = int(rng.choice(rarest))
        for row in rng.permutation(np.flatnonzero(free & (y[:, label] > 0))):
            place(int(row), label)
    return folds


def assign_folds(
    labels: Sequence[str] | None,
    n_folds: int,
    seed: int = 42,
    groups: Sequence[str] | None = None,
    multilabel: bool = False,
    n_rows: int | None = None,
) -> np.ndarray:
    """Fold (0..n_folds-1) of every row: stratified by `labels` when given (iterative stratification
    for space-separated multi-label tags), and with every group of `groups` inside one fold; with
    neither, `n_rows` rows are shuffled into folds."""
    if n_folds < 2:
        raise UserInputError(f"--folds must be at least 2, got {n_folds}")
    n = len(labels) if labels is not None else len(groups) if groups is not None else int(n_rows or 0)
    if n < n_folds:
        raise DataError(f"{n} rows cannot be split into {n_folds} folds")
    folds = np.full(n, -1, dtype=np.int64)
    index = np.arange(n)
    if groups is not None:
        groups = np.asarray([str(g) for g in groups])
        if len(np.unique(groups)) < n_folds:
            raise DataError(f"{len(np.unique(groups))} groups cannot be split into {n_folds} folds")
    if labels is not None and multilabel:
        if groups is not None:
            raise UserInputError("grouped folds are for single-label data; multi-label data is stratified without groups")
        matrix, names = split_tags(labels)
        _check_counts(names, matrix.sum(axis=0), n_folds, "label")
        return iterative_stratification(matrix, n_folds, seed)
    if labels is not None:
        labels = np.asarray([str(v) for v in labels])
        names, counts = np.unique(labels, return_counts=True)
        _check_counts(names.tolist(), counts, n_folds)
        if groups is not None:
            splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(index, labels, groups)
        else:
            splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(index, labels)
    elif groups is not None:
        splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(index, np.zeros(n), groups)
    else:
        splitter = KFold(n_folds, shuffle=True, random_state=seed).split(index)
    for fold, (_, val) in enumerate(splitter):
        folds[val] = fold
    return folds


def read_folds(path: str | Path, key: str) -> pd.DataFrame:
    """A folds CSV, checked: it has `key` and `fold` columns, unique keys, integer folds."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: folds CSV not found (`lightning-cv cv` writes one; see --data.folds_csv)")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in (key, FOLD_COL) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)}")
    duplicated = frame[key][frame[key].duplicated()]
    if len(duplicated):
        raise DataError(f"{path}: row {duplicated.index[0] + 2}: duplicate {key} {duplicated.iloc[0]!r}")
    bad = frame[~frame[FOLD_COL].str.fullmatch(r"\d+")]
    if len(bad):
        raise DataError(f"{path}: row {bad.index[0] + 2}: fold {bad[FOLD_COL].iloc[0]!r} is not a fold number")
    return frame.assign(**{FOLD_COL: frame[FOLD_COL].astype(int)})


def load_or_create_folds(
    path: str | Path,
    frame: pd.DataFrame,
    key: str,
    n_folds: int,
    seed: int = 42,
    label_col: str | None = None,
    group_col: str | None = None,
    multilabel: bool = False,
) -> pd.DataFrame:
    """`frame` plus a `fold` column, written to `path` the first time and read back afterwards.

    An existing file must hold exactly the same keys and `n_folds` folds; otherwise it is an error
    (delete it, or point elsewhere, to re-split on purpose).
    """
    path = Path(path)
    for column in (key, label_col, group_col):
        if column is not None and column not in frame.columns:
            raise DataError(f"no column {column!r} in the training data; columns are {list(frame.columns)}")
    # Fold processes started together (a SLURM array) take turns: the first writes, the others read it.
    with exclusive(path.with_name(path.name + ".lock")):
        if path.is_file():
            return _stored_folds(path, frame, key, n_folds)
        labels = frame[label_col].tolist() if label_col else None
        groups = frame[group_col].tolist() if group_col else None
        result = frame.copy()
        result[FOLD_COL] = assign_folds(labels, n_folds, seed, groups, multilabel, n_rows=len(frame))
        write_csv(result, path)
        return result


def _stored_folds(path: Path, frame: pd.DataFrame, key: str, n_folds: int) -> pd.DataFrame:
    folds = read_folds(path, key)
    stored, current = set(folds[key]), set(frame[key].astype(str))
    if stored != current:
        extra, gone = sorted(current - stored), sorted(stored - current)
        detail = f"{len(extra)} new row(s) (e.g. {extra[0]!r})" if extra else f"{len(gone)} row(s) gone (e.g. {gone[0]!r})"
        raise DataError(f"{path}: folds were made for other training rows: {detail}; delete it to re-split")
    stored_folds = int(folds[FOLD_COL].max()) + 1
    if stored_folds != n_folds:
        raise DataError(f"{path}: holds {stored_folds} folds, not {n_folds}; delete it to re-split or use --folds {stored_folds}")
    return folds


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """An exclusive lock on `lock` (a file beside what it guards) across processes, where the OS has flock."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one process at a time is up to the user
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fold_split(ids: Sequence[str], folds: pd.DataFrame, key: str, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation row indices of `ids`: validation = the rows in `fold`, train = the rest."""
    n_folds = int(folds[FOLD_COL].max()) + 1
    if not 0 <= fold < n_folds:
        raise UserInputError(f"--data.fold {fold} is not a fold of the folds CSV (0..{n_folds - 1})")
    by_id = dict(zip(folds[key].astype(str), folds[FOLD_COL]))
    missing = [i for i in ids if str(i) not in by_id]
    if missing:
        raise DataError(f"{len(missing)} training row(s) have no fold in the folds CSV (e.g. {missing[0]!r}); "
                        "it was made for other data: delete it to re-split")
    assigned = np.array([by_id[str(i)] for i in ids])
    train, val = np.flatnonzero(assigned != fold), np.flatnonzero(assigned == fold)
    for split, rows in (("validation", val), ("training", train)):
        if not len(rows):
            raise DataError(f"--data.fold {fold}: no {split} rows in the folds CSV for this data "
                            f"(folds present: {sorted(set(assigned.tolist()))}); delete it to re-split")
    return train, val
