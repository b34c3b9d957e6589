"""Multi-label segmentation as competitions pose it: RLE tables, pair Dice, post-processing, keyed submissions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lightning_cv.cli.commands.score import score_frames
from lightning_cv.data.seg_multilabel import MultiLabelSegmentationDataModule
from lightning_cv.errors import DataError
from lightning_cv.io.images import write_image
from lightning_cv.io.masks import rle_decode, rle_encode
from lightning_cv.predictions.files import Predictions
from lightning_cv.predictions.postprocess import pair_dice, tune_postprocess
from lightning_cv.tasks.seg_multilabel import MultiLabelSegmentationTask, PairDice

H, W = 8, 12


def _mask(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    for y0, x0, y1, x1 in boxes:
        mask[y0:y1, x0:x1] = 1
    return mask


def _images(root, names):
    for name in names:
        write_image(root / "train_images" / name, np.full((H, W, 3), 100, np.uint8))


def test_long_table_with_instances_and_empty_markers(tmp_path):
    """Severstal's long table: a row per present class, several rows of a class are its instances
    (unioned), -1 / NaN / '' are empty, an image without a row is empty for every class."""
    _images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    one, two, three = _mask((0, 0, 2, 3)), _mask((4, 4, 6, 8)), _mask((1, 6, 3, 12))
    rows = [("a.jpg", 1, rle_encode(one, "F")), ("a.jpg", 1, rle_encode(two, "F")), ("a.jpg", 3, rle_encode(three, "F")),
            ("b.jpg", 3, "-1"), ("b.jpg", 1, "")]
    pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"]).to_csv(tmp_path / "train.csv", index=False)
    dm = MultiLabelSegmentationDataModule(str(tmp_path), image_size=32, classes=["1", "2", "3"])
    rows = dm.labelled_rows()
    masks = {i: source() for i, source in zip(rows.ids, rows.extra["source"])}
    np.testing.assert_array_equal(masks["a"][..., 0], one | two)  # instances unioned
    np.testing.assert_array_equal(masks["a"][..., 2], three)
    assert masks["a"][..., 1].sum() == 0 and masks["b"].sum() == 0 and masks["c"].sum() == 0
    frame, key, label = dm.fold_table()
    assert dict(zip(frame[key], frame[label])) == {"a": "1 3", "b": "none", "c": "none"}

    dm.setup("fit")
    sample = dm.datasets["train"][0]
    assert sample["target"].shape == (3, 32, 32)  # a channel per class, padded to the stride


def test_composite_keys_and_bad_rows(tmp_path):
    """Clouds' `Image_Label` keys (`<image>_<class>`, NaN for empty); a key without a class names its row."""
    _images(tmp_path, ["0011165.jpg", "002be4f.jpg"])
    fish = _mask((2, 2, 5, 9))
    pd.DataFrame({"Image_Label": ["0011165.jpg_Fish", "0011165.jpg_Flower", "002be4f.jpg_Fish"],
                  "EncodedPixels": [rle_encode(fish, "F"), "NaN", ""]}).to_csv(tmp_path / "train.csv", index=False)
    dm = MultiLabelSegmentationDataModule(str(tmp_path), id_col="Image_Label", class_col=None, image_size=32)
    assert dm.class_names == ["Fish", "Flower"]
    rows = dm.labelled_rows()
    np.testing.assert_array_equal(rows.extra["source"][0]()[..., 0], fish)
    pd.DataFrame({"Image_Label": ["0011165.jpg"], "EncodedPixels": ["1 2"]}).to_csv(tmp_path / "bad.csv", index=False)
    bad = MultiLabelSegmentationDataModule(str(tmp_path), id_col="Image_Label", class_col=None, rle_csv="bad.csv")
    with pytest.raises(DataError, match="bad.csv: row 2: '0011165.jpg' is not <image>_<class>"):
        bad.labelled_rows()


