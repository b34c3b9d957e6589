"""`lightning-cv score SUBMISSION SOLUTION --metric ...`: score a submission the way a competition would."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from lightning_cv.errors import DataError, MissingFileError
from lightning_cv.io.masks import IOU_THRESHOLDS, instance_f2, rle_pixels

Metric = Literal["accuracy", "f1", "fbeta", "auc", "colauc", "logloss", "qwk", "dice", "iou", "dice_pairs", "iou_map",
                 "f2_instances", "rmse", "mae", "map", "map_50", "voc_map", "wheat", "rsna_boxes", "f2_boxes"]
BOX_METRICS = ("map", "map_50", "voc_map", "wheat", "rsna_boxes", "f2_boxes")
BoxStyleOption = Literal["auto", "conf_xywh", "class_conf_xyxy"]


def overlap(predicted: str, truth: str, metric: Literal["dice", "iou"]) -> float:
    """Dice or IoU of two RLE masks; two empty masks score 1 (the Kaggle convention)."""
    a, b = rle_pixels(predicted), rle_pixels(truth)
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return 2 * inter / (a.size + b.size) if metric == "dice" else inter / (a.size + b.size - inter)


def iou_map(predicted: str, truth: str) -> float:
    """TGS Salt, one image: the share of IoU thresholds 0.5 ... 0.95 the predicted mask clears; an empty
    truth scores 1 when predicted empty, 0 otherwise (and an empty prediction of a non-empty truth 0)."""
    a, b = rle_pixels(predicted), rle_pixels(truth)
    if a.size == 0 or b.size == 0:
        return float(a.size == b.size)
    return float((overlap(predicted, truth, "iou") > IOU_THRESHOLDS).mean())


def f2_instances(predicted: list[str], truth: list[str]) -> float:
    """Airbus, one image: F2 of the predicted instances (a row each) matched one to one to the true ones over
    IoU thresholds 0.5 ... 0.95 (`metrics.instance_f2`); no ship in either: 1."""
    pred = [np.unique(rle_pixels(r)) for r in predicted if rle_pixels(r).size]
    true = [np.unique(rle_pixels(r)) for r in truth if rle_pixels(r).size]
    ious = np.array([[np.intersect1d(p, t, assume_unique=True).size / np.union1d(p, t).size for t in true] for p in pred])
    return instance_f2(ious.reshape(len(pred), len(true)))


def score_probabilities(submission: pd.DataFrame, solution: pd.DataFrame, metric: str, id_col: str,
                        target_col: str) -> float:
    """scikit-learn's ROC AUC of a probability column against 0/1 truth (`auc`: SIIM-ISIC), its mean over
    every value column (`colauc`: Plant Pathology, one-hot), log loss (probability columns, or one binary
    column), or quadratic weighted kappa of integer grades (`qwk`: APTOS)."""
    from sklearn.metrics import cohen_kappa_score, log_loss, roc_auc_score

    columns = [c for c in solution.columns if c != id_col] if metric in ("colauc", "logloss") else [target_col]
    missing = [c for c in columns if c not in submission.columns]
    if missing:
        raise DataError(f"submission: missing column(s) {missing}; columns are {list(submission.columns)}")
    sub = submission.drop_duplicates(id_col).set_index(id_col)
    absent = solution[id_col].astype(str)[~solution[id_col].astype(str).isin(sub.index.astype(str))]
    if len(absent):
        raise DataError(f"submission: {len(absent)} id(s) of the solution are missing (e.g. {absent.iloc[0]!r})")
    sub.index = sub.index.astype(str)
    pred = sub.loc[solution[id_col].astype(str), columns].apply(pd.to_numeric, errors="coerce")
    truth = solution[columns].apply(pd.to_numeric, errors="coerce")
    if pred.isna().any().any() or truth.isna().any().any():
        raise DataError(f"{metric} needs numbers in {columns} of the submission and the solution")
    pred_values, truth_values = pred.to_numpy(np.float64), truth.to_numpy(np.float64)
    if metric == "qwk":
        return float(cohen_kappa_score(truth_values[:, 0].round().astype(int), pred_values[:, 0].round().astype(int),
                                       weights="quadratic"))
    if metric == "logloss":
        if len(columns) == 1:
            return float(log_loss(truth_values[:, 0], pred_values[:, 0], labels=[0, 1]))
        return float(log_loss(truth_values.argmax(axis=1), pred_values / pred_values.sum(axis=1, keepdims=True),
                              labels=list(range(len(columns)))))
    return float(np.mean([roc_auc_score(truth_values[:, j], pred_values[:, j]) for j in range(len(columns))]))


def score_instances(submission: pd.DataFrame, solution: pd.DataFrame, id_col: str, target_col: str) -> float:
    """Mean per-image F2 of instance tables (a row per instance, or one empty row per image without)."""
    pred = submission.groupby(id_col)[target_col].apply(list)
    truth = solution.groupby(id_col)[target_col].apply(list)
    absent = truth.index.difference(pred.index)
    if len(absent):
        raise DataError(f"submission: {len(absent)} image(s) of the solution are missing (e.g. {absent[0]!r})")
    return float(np.mean([f2_instances(pred[i], truth[i]) for i in truth.index]))


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


def box_style_of(strings: pd.Series, style: str) -> str:
    """The prediction-string style of a solution's column: the one every non-empty string parses as (`auto`), or
    the one given."""
    from lightning_cv.predictions.box_strings import STYLE_WIDTH

    if style != "auto":
        return style
    filled = [str(t).split() for t in strings if str(t).strip()]
    fits = [s for s, width in STYLE_WIDTH.items() if all(len(t) % width == 0 for t in filled)]
    if len(fits) != 1:
        raise DataError(f"solution: cannot tell the prediction strings' style ({'neither' if not fits else 'both'} of "
                        "conf x y w h and class conf x_min y_min x_max y_max fit): pass --box_style")
    return fits[0]


def score_boxes(submission: pd.DataFrame, solution: pd.DataFrame, metric: str, id_col: str, target_col: str,
                box_style: str = "auto", iou_threshold: float = 0.4) -> float:
    """Box metrics of prediction strings (a row per image) against the solution's: COCO mAP 0.5:0.95 (map) or at
    0.5 (map_50), PASCAL VOC mAP at IoU > `iou_threshold` (voc_map: VinBigData, whose "no finding" token is one
    more class), Global Wheat's per-image score (wheat; from IoU 0.4: rsna_boxes), the Great Barrier Reef's F2 over
    IoU 0.3 ... 0.8 (f2_boxes)."""
    from lightning_cv.models import box_metrics
    from lightning_cv.predictions.box_strings import decode

    style = box_style_of(solution[target_col], box_style)
    sub = submission.drop_duplicates(id_col).set_index(id_col)[target_col]
    truth = solution.set_index(id_col)[target_col]
    absent = truth.index.difference(sub.index)
    if len(absent):
        raise DataError(f"submission: {len(absent)} id(s) of the solution are missing (e.g. {absent[0]!r})")
    pred_strings, true_strings = sub.reindex(truth.index).fillna("").astype(str), truth.fillna("").astype(str)
    names = {t.split()[k] for t in [*pred_strings, *true_strings] for k in range(0, len(t.split()), 6)} if style != "conf_xywh" else set()
    classes = None if all(n.lstrip("-").isdigit() for n in names) else sorted(names)
    preds = [decode(t, style, classes=classes) for t in pred_strings]
    truths = [decode(t, style, classes=classes) for t in true_strings]
    return box_metrics.scored(metric, preds, truths, voc_iou=iou_threshold)[metric]


def _without_extension(key: str) -> str:
    """An id without its image file extension, alone or before a composite key's class (`0011165.jpg_Fish`)."""
    return re.sub(r"\.(jpe?g|png|tiff?|bmp|gif|dcm)(?=_|$)", "", key, flags=re.IGNORECASE)


