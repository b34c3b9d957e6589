"""Detection metrics against hand-worked examples: Global Wheat, the Great Barrier Reef's F2, VOC and COCO mAP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_cv.models.box_metrics import (
    RSNA_THRESHOLDS,
    coco_map,
    f2_score,
    match_counts,
    voc_map,
    wheat_score,
)


def boxes(rows, scores=None, labels=None):
    out = {"boxes": np.array(rows, np.float32).reshape(-1, 4),
           "labels": np.zeros(len(rows), np.int64) if labels is None else np.array(labels, np.int64)}
    if scores is not None:
        out["scores"] = np.array(scores, np.float32)
    return out


# Image 1: truths A (0, 0, 10, 10) and B (20, 20, 30, 30). Predictions by score: (0, 0, 10, 5) at 0.95 has IoU
# 50 / 100 = 0.5 with A; (0, 0, 10, 10) at 0.9 has IoU 1 with A; (50, 50, 60, 60) at 0.3 hits nothing.
TRUTH_1 = boxes([[0, 0, 10, 10], [20, 20, 30, 30]])
PRED_1 = boxes([[0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60]], [0.9, 0.95, 0.3])
# Image 2: truth C (0, 0, 10, 10), one prediction (0, 0, 10, 6.2): IoU 62 / 100 = 0.62.
TRUTH_2 = boxes([[0, 0, 10, 10]])
PRED_2 = boxes([[0, 0, 10, 6.2]], [0.8])
# Image 3: no truth, one prediction. Image 4: nothing at all.
TRUTH_3, PRED_3 = boxes([]), boxes([[0, 0, 5, 5]], [0.2])
TRUTH_4, PRED_4 = boxes([]), boxes([], [])
PREDS, TRUTHS = [PRED_1, PRED_2, PRED_3, PRED_4], [TRUTH_1, TRUTH_2, TRUTH_3, TRUTH_4]


def test_matching_takes_predictions_by_score():
    counts = match_counts(PRED_1, TRUTH_1, [0.5, 0.55])
    # t = 0.5: the 0.95 box takes A (IoU 0.5 >= 0.5), the 0.9 box finds A taken: FP; the 0.3 box FP; B missed.
    # t = 0.55: the 0.95 box clears nothing (FP), the 0.9 box takes A; still TP 1, FP 2, FN 1.
    assert counts.tolist() == [[1, 2, 1], [1, 2, 1]]
    other_class = boxes([[0, 0, 10, 10]], [0.9], labels=[1])
    assert match_counts(other_class, TRUTH_2, [0.5]).tolist() == [[0, 1, 1]]  # a class matches only itself


def test_wheat_score_per_image_then_mean():
    # image 1: 1 / (1 + 2 + 1) = 0.25 at every threshold 0.5 ... 0.75
    # image 2: IoU 0.62 is a TP at 0.5, 0.55, 0.6 (1 / 1) and a FP + FN at 0.65, 0.7, 0.75 (0): 3 / 6 = 0.5
    # image 3: predictions without truth: 0; image 4 (nothing, nothing) is left out
    assert wheat_score(PREDS, TRUTHS) == pytest.approx((0.25 + 0.5 + 0) / 3)
    assert wheat_score(PREDS, TRUTHS, empty_score=1.0) == pytest.approx((0.25 + 0.5 + 0 + 1) / 4)


def test_rsna_pneumonia_score_starts_at_iou_0_4():
    # RSNA's thresholds 0.4, 0.45, ..., 0.75. Image 1: at 0.4 and 0.45 too, the 0.95 box (IoU 0.5) takes A first
    # and the 0.9 box is a FP: 0.25 at every threshold. Image 2 (IoU 0.62): TP at 0.4 ... 0.6, 0 at 0.65 ... 0.75:
    # 5 / 8. Image 3: 0; image 4 left out.
    assert RSNA_THRESHOLDS == pytest.approx([0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75])
    assert wheat_score(PREDS, TRUTHS, RSNA_THRESHOLDS) == pytest.approx((0.25 + 5 / 8 + 0) / 3)


def test_f2_pools_counts_over_images():
    # image 1: TP 1, FP 2, FN 1 at every threshold; image 3: FP 1.
    # image 2: TP 1 at 0.3 ... 0.6 (7 thresholds), FP 1 + FN 1 at 0.65 ... 0.8 (4 thresholds).
    # t <= 0.6: TP 2, FP 3, FN 1: F2 = 5 * 2 / (10 + 4 * 1 + 3) = 10 / 17
    # t >= 0.65: TP 1, FP 4, FN 2: F2 = 5 / (5 + 8 + 4) = 5 / 17
    assert f2_score(PREDS, TRUTHS) == pytest.approx((7 * 10 / 17 + 4 * 5 / 17) / 11)


def test_voc_map_all_point_interpolation():
    # class 0 over images 1-3, 3 truths (A, B, C); predictions by score:
    # 0.95 -> A (IoU 0.5 > 0.4) TP; 0.9 -> A again: FP; 0.8 -> C (0.62) TP; 0.3 FP; 0.2 (no truth) FP.
    # recall 1/3, 1/3, 2/3, 2/3, 2/3; precision 1, 1/2, 2/3, 1/2, 2/5; envelope 1, 2/3, 2/3, 1/2, 2/5
    # AP = 1/3 * 1 + (2/3 - 1/3) * 2/3 = 5/9
    assert voc_map(PREDS, TRUTHS) == pytest.approx(5 / 9)
    # class 1: one truth found exactly (AP 1); a class absent from the truths (2) does not count
    truths = [TRUTH_1, boxes([[0, 0, 10, 10], [20, 20, 40, 40]], labels=[0, 1]), TRUTH_3, TRUTH_4]
    extra = boxes([[0, 0, 10, 6.2], [20, 20, 40, 40], [0, 0, 1, 1]], [0.8, 0.1, 0.9], labels=[0, 1, 2])
    assert voc_map([PRED_1, extra, PRED_3, PRED_4], truths) == pytest.approx((5 / 9 + 1) / 2)


def test_voc_needs_iou_above_the_threshold():
    truth, pred = [boxes([[0, 0, 10, 10]])], [boxes([[0, 0, 10, 4]], [0.9])]  # IoU 40 / 100 = 0.4
    assert voc_map(pred, truth, iou_threshold=0.4) == 0.0
    assert voc_map(pred, truth, iou_threshold=0.39) == 1.0


def test_coco_map_through_torchmetrics():
    truth, pred = [boxes([[0, 0, 10, 10]])], [boxes([[0, 0, 10, 6.2]], [0.9])]
    # IoU 0.62 clears 0.50, 0.55, 0.60 of the ten thresholds 0.50 ... 0.95: map 3 / 10, map_50 1, map_75 0
    assert coco_map(pred, truth) == pytest.approx({"map": 0.3, "map_50": 1.0, "map_75": 0.0})
    torch_pred = [{k: torch.as_tensor(v) for k, v in pred[0].items()}]
    assert coco_map(torch_pred, truth)["map_50"] == pytest.approx(1.0)


def test_perfect_predictions_score_one():
    preds = [{**t, "scores": np.ones(len(t["boxes"]), np.float32)} for t in (TRUTH_1, TRUTH_2)]
    truths = [TRUTH_1, TRUTH_2]
    assert wheat_score(preds, truths) == 1.0 and f2_score(preds, truths) == 1.0 and voc_map(preds, truths) == 1.0
    assert coco_map(preds, truths) == pytest.approx({"map": 1.0, "map_50": 1.0, "map_75": 1.0})


def test_no_predictions_and_no_truths():
    nothing = [boxes([], []), boxes([], [])]
    assert wheat_score(nothing, [TRUTH_1, TRUTH_2]) == 0.0
    assert f2_score(nothing, [TRUTH_1, TRUTH_2]) == 0.0
    assert voc_map(nothing, [TRUTH_1, TRUTH_2]) == 0.0
    empty = [boxes([]), boxes([])]
    assert wheat_score(nothing, empty) == 1.0  # no image scored
    assert f2_score(nothing, empty) == 1.0
    assert math.isnan(voc_map(nothing, empty))
    assert wheat_score([PRED_3, PRED_4], empty) == 0.0  # predictions where there is nothing


def test_every_box_metric_is_named_alike_in_validation_cv_and_score():
    """The metric names `--model.metric` and `score --metric` accept are the ones `scored` computes."""
    from typing import get_args

    from lightning_cv.cli.commands.score import BOX_METRICS, Metric
    from lightning_cv.models.box_metrics import METRICS, THRESHOLDED, scored
    from lightning_cv.tasks.detection import BoxMetric

    assert set(get_args(BoxMetric)) == set(METRICS) == set(BOX_METRICS) and set(BOX_METRICS) <= set(get_args(Metric))
    assert set(THRESHOLDED) <= set(METRICS)
    for name in METRICS:
        assert name in scored(name, PREDS, TRUTHS)