def test_pair_dice_by_hand():
    truth = np.stack([_mask((0, 0, 2, 2)), _mask()])[None]      # image 0: class a 4 px, class b empty
    pred = np.stack([_mask((0, 0, 2, 1)), _mask()])[None]       # 2 of the 4 px; b empty, as it should
    # a: 2 * 2 / (2 + 4) = 2/3; b: empty and empty = 1.
    np.testing.assert_allclose(pair_dice(pred, truth), [[2 / 3, 1.0]])
    metric = PairDice()
    metric.update(torch.from_numpy(pred), torch.from_numpy(truth))
    assert float(metric.compute()) == pytest.approx((2 / 3 + 1) / 2)
    # score --metric dice_pairs: a long solution (present pairs only) vs a keyed submission.
    solution = pd.DataFrame({"key": ["x_a"], "rle": [rle_encode(truth[0, 0])]})
    submission = pd.DataFrame({"key": ["x_a", "x_b"], "rle": [rle_encode(pred[0, 0]), ""]})
    assert score_frames(submission, solution, "dice_pairs") == pytest.approx((2 / 3 + 1) / 2)
    # Keyed by file name where the solution keys by stem: matched by stem, the same score.
    named = submission.assign(key=["x.jpg_a", "x.jpg_b"])
    assert score_frames(named, solution, "dice_pairs") == pytest.approx((2 / 3 + 1) / 2)
    # Keys of other images: an error, not a score of empty masks.
    with pytest.raises(DataError, match="none of its 2 keys is in the solution"):
        score_frames(submission.assign(key=["y.jpg_a", "y.jpg_b"]), solution, "dice_pairs")


def test_postprocess_tuning_empties_small_false_positives():
    """A class whose out-of-fold masks are small false positives on empty images: the tuned minimum area
    empties them, and the pair Dice rises."""
    rng = np.random.default_rng(0)
    targets = np.zeros((20, 1, 16, 16), np.uint8)
    targets[:10, 0, 2:10, 2:10] = 1                      # half the images hold a 64-px defect
    probs = targets * 0.9 + rng.uniform(0, 0.2, targets.shape)
    probs[10:, 0, 0:2, 0:2] = 0.8                        # 4-px specks on the empty ones
    thresholds, areas, tuned = tune_postprocess(probs.astype(np.float32), targets)
    raw = pair_dice(probs > 0.5, targets).mean()
    assert raw == pytest.approx(0.5) and tuned == pytest.approx(1.0) and 4 < areas[0] <= 64


def test_submission_follows_the_composite_keys():
    probs = np.zeros((1, 2, 4, 4), np.float32)
    probs[0, 1, :2, :2] = 0.9
    predictions = Predictions("seg-multilabel", np.array(["p"]), {"probs": probs, "size": np.array([[8, 8]])}, ["1", "2"],
                              {"threshold": 0.5, "min_area": 0, "rle_order": "F", "key_sep": "_"})
    sample = pd.DataFrame({"ImageId_ClassId": ["p.jpg_2", "p.jpg_1"], "EncodedPixels": ["1 1", "1 1"]})
    frame = MultiLabelSegmentationTask.submission(predictions, sample)
    assert frame["ImageId_ClassId"].tolist() == ["p.jpg_2", "p.jpg_1"] and frame["EncodedPixels"].iloc[1] == ""
    np.testing.assert_array_equal(rle_decode(frame["EncodedPixels"].iloc[0], (8, 8), "F"), np.pad(np.ones((4, 4)), ((0, 4), (0, 4))))
    # A minimum area larger than the mask empties it.
    emptied = MultiLabelSegmentationTask.submission(predictions.with_meta(min_area=[0, 5]), sample)
    assert emptied["EncodedPixels"].tolist() == ["", ""]
    with pytest.raises(DataError, match="class '3'"):
        MultiLabelSegmentationTask.submission(predictions, pd.DataFrame({"k": ["p.jpg_3"], "v": [""]}))