def keyed_as(submission: pd.DataFrame, solution: pd.DataFrame, id_col: str, target_col: str) -> pd.DataFrame:
    """The submission with the solution's column names and keys where only those differ: a table written
    without the sample, keyed by file stem (`id,rle_mask`; `<stem>_<class>`), scored against one keyed by
    file name (Carvana's `img,rle_mask`; Clouds' `<file>_<class>`)."""
    if list(submission.columns) != [id_col, target_col] and len(submission.columns) == 2 and len(solution.columns) == 2:
        submission = submission.set_axis([id_col, target_col], axis=1)
    if id_col not in submission.columns or id_col not in solution.columns:
        return submission
    ids, truth = submission[id_col].astype(str), set(solution[id_col].astype(str))
    if not len(ids) or ids.isin(truth).any():
        return submission
    by_stem = {_without_extension(t): t for t in truth}
    keys = ids.map(lambda i: by_stem.get(_without_extension(i)))
    return submission.assign(**{id_col: keys.fillna(ids)}) if keys.notna().any() else submission


def score_frames(submission: pd.DataFrame, solution: pd.DataFrame, metric: Metric, beta: float = 2.0,
                 id_col: str | None = None, target_col: str | None = None, box_style: BoxStyleOption = "auto",
                 iou_threshold: float = 0.4) -> float:
    """Join on the id column (default: the solution's first) and score the target column (default: its second)."""
    id_col = id_col or solution.columns[0]
    target_col = target_col or [c for c in solution.columns if c != id_col][0]
    submission = keyed_as(submission, solution, id_col, target_col)
    for name, frame in (("submission", submission), ("solution", solution)):
        missing = [c for c in (id_col, target_col) if c not in frame.columns]
        if missing:
            raise DataError(f"{name}: missing column(s) {missing}; columns are {list(frame.columns)}")
    if metric == "f2_instances":
        return score_instances(submission, solution, id_col, target_col)
    if metric in BOX_METRICS:
        return score_boxes(submission, solution, metric, id_col, target_col, box_style, iou_threshold)
    if metric in ("auc", "colauc", "logloss", "qwk"):
        return score_probabilities(submission, solution, metric, id_col, target_col)
    sub = submission.drop_duplicates(id_col).set_index(id_col)[target_col]
    truth = solution.set_index(id_col)[target_col]
    if metric == "dice_pairs":
        # Image x class pairs: a pair missing on one side is an empty mask there (tables list present classes);
        # but a submission sharing no key with the solution is keyed another way, not empty.
        if len(sub) and len(truth) and not len(sub.index.intersection(truth.index)):
            raise DataError(f"submission: none of its {len(sub)} keys is in the solution (e.g. {sub.index[0]!r} there, "
                            f"{truth.index[0]!r} in the solution): predict with --data.sample_submission to key it so")
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
    if metric == "iou_map":
        return float(np.mean([iou_map(p, t) for p, t in zip(pred, truth)]))
    return float(np.mean([overlap(p, t, metric) for p, t in zip(pred, truth)]))


