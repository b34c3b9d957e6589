"""The detection task end to end on tiny generated data: box tables through the DataModule, predictions as
padded arrays, submissions in both Kaggle styles, WBF ensembles, box TTA, tuning, scores and detect -> crop."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from lightning_cv.cli import main
from lightning_cv.cli.commands.crop import crop_detections
from lightning_cv.cli.commands.score import score_frames
from lightning_cv.data.detection import DetectionDataModule, count_tag
from lightning_cv.errors import UserInputError
from lightning_cv.io.images import read_image
from lightning_cv.predictions.files import Predictions
from lightning_cv.tasks.detection import DetectionTask, image_predictions, pad_predictions


def _images(folder: Path, names: list[str], size: tuple[int, int] = (40, 60)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(folder / name), np.full((*size, 3), 90, np.uint8))


def _rows(datamodule: DetectionDataModule) -> dict[str, list]:
    rows = datamodule.labelled_rows()
    return {i: t[t[:, 4] >= 0].tolist() for i, t in zip(rows.ids, rows.targets)}


def test_global_wheat_table_images_without_rows_are_empty_and_boxes_are_clipped(tmp_path):
    _images(tmp_path / "train", ["a.jpg", "b.jpg", "c.jpg"])
    pd.DataFrame({"image_id": ["a", "a", "c"], "width": 60, "height": 40, "source": "x",
                  "bbox": ["[1.0, 2.0, 10.0, 5.0]", "[50, 30, 20, 20]", "[0, 0, 4, 4]"]}).to_csv(tmp_path / "train.csv", index=False)
    datamodule = DetectionDataModule(data_dir=str(tmp_path), image_size=32)
    assert _rows(datamodule) == {"a.jpg": [[1, 2, 11, 7, 0], [50, 30, 60, 40, 0]], "b.jpg": [], "c.jpg": [[0, 0, 4, 4, 0]]}
    assert datamodule.class_names == ["object"] and datamodule.box_style == "conf_xywh"
    assert datamodule.recipe_facts() == {"classes": ["object"], "no_finding": None, "box_style": "conf_xywh"}


def test_vinbigdata_readers_fused_or_kept_and_no_finding_rows(tmp_path):
    _images(tmp_path / "train", ["p.png", "q.png"])
    rows = [("p", "Nodule", 1, "R1", 10, 10, 20, 20), ("p", "Nodule", 1, "R2", 12, 10, 22, 20),
            ("p", "Aortic", 0, "R1", 30, 5, 50, 25), ("q", "No finding", 14, "R1", "", "", "", ""),
            ("q", "No finding", 14, "R2", "", "", "", "")]
    pd.DataFrame(rows, columns=["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]).to_csv(
        tmp_path / "train.csv", index=False)
    fused = DetectionDataModule(data_dir=str(tmp_path), image_size=32)
    boxes = _rows(fused)
    assert fused.class_names == ["0", "1"] and fused.no_finding == "14" and fused.box_style == "class_conf_xyxy"
    assert boxes["q.png"] == []
    nodule = [b for b in boxes["p.png"] if b[4] == 1]
    assert len(boxes["p.png"]) == 2 and np.allclose(nodule[0][:4], [11, 10, 21, 20])  # the two readers' mean
    kept = _rows(DetectionDataModule(data_dir=str(tmp_path), image_size=32, readers="keep"))
    assert len(kept["p.png"]) == 3


def test_coco_json_and_yolo_folders(tmp_path):
    _images(tmp_path / "train", ["a.jpg", "b.jpg"])
    coco = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
            "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}],
            "annotations": [{"image_id": 1, "category_id": 9, "bbox": [4, 6, 10, 8]}]}
    (tmp_path / "train.json").write_text(json.dumps(coco))
    datamodule = DetectionDataModule(data_dir=str(tmp_path), boxes="train.json", image_size=32)
    assert _rows(datamodule) == {"a.jpg": [[4, 6, 14, 14, 1]], "b.jpg": []} and datamodule.class_names == ["cat", "dog"]
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "b.txt").write_text("0 0.5 0.5 0.5 0.25\n")
    yolo = DetectionDataModule(data_dir=str(tmp_path), boxes="labels", image_size=32)
    assert _rows(yolo) == {"a.jpg": [], "b.jpg": [[15, 15, 45, 25, 0]]}


def test_a_table_naming_images_not_in_the_folder_is_an_error(tmp_path):
    _images(tmp_path / "train", ["a.jpg"])
    pd.DataFrame({"image_id": ["a", "zz"], "bbox": ["[1, 1, 5, 5]", "[1, 1, 5, 5]"]}).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(Exception, match="1 image id.*'zz'"):
        DetectionDataModule(data_dir=str(tmp_path), image_size=32).labelled_rows()


def test_augmented_samples_keep_their_boxes_in_model_pixels(tmp_path):
    _images(tmp_path / "train", ["a.jpg"], size=(40, 80))
    pd.DataFrame({"image_id": ["a"], "bbox": ["[8, 4, 16, 20]"]}).to_csv(tmp_path / "train.csv", index=False)
    datamodule = DetectionDataModule(data_dir=str(tmp_path), image_size=[20, 40], train_augment=[{"HorizontalFlip": {"p": 1.0}}])
    rows = datamodule.labelled_rows()
    sample = datamodule.build_dataset(rows, datamodule.train_augment)[0]
    assert sample["image"].shape == (3, 20, 40) and sample["size"].tolist() == [40, 80]
    assert sample["target"].tolist() == [[28.0, 2.0, 36.0, 12.0, 0.0]]  # halved, then mirrored


def test_fold_tags_stratify_by_box_count_and_class():
    assert [count_tag(n) for n in (0, 1, 2, 4, 8, 100)] == ["boxes:0", "boxes:1-2", "boxes:1-2", "boxes:3-5",
                                                            "boxes:6-10", "boxes:51+"]


def _predictions(boxes: list[list], class_names: list[str], meta: dict | None = None) -> Predictions:
    preds = [{"boxes": np.array([b[:4] for b in image], np.float32).reshape(-1, 4),
              "scores": np.array([b[4] for b in image], np.float32), "labels": np.array([b[5] for b in image], np.int64)}
             for image in boxes]
    arrays = {**pad_predictions(preds, 4), "size": np.array([[100, 100]] * len(boxes))}
    return Predictions("detection", np.array([f"im{i}.jpg" for i in range(len(boxes))]), arrays, class_names,
                       {"threshold": 0.3, "nms_iou": 0.5, **(meta or {})})


def test_submissions_in_both_styles_follow_the_sample_and_the_decisions():
    boxes = [[[10, 20, 30, 60, 0.9, 0], [11, 20, 31, 60, 0.8, 0], [50, 50, 60, 70, 0.2, 1]], []]
    wheat = _predictions(boxes, ["head"], {"box_style": "conf_xywh"})
    frame = DetectionTask.submission(wheat)
    # NMS drops the 0.8 box, the threshold the 0.2 one; ids without their extension.
    assert frame.to_dict("list") == {"image_id": ["im0", "im1"], "PredictionString": ["0.9000 10 20 20 40", ""]}
    vin = _predictions(boxes, ["0", "1"], {"box_style": "class_conf_xyxy", "no_finding": "14", "threshold": 0.1})
    sample = pd.DataFrame({"image_id": ["im1", "im0"], "PredictionString": ["14 1 0 0 1 1"] * 2})
    frame = DetectionTask.submission(vin, sample)
    assert frame["image_id"].tolist() == ["im1", "im0"]
    assert frame["PredictionString"].tolist() == ["14 1 0 0 1 1", "0 0.9000 10 20 30 60 1 0.2000 50 50 60 70"]
    # the decided boxes' corners with the data's --data.box_decimals (whole pixels above)
    subpixel = _predictions([[[10.26, 20.5, 30.04, 60.0, 0.9, 0]]], ["head"], {"box_style": "conf_xywh", "box_decimals": 1})
    assert DetectionTask.submission(subpixel)["PredictionString"].tolist() == ["0.9000 10.3 20.5 19.7 39.5"]


def test_long_table_and_submission_written_by_predict(tmp_path):
    preds = _predictions([[[10, 20, 30, 60, 0.9, 1]], [[1, 2, 3, 4, 0.1, 0]]], ["a", "b"], {"box_style": "conf_xywh"})
    DetectionTask.write_outputs(preds, tmp_path, pd.DataFrame({"image_id": ["im0", "im1"], "PredictionString": ""}))
    table = pd.read_csv(tmp_path / "boxes.csv")
    assert table.to_dict("records") == [{"image_id": "im0.jpg", "class": "b", "score": 0.9, "x_min": 10.0, "y_min": 20.0,
                                         "x_max": 30.0, "y_max": 60.0}]
    assert pd.read_csv(tmp_path / "submission.csv", keep_default_na=False)["PredictionString"].tolist() == ["0.9000 10 20 20 40", ""]


def test_wbf_ensemble_fuses_members_box_by_box():
    one = _predictions([[[10, 10, 30, 30, 0.9, 0]], [[0, 0, 10, 10, 0.5, 0]]], ["a"])
    two = _predictions([[[14, 10, 34, 30, 0.9, 0]], []], ["a"])
    fused = image_predictions(DetectionTask.combine([one, two], "wbf"))
    np.testing.assert_allclose(fused[0]["boxes"], [[12, 10, 32, 30]], atol=1e-4)  # the members' weighted mean
    np.testing.assert_allclose(fused[0]["scores"], [0.9], atol=1e-5)
    np.testing.assert_allclose(fused[1]["scores"], [0.25], atol=1e-5)  # found by one of two members
    with pytest.raises(Exception, match="combine by wbf"):
        DetectionTask.combine([one, two], "mean")


def _bright_square_detector(task: DetectionTask) -> None:
    """The task's detections replaced by a detector of the brightest 8x8 block whose score favours the right half:
    a view's boxes come back to the original orientation only if TTA flips them back."""
    def detect(outputs: torch.Tensor, size: tuple[int, int]) -> list[dict]:
        found = []
        for image in outputs:
            grey = torch.nn.functional.avg_pool2d(image.mean(0, keepdim=True)[None], 8, 1)[0, 0]
            y, x = divmod(int(grey.argmax()), grey.shape[1])
            found.append({"boxes": torch.tensor([[x, y, x + 8, y + 8]], dtype=torch.float32),
                          "scores": torch.tensor([0.5 + 0.4 * (x > size[1] / 2)]), "labels": torch.tensor([0])})
        return found

    task.detect = detect
    task.forward = lambda images: images