def test_folds_keep_each_class_share_with_rare_combinations(tmp_path):
    """Stratified over the classes an image holds: a combination seen once is no error, and every fold
    gets empty images and images of each class."""
    from lightning_cv.data.folds import load_or_create_folds

    names = [f"{i}.jpg" for i in range(12)]
    _images(tmp_path, names)
    held = {0: [1], 1: [1], 2: [1], 3: [2], 4: [2], 5: [2], 6: [1, 2], 7: [1, 2]}  # 8-11 are clean
    rows = [(names[i], c, rle_encode(_mask((0, 0, 2, 2)), "F")) for i, classes in held.items() for c in classes]
    pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"]).to_csv(tmp_path / "train.csv", index=False)
    dm = MultiLabelSegmentationDataModule(str(tmp_path))
    frame, key, label = dm.fold_table()
    folds = load_or_create_folds(tmp_path / "folds.csv", frame, key, 3, label_col=label, multilabel=dm.multilabel)
    for k in range(3):
        in_fold = folds[folds["fold"] == k][label].str.split()
        assert {"1", "2", "none"} <= {c for classes in in_fold for c in classes}


def test_binary_instance_rows_union_into_one_mask(tmp_path):
    """Airbus: one row per ship (an image without ships: one empty row); SIIM: -1 for empty."""
    from lightning_cv.data.segmentation import SegmentationDataModule

    for name in ("s.jpg", "e.jpg"):
        write_image(tmp_path / "train" / name, np.full((H, W, 3), 90, np.uint8))
    ship1, ship2 = _mask((0, 0, 3, 3)), _mask((5, 6, 8, 12))
    pd.DataFrame({"ImageId": ["s.jpg", "s.jpg", "e.jpg"],
                  "EncodedPixels": [rle_encode(ship1, "F"), rle_encode(ship2, "F"), "-1"]}).to_csv(tmp_path / "ships.csv", index=False)
    dm = SegmentationDataModule(str(tmp_path), rle_csv="ships.csv", id_col="ImageId", rle_col="EncodedPixels", rle_order="F")
    np.testing.assert_array_equal(rle_decode(dm.rles["s"], (H, W), "F"), ship1 | ship2)
    assert dm.rles["e"] == "" and dm.class_names == ["background", "foreground"]
    assert dm.instance_rows  # so predictions are written a row per predicted ship


def test_instance_tables_get_a_row_per_predicted_component():
    from lightning_cv.tasks import SegmentationTask

    probs = np.zeros((2, 1, 8, 8), np.float32)
    probs[0, 0, :2, :2] = probs[0, 0, 5:, 5:] = 0.9  # two ships in image a, none in b
    predictions = Predictions("seg", np.array(["a", "b"]), {"probs": probs, "size": np.array([[8, 8], [8, 8]])},
                              ["background", "foreground"], {"threshold": 0.5, "rle_order": "F", "instances": True})
    sample = pd.DataFrame({"ImageId": ["b.jpg", "a.jpg"], "EncodedPixels": ["", ""]})
    frame = SegmentationTask.submission(predictions, sample)
    assert frame["ImageId"].tolist() == ["b.jpg", "a.jpg", "a.jpg"] and frame["EncodedPixels"].iloc[0] == ""
    ships = [rle_decode(r, (8, 8), "F") for r in frame["EncodedPixels"].iloc[1:]]
    assert sorted(int(s.sum()) for s in ships) == [4, 9] and (ships[0] & ships[1]).sum() == 0


def test_height_width_sizes_map_predictions_back_exactly(tmp_path):
    """--data.image_size [h, w]: non-square inputs keep their aspect, the padding is dropped, and masks
    come back at each image's original size."""
    from lightning_cv.tasks import SegmentationTask

    _images(tmp_path, ["a.jpg"])
    pd.DataFrame({"ImageId": ["a.jpg"], "ClassId": [1], "EncodedPixels": [rle_encode(_mask((0, 0, 4, 6)), "F")]}).to_csv(
        tmp_path / "train.csv", index=False)
    dm = MultiLabelSegmentationDataModule(str(tmp_path), image_size=[16, 40], classes=["1"], predict_dir=str(tmp_path / "train_images"))
    dm.setup("predict")
    sample = dm.datasets["predict"][0]
    assert tuple(sample["image"].shape) == (3, 32, 64) and sample["valid"].tolist() == [16, 40]
    assert sample["size"].tolist() == [H, W]
    task = SegmentationTask(num_classes=2, encoder="tu-test_resnet", image_size=[16, 40])
    assert tuple(task.example_input_array.shape[-2:]) == (32, 64)
    with pytest.raises(DataError, match="one positive side or \\[height, width\\]"):
        MultiLabelSegmentationDataModule(str(tmp_path), image_size=[16, 40, 3])


