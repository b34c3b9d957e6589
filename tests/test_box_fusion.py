"""Box fusion: WBF's fused box is the score-weighted mean, NMS keeps the best, readers' boxes become one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lightning_cv.predictions.box_fusion import fuse_boxes, fuse_readers, keep_above, nms


def pred(boxes, scores, labels=None):
    return {"boxes": np.array(boxes, np.float32), "scores": np.array(scores, np.float32),
            "labels": np.zeros(len(scores), np.int64) if labels is None else np.array(labels)}


# Two overlapping boxes: A (10, 10, 50, 50) area 1600, B (12, 14, 54, 50) area 42 * 36 = 1512;
# overlap x 12..50, y 14..50 = 38 * 36 = 1368; IoU = 1368 / (1600 + 1512 - 1368) = 0.78 > 0.55.
A = pred([[10, 10, 50, 50]], [0.9])
B = pred([[12, 14, 54, 50]], [0.6])


def test_wbf_of_two_overlapping_boxes_is_their_score_weighted_mean():
    fused = fuse_boxes([A, B], size=(100, 200))
    # x_min = (0.9 * 10 + 0.6 * 12) / 1.5 = 10.8, y_min = (9 + 8.4) / 1.5 = 11.6, x_max = (45 + 32.4) / 1.5 = 51.6
    np.testing.assert_allclose(fused["boxes"], [[10.8, 11.6, 51.6, 50.0]], atol=1e-4)
    # score: the mean of 0.9 and 0.6, times min(2 members, 2 boxes) / 2
    np.testing.assert_allclose(fused["scores"], [0.75])
    assert fused["labels"].tolist() == [0] and fused["boxes"].dtype == np.float32


def test_wbf_weights_and_classes():
    fused = fuse_boxes([A, B], size=(100, 100), weights=[1, 3])
    # weighted scores 0.9 and 1.8: x_min = (0.9 * 10 + 1.8 * 12) / 2.7 = 11.333; score = 1.35 * 2 / (1 + 3) = 0.675
    np.testing.assert_allclose(fused["boxes"][0, 0], 11.3333, atol=1e-3)
    np.testing.assert_allclose(fused["scores"], [0.675])
    other = pred([[12, 14, 54, 50]], [0.6], labels=[1])  # another class never fuses
    fused = fuse_boxes([A, other], size=(100, 100))
    assert fused["labels"].tolist() == [0, 1]
    # alone in its cluster, each keeps its box; its score is halved: score * min(2, 1) / 2
    np.testing.assert_allclose(fused["scores"], [0.45, 0.3])
    np.testing.assert_allclose(fused["boxes"], [[10, 10, 50, 50], [12, 14, 54, 50]], atol=1e-4)


def test_boxes_are_clipped_to_the_image_first():
    # (-10, 0, 30, 40) in a 100 x 100 image is clipped to (0, 0, 30, 40); one wholly outside is dropped
    fused = fuse_boxes([pred([[-10, 0, 30, 40], [120, 0, 150, 40]], [0.8, 0.7])], size=(100, 100))
    np.testing.assert_allclose(fused["boxes"], [[0, 0, 30, 40]], atol=1e-4)


def test_nms_methods_and_empty_members():
    kept = fuse_boxes([A, B], size=(100, 100), method="nms", iou_thr=0.5)
    np.testing.assert_allclose(kept["boxes"], A["boxes"])  # IoU 0.78 > 0.5: the 0.9 box wins
    assert fuse_boxes([A, B], size=(100, 100), method="nms", iou_thr=0.8)["boxes"].shape == (2, 4)
    soft = fuse_boxes([A, B], size=(100, 100), method="soft_nms")
    assert len(soft["boxes"]) == 2 and soft["scores"][0] == pytest.approx(0.9)  # soft-NMS lowers, keeps
    empty = fuse_boxes([pred(np.zeros((0, 4)), [])], size=(100, 100))
    assert empty["boxes"].shape == (0, 4) and empty["scores"].shape == (0,)
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse_boxes([A], size=(10, 10), method="vote")


def test_per_class_nms_and_score_floor_keep_torch_as_torch():
    p = {"boxes": torch.tensor([[10.0, 10, 50, 50], [12, 14, 54, 50], [12, 14, 54, 50]]),
         "scores": torch.tensor([0.6, 0.9, 0.5]), "labels": torch.tensor([0, 0, 1])}
    kept = nms(p, iou_thr=0.5)
    # class 0: the 0.9 box suppresses the 0.6 one (IoU 0.78); class 1 keeps its only box
    assert isinstance(kept["boxes"], torch.Tensor) and kept["scores"].tolist() == pytest.approx([0.9, 0.5])
    assert keep_above(p, 0.55)["scores"].tolist() == pytest.approx([0.6, 0.9])


def test_readers_boxes_fuse_per_image_and_class():
    frame = pd.DataFrame({
        "image_id": ["a", "b", "b", "b"], "x_min": [np.nan, 10, 12, 5], "y_min": [np.nan, 20, 21, 5],
        "x_max": [np.nan, 30, 31, 9], "y_max": [np.nan, 40, 39, 9], "label": [-1, 0, 0, 1],
        "reader": ["R1", "R2", "R4", "R3"]})
    fused = fuse_readers(frame)
    assert fused["image_id"].tolist() == ["a", "b", "b"]
    assert fused["label"].tolist() == [-1, 0, 1]
    # R2 and R4 (score 1 each): the plain mean (10 + 12) / 2 = 11, (20 + 21) / 2 = 20.5, 30.5, 39.5;
    # image b has 3 readers: 2 of 3 drew the class-0 box, 1 of 3 the class-1 box
    np.testing.assert_allclose(fused.iloc[1][["x_min", "y_min", "x_max", "y_max"]].to_numpy(float), [11, 20.5, 30.5, 39.5])
    np.testing.assert_allclose(fused["score"].to_numpy()[1:], [2 / 3, 1 / 3], atol=1e-6)
