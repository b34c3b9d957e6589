"""Detection metrics of a split, from one prediction and one truth per image ({"boxes" x_min, y_min, x_max, y_max,
"labels", "scores"}, numpy or torch): COCO mAP (torchmetrics), PASCAL VOC mAP (VinBigData), Global Wheat's
TP / (TP + FP + FN) per image (and RSNA Pneumonia's, from IoU 0.4) and the Great Barrier Reef's F2; `scored` names
each as `--model.metric` and `score --metric` do.

Global Wheat and the Great Barrier Reef match as their evaluation pages say: predictions in descending score, each
to the unmatched truth of the same class with the highest IoU >= the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou

from lightning_cv.errors import UserInputError
from lightning_cv.io.box_tables import box_arrays

Boxes = dict[str, Any]
WHEAT_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
RSNA_THRESHOLDS = (0.4, 0.45, *WHEAT_THRESHOLDS)  # RSNA Pneumonia: the same per-image score from IoU 0.4
REEF_THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
METRICS: tuple[str, ...] = ("map", "map_50", "voc_map", "wheat", "rsna_boxes", "f2_boxes")
THRESHOLDED = ("wheat", "rsna_boxes", "f2_boxes")  # the metrics of the boxes a submission keeps, not of a ranking


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (N, 4) with every box of `b` (M, 4), xyxy: (N, M) float64."""
    return box_iou(torch.from_numpy(a.astype(np.float64)), torch.from_numpy(b.astype(np.float64))).numpy()


def coco_map(preds: Sequence[Boxes], truths: Sequence[Boxes]) -> dict[str, float]:
    """COCO mAP over IoU 0.50:0.95 (map), at 0.50 (map_50) and at 0.75 (map_75), through torchmetrics'
    MeanAveragePrecision (pycocotools backend); -1 where there is no truth to score."""
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
    def tensors(boxes: Boxes, scored: bool) -> dict[str, torch.Tensor]:
        b = box_arrays(boxes)
        keys = ("boxes", "labels", "scores") if scored else ("boxes", "labels")
        return {k: torch.from_numpy(b[k]) for k in keys}

    metric.update([tensors(p, True) for p in preds], [tensors(t, False) for t in truths])
    out = metric.compute()
    return {key: float(out[key]) for key in ("map", "map_50", "map_75")}


def match_counts(pred: Boxes, truth: Boxes, thresholds: Sequence[float]) -> np.ndarray:
    """(thresholds, 3) TP, FP, FN of one image: predictions in descending score, each matched to the unmatched
    truth of its class with the highest IoU >= the threshold."""
    p, t = box_arrays(pred), box_arrays(truth)
    order = np.argsort(-p["scores"], kind="stable")
    ious = iou_matrix(p["boxes"][order], t["boxes"])
    ious[p["labels"][order][:, None] != t["labels"][None, :]] = -1.0
    counts = np.zeros((len(thresholds), 3), np.int64)
    for k, threshold in enumerate(thresholds):
        free = np.ones(len(t["boxes"]), bool)
        tp = 0
        for row in ious:
            candidates = np.where(free & (row >= threshold), row, -1.0)
            if len(candidates) and candidates.max() >= threshold:
                free[int(candidates.argmax())] = False
                tp += 1
        counts[k] = tp, len(ious) - tp, len(t["boxes"]) - tp
    return counts


def wheat_score(preds: Sequence[Boxes], truths: Sequence[Boxes], thresholds: Sequence[float] = WHEAT_THRESHOLDS,
                empty_score: float | None = None) -> float:
    """Global Wheat: per image, the mean over IoU thresholds of TP / (TP + FP + FN); the mean over images.

    An image without truth scores 0 when anything is predicted. An image with neither truth nor prediction
    (0 / 0) is left out of the mean (`empty_score` None) or scores `empty_score`: Kaggle's metric of this family
    (RSNA Pneumonia, Lyft; Global Wheat's page says only "the mean ... of each image") notes that with no truth
    "ANY number of predictions ... will result in the image receiving a score of zero, and being included in the
    mean", i.e. an image is included when something is predicted. 1.0 when no image is scored at all.
    """
    scores = wheat_per_image(preds, truths, thresholds)
    if empty_score is not None:
        scores = np.nan_to_num(scores, nan=float(empty_score))
    scores = scores[~np.isnan(scores)]
    return float(np.mean(scores)) if len(scores) else 1.0