def test_box_tta_flips_views_back_and_fuses_them():
    task = DetectionTask(num_classes=1, backbone="test_resnet", image_size=32, fpn_channels=32, head_convs=1, tta="flip")
    _bright_square_detector(task)
    image = torch.zeros(1, 3, 32, 32)
    image[:, :, 4:12, 6:14] = 1.0
    out = task.predict_step({"image": image, "size": torch.tensor([[64, 96]]), "id": ["a"]}, 0)
    kept = out["labels"][0] >= 0
    np.testing.assert_allclose(out["boxes"][0][kept], [[6 * 3, 4 * 2, 14 * 3, 12 * 2]], atol=1e-3)  # original pixels
    # Two of the four views see the square on the right: WBF's score is the mean of 0.5, 0.9, 0.5, 0.9.
    np.testing.assert_allclose(out["scores"][0][kept], [0.7], atol=1e-5)
    # Each view's own boxes are kept beside the fused ones, flipped back too.
    assert out["view_boxes"].shape == (1, 4, task.max_detections, 4)
    np.testing.assert_allclose(out["view_boxes"][0, :, 0], [[18, 8, 42, 24]] * 4, atol=1e-3)
    np.testing.assert_allclose(out["view_scores"][0, :, 0], [0.5, 0.9, 0.5, 0.9], atol=1e-6)


