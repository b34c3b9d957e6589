"""Ensembling math, finding saved predictions, submission shape, and competition scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lightning_cv.cli import main
from lightning_cv.commands.ensemble import Predictions, align, combine, submission_frame
from lightning_cv.commands.score import overlap, rle_pixels, score_frames
from lightning_cv.errors import DataError
from lightning_cv.io import rle_encode

CLASSES = ["a", "b", "c"]


def _preds(probs, ids=("x", "y")) -> Predictions:
    return Predictions(source=None, ids=np.array(ids), probs=np.asarray(probs, dtype=np.float32), class_names=CLASSES)


def test_weighted_mean_and_vote():
    p1 = _preds([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    p2 = _preds([[0.1, 0.8, 0.1], [0.1, 0.2, 0.7]])
    p3 = _preds([[0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    np.testing.assert_allclose(combine([p1, p2], "mean"), (p1.probs + p2.probs) / 2, atol=1e-6)
    np.testing.assert_allclose(combine([p1, p2], "mean", [3, 1]), 0.75 * p1.probs + 0.25 * p2.probs, atol=1e-6)
    votes = combine([p1, p2, p3], "vote")
    np.testing.assert_allclose(votes, [[1 / 3, 2 / 3, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-6)
    # A heavy enough weight outvotes the others.
    assert combine([p1, p2, p3], "vote", [5, 1, 1])[0].argmax() == 0


def test_vote_on_masks_is_per_pixel():
    masks = [_preds(np.full((1, 1, 2, 2), v)) for v in (0.9, 0.8, 0.1)]
    np.testing.assert_allclose(combine(masks, "vote"), np.full((1, 1, 2, 2), 2 / 3), atol=1e-6)
    multi = [_preds(np.stack([np.eye(3)[[k, k]].T.reshape(3, 2, 1)] * 1)) for k in (0, 2, 2)]
    np.testing.assert_allclose(combine(multi, "vote")[0, :, 0, 0], [1 / 3, 0, 2 / 3], atol=1e-6)


def test_align_reorders_and_rejects_other_ids():
    p1 = _preds([[1, 0, 0], [0, 1, 0]], ids=("x", "y"))
    p2 = _preds([[0, 1, 0], [1, 0, 0]], ids=("y", "x"))
    aligned = align([p1, p2])
    np.testing.assert_array_equal(aligned[1].probs, p1.probs)
    with pytest.raises(DataError, match="ids"):
        align([p1, _preds([[1, 0, 0], [0, 1, 0]], ids=("x", "z"))])


def test_submission_follows_the_sample_submission():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]], dtype=np.float32)
    sample = pd.DataFrame({"image": ["q.png", "p.png", "r.png"], "label": ["a", "a", "a"]})
    frame = submission_frame(np.array(["p.png", "q.png", "r.png"]), probs, CLASSES, sample=sample)
    assert list(frame.columns) == ["image", "label"]
    assert frame["image"].tolist() == ["q.png", "p.png", "r.png"]
    assert frame["label"].tolist() == ["c", "a", "b"]
    with_probs = submission_frame(np.array(["p.png", "q.png", "r.png"]), probs, CLASSES,
                                  sample=pd.DataFrame({"id": ["r.png"], "a": [0], "b": [0], "c": [0]}))
    assert with_probs.iloc[0].tolist() == ["r.png", pytest.approx(0.3), pytest.approx(0.6), pytest.approx(0.1)]
    with pytest.raises(DataError, match="no prediction"):
        submission_frame(np.array(["p.png"]), probs[:1], CLASSES, sample=sample)


def test_mask_submission_is_rle_at_original_size():
    probs = np.zeros((1, 1, 4, 4), dtype=np.float32)
    probs[0, 0, :2, :2] = 0.9
    frame = submission_frame(np.array(["im"]), probs, ["background", "foreground"], sizes=np.array([[8, 8]]))
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[:4, :4] = 1
    assert frame.iloc[0].tolist() == ["im", rle_encode(expected)]


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
