"""Kaggle run-length encoding: 1-indexed "start length" pairs, row-major (C) or column-major (F)."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_cv.io.masks import rle_decode, rle_encode

# A 3x4 mask worked by hand.
#   row-major (Carvana) pixel numbers     column-major (TGS Salt) pixel numbers
#    1  2  3  4                             1  4  7 10
#    5  6  7  8                             2  5  8 11
#    9 10 11 12                             3  6  9 12
MASK = np.array([
    [0, 1, 1, 0],
    [0, 0, 0, 1],
    [1, 1, 0, 1],
], dtype=np.uint8)
# Row-major: pixels 2-3, then 8-10 (8 ends row 2 and 9-10 start row 3), then 12.
ROW_MAJOR = "2 2 8 3 12 1"
# Column-major: pixel 3 (col 1), 4 and 6 (col 2), 7 (col 3), 11-12 (col 4).
COLUMN_MAJOR = "3 2 6 2 11 2"


def test_hand_worked_row_major():
    assert rle_encode(MASK, "C") == ROW_MAJOR
    np.testing.assert_array_equal(rle_decode(ROW_MAJOR, MASK.shape, "C"), MASK)


def test_hand_worked_column_major():
    assert rle_encode(MASK, "F") == COLUMN_MAJOR
    np.testing.assert_array_equal(rle_decode(COLUMN_MAJOR, MASK.shape, "F"), MASK)


def test_empty_and_full_masks():
    assert rle_encode(np.zeros((2, 3), np.uint8)) == ""
    assert rle_encode(np.ones((2, 3), np.uint8)) == "1 6"
    np.testing.assert_array_equal(rle_decode("", (2, 3)), np.zeros((2, 3), np.uint8))
    np.testing.assert_array_equal(rle_decode(float("nan"), (2, 3)), np.zeros((2, 3), np.uint8))


def test_0_255_masks_encode_like_0_1():
    assert rle_encode(MASK * 255) == ROW_MAJOR


@pytest.mark.parametrize("order", ["C", "F"])
def test_round_trip_random_masks(order):
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (17, 3), (32, 48)]:
        for density in (0.05, 0.5, 0.95):
            mask = (rng.random(shape) < density).astype(np.uint8)
            mask[0, 0], mask[-1, -1] = 1, 1  # runs touching both ends
            np.testing.assert_array_equal(rle_decode(rle_encode(mask, order), shape, order), mask)


def test_orders_differ_on_a_non_symmetric_mask():
    assert rle_encode(MASK, "C") != rle_encode(MASK, "F")


@pytest.mark.parametrize("rle", ["1", "0 2", "11 3"])
def test_bad_runs_raise(rle):
    with pytest.raises(ValueError):
        rle_decode(rle, (3, 4))


@pytest.mark.parametrize("empty", ["", " -1", "-1", float("nan"), None])
def test_every_competitions_empty_marker_is_an_empty_mask(empty):
    """'' (Carvana, TGS), -1 (SIIM pneumothorax), NaN (Clouds, Airbus)."""
    assert rle_decode(empty, (3, 4)).sum() == 0