def _viewed(views: list[list[list]], meta: dict | None = None) -> Predictions:
    """Predictions of one image per row of `views` (each a list of views' boxes), with the first view as the boxes."""
    predictions = _predictions([image[0] for image in views], ["head"], meta)
    padded = [_predictions([image[j] for image in views], ["head"]).arrays for j in range(len(views[0]))]
    return Predictions(predictions.task, predictions.ids, {**predictions.arrays, **{
        f"view_{k}": np.stack([a[k] for a in padded], axis=1) for k in ("boxes", "scores", "labels")}},
        predictions.class_names, predictions.meta)


def _one_true_box(views: list[list[list]]) -> Predictions:
    """Out-of-fold predictions with views (`_viewed`) of images whose one true box is 10, 10, 30, 30; scored by wheat."""
    preds = _viewed(views, {"metric": "wheat", "nms_iou": 0.6})
    preds.targets = np.full((len(views), 1, 5), -1.0, np.float32)
    preds.targets[:, 0] = [10, 10, 30, 30, 0]
    return preds


def test_tune_fuses_tta_views_out_of_fold(tmp_path):
    # Each view misplaces the box by 4 px (IoU 0.67 with the truth: Global Wheat counts it at IoU 0.5-0.65 only);
    # fused at a WBF IoU up to their own overlap (0.43), the views' mean is the true box.
    preds = _one_true_box([[[[6, 10, 26, 30, 0.8, 0]], [[14, 10, 34, 30, 0.8, 0]]]] * 3)
    decisions, report = DetectionTask.tune(preds, tmp_path)
    assert report["wheat_tuned"] == pytest.approx(4 / 6) and report["wheat_fused"] == 1.0
    assert decisions["fusion_iou"] == 0.4 and decisions["threshold"] <= 0.8
    assert DetectionTask.score(DetectionTask.combine([preds.with_meta(**decisions)], "wbf"))["wheat"] == 1.0