def score(submission: Path, solution: Path, metric: Metric = "accuracy", beta: float = 2.0,
          id_col: str | None = None, target_col: str | None = None, box_style: BoxStyleOption = "auto",
          iou_threshold: float = 0.4) -> float:
    """Score a submission CSV against a solution CSV (rows joined on the id column).

    Args:
        submission: the submission CSV.
        solution: the answers, same columns (e.g. data/cls/solution.csv, data/seg/solution_masks.csv).
        metric: accuracy, f1 (macro), fbeta (mean per-row F-beta of space-separated tags), dice or iou
            (mean per-image overlap of run-length encoded masks), auc (ROC AUC of a probability column against
            0/1), colauc (mean column-wise AUC: one-hot), logloss, qwk (quadratic weighted kappa of grades), dice_pairs (mean Dice over image x class
            keys, an empty truth predicted empty scoring 1; Severstal, Clouds), iou_map (per image, the share of
            IoU thresholds 0.5 ... 0.95 cleared; TGS Salt), f2_instances (per image, F2 of one-to-one matched
            instances over those thresholds, a row per instance; Airbus), rmse or mae (a numeric column); boxes as
            prediction strings (a row per image): map (COCO 0.5:0.95), map_50, voc_map (PASCAL VOC at
            --iou_threshold: VinBigData), wheat (Global Wheat), rsna_boxes (RSNA Pneumonia: wheat's score from IoU
            0.4), f2_boxes (Great Barrier Reef, IoU 0.3 ... 0.8).
        beta: the beta of fbeta (2 = F2).
        id_col: the id column (default: the solution's first column).
        target_col: the scored column (default: the solution's second column).
        box_style: the prediction strings' style: conf_xywh (conf x y w h ...), class_conf_xyxy (class conf
            x_min y_min x_max y_max ...), or auto (the one the solution's strings parse as).
        iou_threshold: the IoU a box must exceed to match, for voc_map.
    """
    frames = []
    for path in (Path(submission), Path(solution)):
        if not path.is_file():
            raise MissingFileError(f"{path}: file not found")
        frames.append(pd.read_csv(path, dtype=str, keep_default_na=False))
    value = score_frames(frames[0], frames[1], metric, beta, id_col, target_col, box_style, iou_threshold)
    print(f"{metric}: {value:.5f}")
    return value
