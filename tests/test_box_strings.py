"""Prediction strings: Global Wheat and VinBigData styles written highest score first, and read back."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_cv.errors import DataError
from lightning_cv.predictions.box_strings import decode, encode, long_rows, prediction_strings

PRED = {"boxes": np.array([[10.4, 20.6, 50.2, 70.9], [1, 2, 3, 4]], np.float32),
        "labels": np.array([2, 0]), "scores": np.array([0.5, 0.91236], np.float32)}
EMPTY = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64), "scores": np.zeros(0, np.float32)}


def test_global_wheat_conf_xywh():
    # highest score first; corners rounded (10.4 -> 10, 20.6 -> 21, 50.2 -> 50, 70.9 -> 71), w = 50 - 10 = 40,
    # h = 71 - 21 = 50; the confidence with 4 decimals
    text = encode(PRED, "conf_xywh")
    assert text == "0.9124 1 2 2 2 0.5000 10 21 40 50"
    back = decode(text, "conf_xywh")
    np.testing.assert_array_equal(back["boxes"], [[1, 2, 3, 4], [10, 21, 50, 71]])
    np.testing.assert_allclose(back["scores"], [0.9124, 0.5])
    assert back["labels"].tolist() == [0, 0]
    assert encode(EMPTY, "conf_xywh") == ""
    assert encode(PRED, "conf_xywh", decimals=1).endswith("0.5000 10.4 20.6 39.8 50.3")
    # whole values keep no trailing zero; a corner just below 0 is written 0, not -0
    edge = {"boxes": np.array([[-0.04, 2, 3, 4.46]], np.float32), "labels": np.array([0]), "scores": np.array([0.5], np.float32)}
    assert encode(edge, "class_conf_xyxy", decimals=1) == "0 0.5000 0 2 3 4.5"


def test_vinbigdata_class_conf_xyxy_and_no_finding():
    classes = ["0", "3", "10"]  # label 2 is class id 10
    text = encode(PRED, "class_conf_xyxy", no_finding="14", classes=classes)
    assert text == "0 0.9124 1 2 3 4 10 0.5000 10 21 50 71"
    back = decode(text, "class_conf_xyxy", no_finding="14", classes=classes)
    assert back["labels"].tolist() == [0, 2]
    assert encode(EMPTY, "class_conf_xyxy", no_finding="14") == "14 1 0 0 1 1"
    assert decode("14 1 0 0 1 1", "class_conf_xyxy", no_finding="14")["boxes"].shape == (0, 4)
    # without classes the label index is written and read
    assert decode("3 0.5 1 2 3 4", "class_conf_xyxy")["labels"].tolist() == [3]


@pytest.mark.parametrize("text", [float("nan"), None, "", "  "])
def test_missing_strings_are_images_without_a_box(text):
    assert decode(text, "conf_xywh")["boxes"].shape == (0, 4)


def test_malformed_strings():
    with pytest.raises(DataError, match="7 values is not groups of 6"):
        decode("0 0.5 1 2 3 4 9", "class_conf_xyxy")
    with pytest.raises(DataError, match="not a number"):
        decode("0.5 1 2 x 4", "conf_xywh")
    with pytest.raises(DataError, match="names class '7'"):
        decode("7 0.5 1 2 3 4", "class_conf_xyxy", classes=["0", "1"])


def test_long_rows_and_submission_frame():
    rows = long_rows(["a", "b"], [PRED, EMPTY])
    assert list(rows.columns) == ["image_id", "label", "score", "x_min", "y_min", "x_max", "y_max"]
    assert rows["image_id"].tolist() == ["a", "a"] and rows["label"].tolist() == [2, 0]  # b has no box, no row
    frame = prediction_strings(["a", "b"], [PRED, EMPTY], "conf_xywh")
    assert frame["PredictionString"].tolist() == ["0.9124 1 2 2 2 0.5000 10 21 40 50", ""]