def test_training_on_crops_validating_on_whole_images(tmp_path):
    """--data.crop: training samples are crops, validation whole images (per-class masks too)."""
    _images(tmp_path, [f"{i}.jpg" for i in range(6)])
    pd.DataFrame({"ImageId": ["0.jpg"], "ClassId": [1], "EncodedPixels": [rle_encode(_mask((0, 0, 4, 6)), "F")]}).to_csv(
        tmp_path / "train.csv", index=False)
    dm = MultiLabelSegmentationDataModule(str(tmp_path), image_size=[64, 128], classes=["1"], val_fraction=0.5,
                                          crop=[32, 64])
    dm.setup("fit")
    train, val = dm.datasets["train"][0], dm.datasets["val"][0]
    assert tuple(train["image"].shape) == (3, 32, 64) and tuple(train["target"].shape) == (1, 32, 64)
    assert tuple(val["image"].shape) == (3, 64, 128) and tuple(val["target"].shape) == (1, 64, 128)


def test_mask_mode_follows_the_data(tmp_path):
    """0/255 masks -> binary (one sigmoid channel), class-index masks -> multiclass (softmax), a per-class RLE
    table -> multi-label: `seg` says so in one line instead of training its classes as one mask."""
    from lightning_cv.data.segmentation import SegmentationDataModule
    from lightning_cv.errors import UserInputError
    from lightning_cv.tasks import SegmentationTask

    for name, values in (("binary", (0, 255)), ("multiclass", (0, 1, 2))):
        write_image(tmp_path / name / "train" / "a.png", np.full((H, W, 3), 90, np.uint8))
        write_image(tmp_path / name / "train_masks" / "a.png", np.resize(np.array(values, np.uint8), (H, W)))
    modes = {}
    for name in ("binary", "multiclass"):
        n = SegmentationDataModule(str(tmp_path / name), mask_suffix="").num_classes
        modes[name] = (n, SegmentationTask(num_classes=n, encoder="tu-test_resnet", image_size=32).activation)
    assert modes == {"binary": (2, "sigmoid"), "multiclass": (3, "softmax")}

    _images(tmp_path, ["a.jpg", "b.jpg"])
    long = pd.DataFrame({"ImageId": ["a.jpg", "b.jpg"], "ClassId": [1, 3], "EncodedPixels": [rle_encode(_mask((0, 0, 2, 2)), "F")] * 2})
    long.to_csv(tmp_path / "train.csv", index=False)
    seg = {"image_dir": "train_images", "rle_csv": "train.csv", "id_col": "ImageId", "rle_col": "EncodedPixels"}
    with pytest.raises(DataError, match=r"column 'ClassId' gives its masks 2 classes .*task seg-multilabel"):
        _ = SegmentationDataModule(str(tmp_path), **seg).num_classes
    assert MultiLabelSegmentationDataModule(str(tmp_path)).class_names == ["1", "3"]  # a channel per class
    long.assign(ClassId=1).to_csv(tmp_path / "one.csv", index=False)  # one class: a binary table
    assert SegmentationDataModule(str(tmp_path), **{**seg, "rle_csv": "one.csv"}).num_classes == 2
    pd.DataFrame({"Image_Label": ["a.jpg_Fish", "b.jpg_Sugar"], "EncodedPixels": ["1 2", ""]}).to_csv(tmp_path / "keys.csv", index=False)
    with pytest.raises(DataError, match=r"<image>_<class> .*seg-multilabel"):
        _ = SegmentationDataModule(str(tmp_path), **{**seg, "rle_csv": "keys.csv", "id_col": "Image_Label"}).num_classes
    with pytest.raises(UserInputError, match="run-length encoded masks are binary"):
        _ = SegmentationDataModule(str(tmp_path), **{**seg, "rle_csv": "one.csv", "classes": ["bg", "a", "b"]}).num_classes