def test_tune_says_when_fused_views_score_below_the_plain_view(tmp_path, capsys):
    # The second view sees the object elsewhere (as a model shown turned objects it never trained on might):
    # fused, the true box and the false one score alike, so no threshold separates them.
    _, report = DetectionTask.tune(_one_true_box([[[[10, 10, 30, 30, 0.9, 0]], [[60, 60, 80, 80, 0.9, 0]]]] * 2), tmp_path)
    assert report["wheat_tuned"] == 1.0 and report["wheat_fused"] == 0.5
    assert "score below the plain view" in capsys.readouterr().err


def test_ensemble_fuses_every_view_of_every_member():
    one = _viewed([[[[10, 10, 30, 30, 0.9, 0]], [[14, 10, 34, 30, 0.9, 0]]]], {"fusion_iou": 0.4, "threshold": 0.5})
    two = _viewed([[[[12, 10, 32, 30, 0.9, 0]], []]], {"fusion_iou": 0.4, "threshold": 0.5})
    fused = DetectionTask.combine([one, two], "wbf")
    box = image_predictions(fused)[0]
    np.testing.assert_allclose(box["boxes"], [[12, 10, 32, 30]], atol=1e-4)  # the mean of the three views' boxes
    np.testing.assert_allclose(box["scores"], [0.9 * 3 / 4], atol=1e-5)  # found in three of the four views
    assert "view_boxes" not in fused.arrays and fused.meta["threshold"] == 0.5


def test_predictions_are_made_with_the_decisions_cv_tuned(tmp_path):
    (tmp_path / "postprocess.json").write_text(json.dumps({"classes": ["head"], "decisions": {
        "nms_iou": 0.3, "threshold": 0.25, "fusion_iou": 0.7}, "scores": {}}))
    task = DetectionTask(num_classes=1, backbone="test_resnet", image_size=32, fpn_channels=32, head_convs=1,
                         postprocess=str(tmp_path / "postprocess.json"), class_names=["head"])
    assert {k: task.prediction_meta(None)[k] for k in ("nms_iou", "threshold", "fusion_iou")} == {
        "nms_iou": 0.3, "threshold": 0.25, "fusion_iou": 0.7}


def test_tune_finds_the_threshold_that_drops_false_boxes(tmp_path):
    truth = np.full((3, 1, 5), -1.0, np.float32)
    truth[:, 0] = [10, 10, 30, 30, 0]
    preds = _predictions([[[10, 10, 30, 30, 0.9, 0], [60, 60, 80, 80, 0.4, 0]]] * 3, ["a"], {"metric": "wheat", "threshold": 0.05})
    preds.targets = truth
    decisions, report = DetectionTask.tune(preds, tmp_path)
    assert 0.4 < decisions["threshold"] <= 0.9 and report["wheat_raw"] == pytest.approx(0.5) and report["wheat_tuned"] == 1.0
    assert json.loads((tmp_path / "postprocess.json").read_text())["decisions"] == decisions
    assert DetectionTask.score(preds.with_meta(**decisions))["wheat"] == 1.0


def test_score_command_metrics_of_prediction_strings():
    solution = pd.DataFrame({"image_id": ["a", "b"], "PredictionString": ["1.0 10 10 20 20", ""]})
    perfect = pd.DataFrame({"image_id": ["b", "a"], "PredictionString": ["", "0.8 10 10 20 20"]})
    empty = perfect.assign(PredictionString="")
    assert score_frames(perfect, solution, "wheat") == 1.0 and score_frames(empty, solution, "wheat") == 0.0
    assert score_frames(perfect, solution, "map_50") == pytest.approx(1.0)
    # x y w h: (10, 10, 30, 20) has IoU 0.5 with (10, 10, 30, 30): a TP for RSNA at 0.4, 0.45, 0.5 of 8
    # thresholds; for Global Wheat at 0.5 of 6
    half = perfect.assign(PredictionString=["", "0.8 10 10 20 10"])
    assert score_frames(half, solution, "rsna_boxes") == pytest.approx(3 / 8)
    assert score_frames(half, solution, "wheat") == pytest.approx(1 / 6)
    vin = pd.DataFrame({"image_id": ["a", "b"], "PredictionString": ["0 1.0 10 10 30 30", "14 1.0 0 0 1 1"]})
    guess = vin.assign(PredictionString=["0 0.7 10 10 30 30", "0 0.3 5 5 9 9"])
    # No finding is a class: missing it on b costs its AP (0), the finding on a is right (1).
    assert score_frames(guess, vin, "voc_map") == pytest.approx(0.5)
    assert score_frames(vin, vin, "voc_map") == pytest.approx(1.0)


