"""Ensembling math, finding saved predictions, submission shape, and competition scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lightning_cv.cli import main
from lightning_cv.cli.commands.score import overlap, score_frames
from lightning_cv.errors import DataError, UserInputError
from lightning_cv.io.masks import rle_encode, rle_pixels
from lightning_cv.predictions.files import Predictions, align
from lightning_cv.tasks import BBoxCropTask, ClassificationTask, SegmentationTask

CLASSES = ["a", "b", "c"]


def _preds(probs, ids=("x", "y"), task="cls", **arrays) -> Predictions:
    return Predictions(task, np.array(ids), {"probs": np.asarray(probs, dtype=np.float32), **arrays}, CLASSES)


def _combine(predictions, method, weights=None, task=ClassificationTask) -> np.ndarray:
    return task.combine(predictions, method, weights).arrays["probs"]


def test_weighted_mean_and_vote():
    p1 = _preds([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    p2 = _preds([[0.1, 0.8, 0.1], [0.1, 0.2, 0.7]])
    p3 = _preds([[0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    probs = [p.arrays["probs"] for p in (p1, p2)]
    np.testing.assert_allclose(_combine([p1, p2], "mean"), (probs[0] + probs[1]) / 2, atol=1e-6)
    np.testing.assert_allclose(_combine([p1, p2], "mean", [3, 1]), 0.75 * probs[0] + 0.25 * probs[1], atol=1e-6)
    votes = _combine([p1, p2, p3], "vote")
    np.testing.assert_allclose(votes, [[1 / 3, 2 / 3, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-6)
    # A heavy enough weight outvotes the others.
    assert _combine([p1, p2, p3], "vote", [5, 1, 1])[0].argmax() == 0
    with pytest.raises(UserInputError, match="weights"):
        _combine([p1, p2], "mean", [1])


def test_vote_on_masks_is_per_pixel():
    size = {"size": np.array([[2, 2]])}
    masks = [_preds(np.full((1, 1, 2, 2), v), ids=("x",), task="seg", **size) for v in (0.9, 0.8, 0.1)]
    np.testing.assert_allclose(_combine(masks, "vote", task=SegmentationTask), np.full((1, 1, 2, 2), 2 / 3), atol=1e-6)
    multi = [_preds(np.eye(3)[[k, k]].T.reshape(1, 3, 2, 1), ids=("x",), task="seg", **size) for k in (0, 2, 2)]
    np.testing.assert_allclose(_combine(multi, "vote", task=SegmentationTask)[0, :, 0, 0], [1 / 3, 0, 2 / 3], atol=1e-6)


def test_boxes_average_and_refuse_a_vote():
    boxes = [Predictions("bbox", np.array(["x"]), {"box": np.array([[cx, 0.5, 0.2]], np.float32),
                                                   "orig_size": np.array([[100, 200]])}, ["object"]) for cx in (0.4, 0.6)]
    combined = BBoxCropTask.combine(boxes, "mean")
    np.testing.assert_allclose(combined.arrays["box"], [[0.5, 0.5, 0.2]], atol=1e-6)
    np.testing.assert_array_equal(combined.arrays["orig_size"], [[100, 200]])  # not averaged: taken as it is
    with pytest.raises(UserInputError, match="mean"):
        BBoxCropTask.combine(boxes, "vote")


def test_align_reorders_and_rejects_other_ids():
    p1 = _preds([[1, 0, 0], [0, 1, 0]], ids=("x", "y"))
    p2 = _preds([[0, 1, 0], [1, 0, 0]], ids=("y", "x"))
    aligned = align([p1, p2])
    np.testing.assert_array_equal(aligned[1].arrays["probs"], p1.arrays["probs"])
    with pytest.raises(DataError, match="ids"):
        align([p1, _preds([[1, 0, 0], [0, 1, 0]], ids=("x", "z"))])
    with pytest.raises(DataError, match="seg predictions"):
        align([p1, _preds([[1, 0, 0], [0, 1, 0]], task="seg")])


def test_submission_follows_the_sample_submission():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]], dtype=np.float32)
    predictions = _preds(probs, ids=("p.png", "q.png", "r.png"))
    sample = pd.DataFrame({"image": ["q.png", "p.png", "r.png"], "label": ["a", "a", "a"]})
    frame = ClassificationTask.submission(predictions, sample)
    assert list(frame.columns) == ["image", "label"]
    assert frame["image"].tolist() == ["q.png", "p.png", "r.png"]
    assert frame["label"].tolist() == ["c", "a", "b"]
    with_probs = ClassificationTask.submission(predictions, pd.DataFrame({"id": ["r.png"], "a": [0], "b": [0], "c": [0]}))
    assert with_probs.iloc[0].tolist() == ["r.png", pytest.approx(0.3), pytest.approx(0.6), pytest.approx(0.1)]
    with pytest.raises(DataError, match="no prediction"):
        ClassificationTask.submission(predictions.take(np.array([0])), sample)


def test_mask_submission_is_rle_at_original_size():
    probs = np.zeros((1, 1, 4, 4), dtype=np.float32)
    probs[0, 0, :2, :2] = 0.9
    predictions = Predictions("seg", np.array(["im"]), {"probs": probs, "size": np.array([[8, 8]])}, ["background", "foreground"])
    frame = SegmentationTask.submission(predictions)
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[:4, :4] = 1
    assert frame.iloc[0].tolist() == ["im", rle_encode(expected)]
    # The decision saved with the predictions (or given to ensemble) is the one applied.
    assert SegmentationTask.submission(predictions.with_meta(threshold=0.95)).iloc[0].tolist() == ["im", ""]


def test_scores_like_the_competition():
    solution = pd.DataFrame({"image": ["a", "b", "c", "d"], "label": ["x", "y", "y", "z"]})
    submission = pd.DataFrame({"image": ["d", "c", "b", "a"], "label": ["z", "x", "y", "x"]})
    assert score_frames(submission, solution, "accuracy") == pytest.approx(0.75)
    assert score_frames(submission, solution, "f1") == pytest.approx(np.mean([2 / 3, 2 / 3, 1.0]))
    tags = pd.DataFrame({"image": ["a"], "tags": ["clear primary"]})
    assert score_frames(pd.DataFrame({"image": ["a"], "tags": ["clear"]}), tags, "fbeta") == pytest.approx(5 * 0.5 / (4 + 0.5))
    with pytest.raises(DataError, match="missing"):
        score_frames(submission.head(2), solution, "accuracy")

    m1 = np.zeros((6, 6), bool)
    m1[1:4, 1:4] = True  # 9 pixels
    m2 = np.zeros((6, 6), bool)
    m2[2:5, 1:4] = True  # 9 pixels, 6 shared
    assert rle_pixels(rle_encode(m1)).size == 9
    assert overlap(rle_encode(m1), rle_encode(m2), "dice") == pytest.approx(12 / 18)
    assert overlap(rle_encode(m1), rle_encode(m2), "iou") == pytest.approx(6 / 12)
    assert overlap("", "", "dice") == 1.0

    values = pd.DataFrame({"Id": ["a", "b"], "Pawpularity": ["30", "50"]})
    guess = pd.DataFrame({"Id": ["b", "a"], "Pawpularity": ["46", "33"]})
    assert score_frames(guess, values, "rmse") == pytest.approx(np.sqrt((9 + 16) / 2))
    assert score_frames(guess, values, "mae") == pytest.approx(3.5)
    with pytest.raises(DataError, match="no number"):
        score_frames(guess.assign(Pawpularity=["x", "1"]), values, "rmse")


def test_ensemble_and_score_commands(tmp_path, capsys):
    for k, probs in enumerate(([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], [[0.1, 0.8, 0.1], [0.1, 0.2, 0.7]])):
        fold = tmp_path / "cv" / f"fold{k}" / "test"
        fold.mkdir(parents=True)
        np.savez(fold / "predictions.npz", ids=np.array(["x.png", "y.png"]), probs=np.array(probs, np.float32),
                 class_names=np.array(CLASSES))
    (tmp_path / "cv" / "folds.csv").write_text("image,label,fold\n")
    pd.DataFrame({"image": ["y.png", "x.png"], "label": ["a", "a"]}).to_csv(tmp_path / "sample.csv", index=False)
    pd.DataFrame({"image": ["x.png", "y.png"], "label": ["b", "c"]}).to_csv(tmp_path / "solution.csv", index=False)
    out = tmp_path / "submission.csv"
    main(["ensemble", str(tmp_path / "cv"), "--out", str(out), "--sample_submission", str(tmp_path / "sample.csv")])
    assert pd.read_csv(out).values.tolist() == [["y.png", "c"], ["x.png", "b"]]
    assert (tmp_path / "submission.npz").is_file()
    main(["score", str(out), str(tmp_path / "solution.csv"), "--metric", "accuracy"])
    assert "accuracy: 1.00000" in capsys.readouterr().out


def test_tgs_and_airbus_metrics_by_hand():
    from lightning_cv.cli.commands.score import f2_instances, iou_map

    def rle(*pixels_runs):  # 1-indexed (start, length) runs of a flat mask
        return " ".join(f"{s} {n}" for s, n in pixels_runs)

    # TGS: IoU 8/10 = 0.8 clears 0.5, 0.55, ..., 0.75 (6 of the 10 thresholds); empty conventions.
    assert iou_map(rle((1, 8)), rle((1, 10))) == pytest.approx(0.6)
    assert iou_map("", "") == 1.0 and iou_map(rle((1, 4)), "") == 0.0 and iou_map("", rle((1, 4))) == 0.0
    # Airbus: two true ships; one predicted exactly, one missed, one false positive -> F2 = 5/(5+4+1) at every t.
    ships = [rle((1, 10)), rle((101, 10))]
    assert f2_instances([rle((1, 10)), rle((301, 5))], ships) == pytest.approx(0.5)
    assert f2_instances([""], [""]) == 1.0 and f2_instances([rle((1, 2))], [""]) == 0.0
    sub = pd.DataFrame({"ImageId": ["a", "a", "b"], "EncodedPixels": [rle((1, 10)), rle((101, 10)), ""]})
    sol = pd.DataFrame({"ImageId": ["a", "a", "b"], "EncodedPixels": ships + [""]})
    assert score_frames(sub, sol, "f2_instances") == 1.0


def test_validation_iou_map_equals_the_scored_one():
    """val/iou_map (binary segmentation) is `score --metric iou_map`, image by image."""
    import torch

    from lightning_cv.cli.commands.score import iou_map
    from lightning_cv.models.metrics import IoUMap

    truth = np.zeros((5, 6, 6), np.uint8)
    truth[0, :3, :3] = truth[1, 2:5, 1:4] = 1
    pred = truth.copy()
    pred[0, 3, :3] = 1                     # 9 of 12: IoU 0.75
    pred[2, 0, 0] = 1                      # a speck on an empty truth: 0
    # image 1: exact (1); images 3 and 4: empty truth, empty prediction (1 each)
    metric = IoUMap()
    metric.update(torch.from_numpy(pred), torch.from_numpy(truth))
    expected = np.mean([iou_map(rle_encode(p), rle_encode(t)) for p, t in zip(pred, truth)])
    assert float(metric.compute()) == pytest.approx(expected) and expected == pytest.approx((0.5 + 1 + 0 + 1 + 1) / 5)
