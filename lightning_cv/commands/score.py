"""`lightning-cv score SUBMISSION SOLUTION --metric ...`: score a submission the way a competition would."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from lightning_cv.errors import DataError, MissingFileError
from lightning_cv.masks import rle_pixels

Metric = Literal["accuracy", "f1", "fbeta", "dice", "iou", "dice_pairs", "rmse", "mae"]


def overlap(predicted: str, truth: str, metric: Literal["dice", "iou"]) -> float:
    """Dice or IoU of two RLE masks; two empty masks score 1 (the Kaggle convention)."""
    a, b = rle_pixels(predicted), rle_pixels(truth)
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return 2 * inter / (a.size + b.size) if metric == "dice" else inter / (a.size + b.size - inter)


def fbeta_tags(predicted: str, truth: str, beta: float) -> float:
    """F-beta of one row's space-separated tag sets (Planet's sample-averaged F2 with beta=2)."""
    p, t = set(str(predicted).split()), set(str(truth).split())
    if not p and not t:
        return 1.0
    tp = len(p & t)
    if tp == 0:
        return 0.0
    precision, recall = tp / len(p), tp / len(t)
    return (1 + beta**2) * precision * recall / (beta**2 * precision + recall)


def numeric_error(pred: pd.Series, truth: pd.Series, metric: Literal["rmse", "mae"]) -> float:
    """Root mean squared or mean absolute error of a numeric column; a non-number is an error naming its id."""
    values = pd.to_numeric(pred, errors="coerce")
    bad = values[values.isna()]
    if len(bad):
        raise DataError(f"submission: {bad.index[0]!r} has no number ({pred[bad.index[0]]!r}) in the scored column")
    error = values.to_numpy(np.float64) - pd.to_numeric(truth, errors="raise").to_numpy(np.float64)
    return float(np.sqrt(np.mean(error**2))) if metric == "rmse" else float(np.mean(np.abs(error)))


def score_frames(submission: pd.DataFrame, solution: pd.DataFrame, metric: Metric, beta: float = 2.0,
                 id_col: str | None = None, target_col: str | None = None) -> float:
    """Join on the id column (default: the solution's first) and score the target column (default: its second)."""
    id_col = id_col or solution.columns[0]
    target_col = target_col or [c for c in solution.columns if c != id_col][0]
    for name, frame in (("submission", submission), ("solution", solution)):
        missing = [c for c in (id_col, target_col) if c not in frame.columns]
        if missing:
            raise DataError(f"{name}: missing column(s) {missing}; columns are {list(frame.columns)}")
    sub = submission.drop_duplicates(id_col).set_index(id_col)[target_col]
    truth = solution.set_index(id_col)[target_col]
    if metric == "dice_pairs":
        # Image x class pairs: a pair missing on one side is an empty mask there (tables list present classes).
        pairs = truth.index.union(sub.index)
        sub, truth = sub.reindex(pairs).fillna(""), truth.reindex(pairs).fillna("")
        metric = "dice"
    absent = truth.index.difference(sub.index)
    if len(absent):
        raise DataError(f"submission: {len(absent)} id(s) of the solution are missing (e.g. {absent[0]!r})")
    pred = sub.reindex(truth.index).fillna("").astype(str)
    truth = truth.fillna("").astype(str)
    if metric in ("rmse", "mae"):
        return numeric_error(pred, truth, metric)
    if metric == "accuracy":
        return float((pred.str.strip() == truth.str.strip()).mean())
    if metric == "f1":
        from sklearn.metrics import f1_score

        return float(f1_score(truth, pred, average="macro", labels=sorted(set(truth)), zero_division=0))
    if metric == "fbeta":
        return float(np.mean([fbeta_tags(p, t, beta) for p, t in zip(pred, truth)]))
    return float(np.mean([overlap(p, t, metric) for p, t in zip(pred, truth)]))


def score(submission: Path, solution: Path, metric: Metric = "accuracy", beta: float = 2.0,
          id_col: str | None = None, target_col: str | None = None) -> float:
    """Score a submission CSV against a solution CSV (rows joined on the id column).

    Args:
        submission: the submission CSV.
        solution: the answers, same columns (e.g. data/cls/solution.csv, data/seg/solution_masks.csv).
        metric: accuracy, f1 (macro), fbeta (mean per-row F-beta of space-separated tags), dice or iou
            (mean per-image overlap of run-length encoded masks), dice_pairs (mean Dice over image x class
            keys, an empty truth predicted empty scoring 1; Severstal, Clouds), rmse or mae (a numeric column).
        beta: the beta of fbeta (2 = F2).
        id_col: the id column (default: the solution's first column).
        target_col: the scored column (default: the solution's second column).
    """
    frames = []
    for path in (Path(submission), Path(solution)):
        if not path.is_file():
            raise MissingFileError(f"{path}: file not found")
        frames.append(pd.read_csv(path, dtype=str, keep_default_na=False))
    value = score_frames(frames[0], frames[1], metric, beta, id_col, target_col)
    print(f"{metric}: {value:.5f}")
    return value