class _Finder:
    class_names = ["a", "b"]

    def find_boxes(self, images: list[np.ndarray]) -> list[dict]:
        return [{"boxes": np.array([[2.0, 3.0, 12.0, 9.0], [30, 0, 40, 40]], np.float32),
                 "labels": np.array([1, 0]), "scores": np.array([0.9, 0.6], np.float32)} for _ in images]


def test_detect_then_crop_writes_a_full_resolution_crop_per_box(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), image[..., ::-1])
    rows, tiles = crop_detections(_Finder(), [tmp_path / "x.png"], tmp_path / "out", 0.1, 4, 4, 64)
    assert [r["image"] for r in rows] == ["x_0.png", "x_1.png"] and [r["class"] for r in rows] == ["b", "a"]
    assert rows[0]["x_min"] == 2.0 and rows[0]["source"] == "x.png" and len(tiles) == 1
    # Grown by 10 % of the box's width (1 px) and height (0.6 px) on each side, clamped to the image.
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "train" / "x_0.png"), image[2:10, 1:13])
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "train" / "x_1.png"), image[0:40, 29:40])


def test_crop_command_with_a_detection_checkpoint(tmp_path):
    task = DetectionTask(num_classes=1, backbone="test_resnet", image_size=32, fpn_channels=32, head_convs=1,
                         threshold=0.0, min_score=0.0, max_detections=3)
    torch.save({"state_dict": task.state_dict(), "inference_options": task.inference_defaults,
                "hyper_parameters": {**task.hparams, "_class_path": "lightning_cv.tasks.detection.DetectionTask"}},
               tmp_path / "m.ckpt")
    _images(tmp_path / "images", ["u.png", "v.png"], size=(48, 64))
    main(["crop", "--ckpt_path", str(tmp_path / "m.ckpt"), "--images", str(tmp_path / "images"), "--out", str(tmp_path / "out")])
    table = pd.read_csv(tmp_path / "out" / "crops.csv")
    assert list(table.columns) == ["image", "source", "class", "score", "x_min", "y_min", "x_max", "y_max"]
    assert len(table) == 6 and set(table["source"]) == {"u.png", "v.png"}  # three boxes each, untrained
    assert all((tmp_path / "out" / "train" / name).is_file() for name in table["image"])


def test_demo_field_boxes_every_head_and_no_leaf():
    """The wheat field's heads overlap by at most 30% of the smaller box each way, so none hides under another;
    its leaves are thin and not boxed: every box is head-shaped (elongated, not thin)."""
    from lightning_cv.data.demos import render_boxes

    rng = np.random.default_rng(3)
    for _ in range(20):
        image, boxes = render_boxes(rng, 96, 96, mean_objects=6.0, field=True)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        for i, a in enumerate(boxes):
            width, height = a[2] - a[0], a[3] - a[1]
            assert 0.3 < height / width < 3.5 and min(width, height) >= 4
            for b in boxes[i + 1:]:
                # the rule holds for the drawn shapes; their pixels' boxes may reach a pixel further each side
                across = min(a[2], b[2]) - max(a[0], b[0]) > 0.3 * min(width, b[2] - b[0]) + 2
                down = min(a[3], b[3]) - max(a[1], b[1]) > 0.3 * min(height, b[3] - b[1]) + 2
                assert not (across and down)


def test_box_decimals_are_checked_and_reach_the_predictions_meta(tmp_path):
    with pytest.raises(UserInputError, match="box_decimals"):
        DetectionDataModule(data_dir=str(tmp_path), box_decimals=-1)
    datamodule = DetectionDataModule(data_dir=str(tmp_path), box_style="conf_xywh", classes=["head"], box_decimals=2)
    assert DetectionTask(pretrained=False).prediction_meta(datamodule)["box_decimals"] == 2


def test_init_reads_both_demo_layouts(tmp_path):
    from lightning_cv.data.demos import make_detection

    make_detection(tmp_path / "wheat", n_train=12, n_test=3, size=(32, 32))
    for folder, metric, readers in (("wheat", "wheat", False), ("wheat-multiclass", "voc_map", True)):
        main(["init", str(tmp_path / folder), "--out", str(tmp_path / f"{folder}.yaml")])
        config = (tmp_path / f"{folder}.yaml").read_text()
        assert "DetectionDataModule" in config and f"metric: {metric}" in config and "sample_submission.csv" in config
        datamodule = DetectionDataModule(data_dir=str(tmp_path / folder), image_size=32)
        assert ("reader" in datamodule.table.frame.columns) == readers