def wheat_per_image(preds: Sequence[Boxes], truths: Sequence[Boxes],
                    thresholds: Sequence[float] = WHEAT_THRESHOLDS) -> np.ndarray:
    """Each image's Global Wheat score: the mean over IoU thresholds of TP / (TP + FP + FN); NaN for an image with
    neither truth nor prediction (0 / 0)."""
    scores = np.full(len(preds), np.nan)
    for i, (pred, truth) in enumerate(zip(preds, truths, strict=True)):
        counts = match_counts(pred, truth, thresholds)
        total = counts.sum(1)
        if total.any():
            scores[i] = np.mean(counts[:, 0] / total)
    return scores


def f2_score(preds: Sequence[Boxes], truths: Sequence[Boxes], thresholds: Sequence[float] = REEF_THRESHOLDS) -> float:
    """Great Barrier Reef: TP, FP and FN summed over all images at each IoU threshold (0.3 ... 0.8), F2 =
    5 TP / (5 TP + 4 FN + FP) at each, the mean over thresholds; 1.0 when there is neither truth nor prediction."""
    counts = sum((match_counts(p, t, thresholds) for p, t in zip(preds, truths, strict=True)),
                 np.zeros((len(thresholds), 3), np.int64))
    tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
    denominator = 5 * tp + 4 * fn + fp
    return float(np.mean(np.where(denominator > 0, 5 * tp / np.maximum(denominator, 1), 1.0)))


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """PASCAL VOC (2010 on) all-point interpolated AP: the area under the precision envelope (precision made
    non-increasing from the right), summed where recall changes."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def class_ap(preds: list[dict[str, np.ndarray]], truths: list[dict[str, np.ndarray]], label: int,
             iou_threshold: float) -> float:
    """VOC AP of one class: its predictions over all images in descending score; each is a TP when its best-IoU
    truth of the class in its image clears IoU > threshold and was not found before, else an FP."""
    gts = [t["boxes"][t["labels"] == label] for t in truths]
    found = [np.zeros(len(g), bool) for g in gts]
    image, scores, boxes = [], [], []
    for i, p in enumerate(preds):
        mine = p["labels"] == label
        image += [i] * int(mine.sum())
        scores.append(p["scores"][mine])
        boxes.append(p["boxes"][mine])
    order = np.argsort(-np.concatenate(scores), kind="stable")
    image_of, all_boxes = np.asarray(image, np.int64)[order], np.concatenate(boxes).reshape(-1, 4)[order]
    tp = np.zeros(len(order))
    for k, (i, box) in enumerate(zip(image_of, all_boxes)):
        if len(gts[i]):
            ious = iou_matrix(box[None], gts[i])[0]
            j = int(ious.argmax())
            if ious[j] > iou_threshold and not found[i][j]:
                found[i][j] = True
                tp[k] = 1
    hits = np.cumsum(tp)
    recall = hits / sum(len(g) for g in gts)
    precision = hits / np.arange(1, len(tp) + 1)
    return average_precision(recall, precision)


def voc_map(preds: Sequence[Boxes], truths: Sequence[Boxes], iou_threshold: float = 0.4) -> float:
    """PASCAL VOC mAP: all-point interpolated AP per class, the mean over the classes present in the truths
    (VinBigData: IoU > 0.4; it scores "No finding" as one more class, a (0, 0, 1, 1) box with confidence 1, so
    add that box to truths and predictions to reproduce its leaderboard). NaN when no truth has a box."""
    p = [box_arrays(x) for x in preds]
    t = [box_arrays(x) for x in truths]
    if len(p) != len(t):
        raise ValueError(f"{len(p)} predictions for {len(t)} truths")
    labels = np.unique(np.concatenate([x["labels"] for x in t])) if t else np.zeros(0, np.int64)
    if not len(labels):
        return float("nan")
    return float(np.mean([class_ap(p, t, int(c), iou_threshold) for c in labels]))


def scored(metric: str, preds: list[dict], truths: list[dict], voc_iou: float = 0.4) -> dict[str, float]:
    """The box metrics named in `metric` ("map" also gives map_50 and map_75) on per-image dicts."""
    if metric in ("map", "map_50"):
        return coco_map(preds, truths)
    if metric == "voc_map":
        return {"voc_map": voc_map(preds, truths, iou_threshold=voc_iou)}
    if metric == "wheat":
        return {"wheat": wheat_score(preds, truths)}
    if metric == "rsna_boxes":
        return {"rsna_boxes": wheat_score(preds, truths, RSNA_THRESHOLDS)}
    if metric == "f2_boxes":
        return {"f2_boxes": f2_score(preds, truths)}
    raise UserInputError(f"box metric {metric!r}: choose {', '.join(METRICS)}")
