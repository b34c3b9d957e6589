"""Fold assignment: stratification, multi-label balance, groups, persistence and one-line errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lightning_cv.data.folds import (
    assign_folds,
    fold_split,
    iterative_stratification,
    load_or_create_folds,
    split_tags,
)
from lightning_cv.errors import DataError, UserInputError


def _labels(seed: int = 0, n: int = 200) -> list[str]:
    rng = np.random.default_rng(seed)
    return rng.choice(["a", "b", "c", "d"], size=n, p=[0.5, 0.3, 0.15, 0.05]).tolist()


def test_stratified_folds_keep_class_shares():
    labels = _labels()
    folds = assign_folds(labels, 5, seed=1)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    frame = pd.DataFrame({"label": labels, "fold": folds})
    counts = frame.groupby(["label", "fold"]).size().unstack()
    # Every class is spread evenly: per-fold counts differ by at most one.
    assert ((counts.max(axis=1) - counts.min(axis=1)) <= 1).all()
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1


def test_same_inputs_same_folds_and_seed_matters():
    labels = _labels()
    assert (assign_folds(labels, 5, seed=3) == assign_folds(labels, 5, seed=3)).all()
    assert (assign_folds(labels, 5, seed=3) != assign_folds(labels, 5, seed=4)).any()


def test_groups_never_span_folds():
    rng = np.random.default_rng(0)
    groups = [f"patient{g}" for g in rng.integers(0, 40, size=200)]
    labels = _labels()
    folds = assign_folds(labels, 4, seed=0, groups=groups)
    per_group = pd.DataFrame({"g": groups, "f": folds}).groupby("g")["f"].nunique()
    assert (per_group == 1).all()
    assert sorted(set(folds)) == [0, 1, 2, 3]


def test_iterative_stratification_balances_every_label():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 6)) < np.array([0.6, 0.3, 0.2, 0.1, 0.05, 0.03])).astype(int)
    folds = iterative_stratification(y, 3, seed=0)
    assert (folds >= 0).all() and sorted(set(folds)) == [0, 1, 2]
    per_fold = np.stack([y[folds == f].sum(axis=0) for f in range(3)])
    expected = y.sum(axis=0) / 3
    # Each label's count per fold is within one row of its share.
    assert (np.abs(per_fold - expected) <= 1).all(), per_fold
    assert np.abs(np.bincount(folds) - 100).max() <= 3


def test_multilabel_tags_go_through_iterative_stratification():
    tags = ["clear primary", "haze primary water", "clear", "cloudy", "primary water", "clear road"] * 10
    matrix, names = split_tags(tags)
    assert names == ["clear", "cloudy", "haze", "primary", "road", "water"]
    assert matrix.sum() == sum(len(t.split()) for t in tags)
    folds = assign_folds(tags, 5, multilabel=True)
    for j in range(len(names)):
        counts = np.bincount(folds[matrix[:, j] == 1], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_rare_class_is_a_one_line_error():
    labels = ["a"] * 10 + ["b"] * 2
    with pytest.raises(DataError, match=r"'b' \(2\) has fewer rows than the 3 folds"):
        assign_folds(labels, 3)


def test_folds_csv_is_written_once_and_reused(tmp_path):
    frame = pd.DataFrame({"image": [f"im{i}.png" for i in range(30)], "label": _labels(n=30, seed=2),
                          "extra": range(30)})
    frame.loc[frame["label"] == "d", "label"] = "c"
    path = tmp_path / "folds.csv"
    first = load_or_create_folds(path, frame, "image", 3, seed=0, label_col="label")
    assert list(first.columns) == ["image", "label", "extra", "fold"]
    # A different seed does not re-split an existing file: the stored folds win.
    again = load_or_create_folds(path, frame, "image", 3, seed=99, label_col="label")
    assert (again["fold"].to_numpy() == first["fold"].to_numpy()).all()
    with pytest.raises(DataError, match="holds 3 folds, not 5"):
        load_or_create_folds(path, frame, "image", 5, label_col="label")
    with pytest.raises(DataError, match="new row"):
        load_or_create_folds(path, pd.concat([frame, frame.head(1).assign(image="new.png")]), "image", 3, label_col="label")

    train, val = fold_split(frame["image"].tolist(), again, "image", 1)
    assert set(frame["image"].iloc[val]) == set(first.loc[first["fold"] == 1, "image"])
    assert sorted([*train, *val]) == list(range(30))


def test_unlabelled_rows_are_shuffled_into_folds():
    folds = assign_folds(None, 4, seed=0, n_rows=22)
    assert sorted(np.bincount(folds).tolist()) == [5, 5, 6, 6]


def test_group_pattern_keeps_a_car_in_one_fold(tmp_path):
    """Carvana: `<car>_<view>` images; --data.group_pattern '^([^_]+)_' puts all views of a car in one fold."""
    from lightning_cv.cli.commands.cv import _fold_assignment
    from lightning_cv.data.segmentation import SegmentationDataModule
    from lightning_cv.io.images import write_image

    for car in ("a1", "b2", "c3", "d4"):
        for view in range(1, 4):
            write_image(tmp_path / "train" / f"{car}_{view:02d}.png", np.zeros((4, 4, 3), np.uint8))
    dm = SegmentationDataModule(str(tmp_path), group_pattern="^([^_]+)_")
    table, key, _ = _fold_assignment(tmp_path, dm, 2, None, None)
    assert table.groupby("group")["fold"].nunique().max() == 1 and table["fold"].nunique() == 2
    with pytest.raises(UserInputError, match="one \\(group\\)"):
        SegmentationDataModule(str(tmp_path), group_pattern="^[^_]+_")
