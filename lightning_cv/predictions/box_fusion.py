"""Box fusion: one image's boxes from several models (or TTA views, or readers) made one set.

Weighted boxes fusion, NMS, soft-NMS and non-maximum weighted come from the `ensemble-boxes` package (ZFTurbo's,
as the Kaggle kernels use it); per-class NMS of one prediction from torchvision. Predictions are dicts
{"boxes": (N, 4) x_min, y_min, x_max, y_max in original pixels, "labels": (N,), "scores": (N,)}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from ensemble_boxes import non_maximum_weighted, soft_nms, weighted_boxes_fusion
from torchvision.ops import batched_nms

from lightning_cv.io.box_tables import BOX_COLUMNS, box_arrays, empty_boxes

FusionMethod = Literal["wbf", "nms", "soft_nms", "nmw"]
Pred = dict[str, Any]  # one image's {"boxes", "labels", "scores"}, numpy or torch
# ensemble-boxes' default floor of soft-NMS: a decayed score below it drops the box (the kept boxes keep their
# original scores).
SOFT_NMS_FLOOR = 0.001


def take(pred: Pred, index: np.ndarray) -> Pred:
    """The boxes of `pred` at `index`, as numpy or torch like `pred`."""
    out = {}
    for key, value in pred.items():
        if isinstance(value, torch.Tensor):
            out[key] = value[torch.as_tensor(index, dtype=torch.long, device=value.device)]
        else:
            out[key] = np.asarray(value)[index]
    return out


def keep_above(pred: Pred, score: float) -> Pred:
    """The boxes whose score is at least `score` (the usual last step before a submission)."""
    scores = box_arrays(pred)["scores"]
    return take(pred, np.flatnonzero(scores >= score))


def nms(pred: Pred, iou_thr: float) -> Pred:
    """Per-class non-maximum suppression (torchvision's batched_nms), highest score first."""
    p = box_arrays(pred)
    keep = batched_nms(torch.from_numpy(p["boxes"]), torch.from_numpy(p["scores"]), torch.from_numpy(p["labels"]), iou_thr)
    return take(pred, keep.numpy())


def pooled_nms(boxes: list[np.ndarray], scores: list[np.ndarray], labels: list[np.ndarray], iou_thr: float,
               weights: list[float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ensemble-boxes' `nms` (members pooled, scores times weight / sum of weights, per-class NMS) through
    torchvision, which needs no JIT compilation on the first call."""
    if weights is not None:
        scores = [s * w / sum(weights) for s, w in zip(scores, weights)]
    b, s, lab = np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels)
    keep = batched_nms(torch.from_numpy(b), torch.from_numpy(s), torch.from_numpy(lab), iou_thr).numpy()
    return b[keep], s[keep], lab[keep]


def fuse_boxes(members: Sequence[Pred], size: tuple[int, int], method: FusionMethod = "wbf", iou_thr: float = 0.55,
               skip_box_thr: float = 0.0, weights: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """One image's predictions from several members fused into one, highest score first.

    Boxes are divided by `size` (height, width) and clipped to [0, 1] as ensemble-boxes expects, then scaled back;
    boxes of zero area after clipping are dropped (ensemble-boxes would drop them with a warning). WBF's fused box
    is the score-weighted mean of its cluster, its score the mean score times min(members, boxes) / members.
    `skip_box_thr` drops boxes scored below it (soft_nms: whose decayed score falls below it, at least 0.001).
    """
    if method not in ("wbf", "nms", "soft_nms", "nmw"):
        raise ValueError(f"unknown fusion method {method!r}; choose wbf, nms, soft_nms or nmw")
    if weights is not None and len(weights) != len(members):
        raise ValueError(f"{len(weights)} weights for {len(members)} members")
    height, width = size
    scale = np.array([width, height, width, height], np.float64)
    boxes, scores, labels = [], [], []
    for member in members:
        p = box_arrays(member)
        b = np.clip(p["boxes"].astype(np.float64) / scale, 0.0, 1.0)
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        if method == "nms":
            keep &= p["scores"] >= skip_box_thr
        boxes.append(b[keep])
        scores.append(p["scores"][keep].astype(np.float64))
        labels.append(p["labels"][keep])
    if sum(len(s) for s in scores) == 0:
        return empty_boxes(scores=True)
    w = None if weights is None else list(weights)
    if method == "wbf":
        fused = weighted_boxes_fusion(boxes, scores, labels, weights=w, iou_thr=iou_thr, skip_box_thr=skip_box_thr)
    elif method == "nmw":
        fused = non_maximum_weighted(boxes, scores, labels, weights=w, iou_thr=iou_thr, skip_box_thr=skip_box_thr)
    elif method == "nms":
        fused = pooled_nms(boxes, scores, labels, iou_thr, w)
    else:
        fused = soft_nms(boxes, scores, labels, iou_thr=iou_thr, thresh=max(skip_box_thr, SOFT_NMS_FLOOR), weights=w)
    out_boxes, out_scores, out_labels = (np.asarray(a) for a in fused)
    order = np.argsort(-out_scores, kind="stable")
    return {"boxes": (out_boxes.reshape(-1, 4)[order] * scale).astype(np.float32),
            "labels": out_labels[order].astype(np.int64), "scores": out_scores[order].astype(np.float32)}


def fuse_readers(frame: pd.DataFrame, sizes: dict[str, tuple[int, int] | None] | None = None,
                 iou_thr: float = 0.5) -> pd.DataFrame:
    """Several readers' boxes of one object fused into one (VinBigData's three radiologists), per image and class.

    `frame` is a `BoxTable.frame`; each reader of an image is one member of weighted boxes fusion, so a fused
    box's `score` is the share of the image's readers that drew it (a reader's rows without a box count).
    An image missing from `sizes` ({image_id: (height, width)}) takes its boxes' extent (IoU does not depend on
    it; a real size also clips boxes to the image). An image whose rows are all without a box keeps one row
    (label -1, score NaN); the `reader` column goes.
    """
    ids = frame["image_id"].astype(str).to_numpy()
    xyxy = frame[BOX_COLUMNS].to_numpy(np.float64)
    labels = frame["label"].to_numpy(np.int64)
    readers = frame["reader"].astype(str).to_numpy() if "reader" in frame.columns else np.full(len(frame), "")
    out_ids, out_boxes, out_labels, out_scores = [], [], [], []
    for image_id, rows in pd.Series(ids).groupby(ids, sort=False).indices.items():
        boxed = rows[labels[rows] >= 0]
        if not len(boxed):
            fused = {"boxes": np.full((1, 4), np.nan), "labels": np.array([-1]), "scores": np.array([np.nan])}
        else:
            size = (sizes or {}).get(image_id) or (xyxy[boxed, 3].max() or 1.0, xyxy[boxed, 2].max() or 1.0)
            members = [{"boxes": xyxy[boxed[readers[boxed] == r]], "labels": labels[boxed[readers[boxed] == r]]}
                       for r in np.unique(readers[rows])]
            fused = fuse_boxes(members, size, "wbf", iou_thr=iou_thr)
        out_ids += [image_id] * len(fused["labels"])
        out_boxes.append(fused["boxes"])
        out_labels.append(fused["labels"])
        out_scores.append(fused["scores"])
    out = pd.DataFrame({"image_id": out_ids})
    out[BOX_COLUMNS] = np.concatenate(out_boxes).astype(np.float64) if out_boxes else np.zeros((0, 4))
    out["label"] = np.concatenate(out_labels).astype(np.int64) if out_labels else np.zeros(0, np.int64)
    out["score"] = np.concatenate(out_scores).astype(np.float64) if out_scores else np.zeros(0)
    return out
