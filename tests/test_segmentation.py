"""Segmentation: mask sources (files, GIF, RLE CSV), checks, stride padding and mapping back, losses,
metrics, W&B mask panels, and a Carvana-like layout through the real CLI."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image
from specs import ROOT

from lightning_cv.cli import build_cli
from lightning_cv.data.segmentation import SegmentationDataModule
from lightning_cv.errors import DataError, UserInputError
from lightning_cv.io.masks import restore_mask, rle_decode, rle_encode
from lightning_cv.models.losses import segmentation_loss
from lightning_cv.predictions.files import Predictions
from lightning_cv.tasks.segmentation import SegmentationTask
from lightning_cv.training.callbacks import ValidationPictures

# Odd Carvana-like size (width 150, height 97): neither side divides by 32.
HEIGHT, WIDTH = 97, 150


def _ellipse_sample(rng: np.random.Generator, value: int = 255) -> tuple[np.ndarray, np.ndarray]:
    image = rng.integers(0, 60, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    center = (int(rng.integers(40, WIDTH - 40)), int(rng.integers(30, HEIGHT - 30)))
    cv2.ellipse(mask, center, (int(rng.integers(15, 35)), int(rng.integers(10, 25))), 0, 0, 360, value, -1)
    image[mask > 0] = (220, 200, 40)
    return image, mask


@pytest.fixture(scope="module")
def carvana(tmp_path_factory) -> Path:
    """jpg images of an odd size, `<id>_mask.gif` masks (written by PIL: OpenCV cannot write GIF) and
    the same masks as Carvana's `img,rle_mask` CSV; plus a test folder."""
    root = tmp_path_factory.mktemp("carvana")
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 12), ("test", 3)):
        (root / split).mkdir()
        (root / f"{split}_masks").mkdir()
        for i in range(n):
            image, mask = _ellipse_sample(rng)
            name = f"car{i:02d}_{split}"
            cv2.imwrite(str(root / split / f"{name}.jpg"), image[..., ::-1])
            Image.fromarray((mask > 0).astype(np.uint8)).convert("P").save(root / f"{split}_masks" / f"{name}_mask.gif")
            if split == "train":
                rows.append({"img": f"{name}.jpg", "rle_mask": rle_encode(mask > 0)})
    pd.DataFrame(rows).to_csv(root / "train_masks.csv", index=False)
    return root


def _dm(root: Path, **kwargs) -> SegmentationDataModule:
    return SegmentationDataModule(data_dir=str(root), **{"image_size": 40, "batch_size": 4, "num_workers": 0, **kwargs})


def test_gif_masks_and_rle_csv_give_the_same_samples(carvana):
    from_files = _dm(carvana)
    from_rle = _dm(carvana, rle_csv="train_masks.csv", id_col="img", rle_col="rle_mask")
    assert from_files.num_classes == from_rle.num_classes == 2
    for dm in (from_files, from_rle):
        dm.setup("fit")
    for split in ("train", "val"):
        a, b = from_files.datasets[split], from_rle.datasets[split]
        assert a.ids == b.ids
    a, b = from_files.datasets["val"][0], from_rle.datasets["val"][0]
    torch.testing.assert_close(a["target"], b["target"])
    # Resized to 40x40, padded to the 64x64 the encoders' stride needs; valid region and original size kept.
    assert a["image"].shape == (3, 64, 64) and a["target"].shape == (64, 64)
    assert a["valid"].tolist() == [40, 40] and a["size"].tolist() == [HEIGHT, WIDTH]
    assert set(a["target"].unique().tolist()) == {0, 1}
    assert a["target"][40:].sum() == 0 and a["target"][:, 40:].sum() == 0


def test_image_and_mask_are_augmented_together(carvana):
    dm = _dm(carvana, train_augment=[{"HorizontalFlip": {"p": 1.0}}], val_fraction=0.25)
    plain = _dm(carvana, val_fraction=0.25)
    dm.setup("fit")
    plain.setup("fit")
    flipped, original = dm.datasets["train"][0], plain.datasets["train"][0]
    torch.testing.assert_close(flipped["target"][:40, :40], original["target"][:40, :40].flip(-1))
    torch.testing.assert_close(flipped["image"][:, :40, :40], original["image"][:, :40, :40].flip(-1))


def test_multiclass_masks_set_num_classes(tmp_path):
    rng = np.random.default_rng(1)
    for d in ("train", "train_masks"):
        (tmp_path / d).mkdir()
    for i in range(5):
        image, mask = _ellipse_sample(rng, value=1)
        mask[:10, :10] = 3
        cv2.imwrite(str(tmp_path / "train" / f"{i}.png"), image)
        cv2.imwrite(str(tmp_path / "train_masks" / f"{i}.png"), mask)
    dm = _dm(tmp_path, mask_suffix="")
    assert dm.num_classes == 4 and dm.class_names[0] == "background"
    dm.setup("fit")
    assert dm.datasets["train"][0]["target"].max() == 3
    # Declared classes that the masks exceed: one line naming the mask file.
    with pytest.raises(DataError, match=r"train_masks/\d\.png: mask value 3"):
        _dm(tmp_path, mask_suffix="", classes=["bg", "a", "b"]).setup("fit")


def test_data_errors_name_the_file(carvana, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(carvana, root)
    (root / "train_masks" / "car03_train_mask.gif").unlink()
    with pytest.raises(DataError, match="car03_train.jpg: no mask"):
        _dm(root).setup("fit")
    Image.fromarray(np.zeros((10, 10), np.uint8)).convert("P").save(root / "train_masks" / "car03_train_mask.gif")
    with pytest.raises(DataError, match="car03_train_mask.gif: mask is 10x10 but its image car03_train.jpg is 97x150"):
        _dm(root).setup("fit")
    frame = pd.read_csv(root / "train_masks.csv").iloc[1:]
    frame.to_csv(root / "short.csv", index=False)
    with pytest.raises(DataError, match="car00_train.jpg: no row with img 'car00_train'"):
        _dm(root, rle_csv="short.csv", id_col="img").setup("fit")
    with pytest.raises(DataError, match="missing column"):
        _dm(root, rle_csv="short.csv").setup("fit")


def test_restore_mask_maps_back_to_the_original_size():
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[20:70, 30:120] = 1
    small = cv2.resize(mask.astype(np.float32), (40, 40), interpolation=cv2.INTER_AREA)
    restored = restore_mask(small[None], (HEIGHT, WIDTH), binary=True)
    assert restored.shape == (HEIGHT, WIDTH)
    assert (restored == mask).mean() > 0.97
    probs = np.stack([1 - small, small * 0.2, small * 0.8])
    assert restore_mask(probs, (HEIGHT, WIDTH), binary=False).max() == 2


@pytest.mark.parametrize("name", ["dice", "bce", "bce+dice", "focal", "lovasz"])
def test_binary_losses_are_float32_and_finite(name):
    loss = segmentation_loss(name, num_classes=2)
    logits = torch.randn(2, 1, 8, 8).half()
    value = loss(logits, (torch.rand(2, 8, 8) > 0.5).long())
    assert value.dtype == torch.float32 and torch.isfinite(value)


@pytest.mark.parametrize("name", ["ce", "dice", "ce+dice", "focal", "lovasz"])
def test_multiclass_losses(name):
    value = segmentation_loss(name, num_classes=3)(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8)))
    assert torch.isfinite(value)


def test_loss_names_are_checked():
    with pytest.raises(UserInputError, match="Did you mean dice"):
        segmentation_loss("dise", 2)
    with pytest.raises(UserInputError, match="binary"):
        segmentation_loss("bce", 3)


def test_multiclass_metrics_per_class():
    task = SegmentationTask(num_classes=3, class_names=["bg", "car", "road"], encoder="tu-test_resnet", image_size=32).eval()
    target = torch.zeros(2, 32, 32, dtype=torch.long)
    target[:, :10] = 1
    target[:, 20:] = 2
    outputs = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 10
    outputs[1, :, :5] = torch.tensor([10.0, 0, 0])[:, None, None]  # half of image 1's "car" rows missed
    task.val_metrics.update(*task.metric_inputs(outputs, {"target": target}))
    computed = task.val_metrics.compute()
    assert set(computed) >= {"val/dice", "val/iou", "val/pixel_acc", "val/dice_car", "val/iou_road"}
    assert computed["val/iou_road"] == 1.0
    assert computed["val/iou_car"] == pytest.approx(15 / 20)
    assert computed["val/dice"] == pytest.approx((2 * 15 / 35 + 1.0) / 2)


def _validation_epoch(tmp_path: Path, task: SegmentationTask, batch: dict, outputs: torch.Tensor) -> mock.Mock:
    """One validation epoch of the pictures callback on `batch`, its pictures under tmp_path; the W&B logger mock."""
    wandb = mock.Mock(spec=WandbLogger)
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, default_root_dir=str(tmp_path),
                              loggers=[wandb], current_epoch=0, global_step=5)
    callback = ValidationPictures()
    callback.on_validation_batch_end(trainer, task, {"outputs": outputs}, batch, 0)
    callback.on_validation_epoch_end(trainer, task)
    return wandb


def test_pictures_and_wandb_mask_panels(tmp_path):
    from specs import _seg_batch

    task = SegmentationTask(num_classes=2, encoder="tu-test_resnet", image_size=32).eval()
    batch = _seg_batch(3)
    with torch.no_grad():
        outputs = task(batch["image"])
    wandb = _validation_epoch(tmp_path, task, batch, outputs)
    assert (tmp_path / "pictures" / "examples_epoch000.png").is_file()
    panels = [c.kwargs for c in wandb.log_image.call_args_list if c.kwargs.get("key") == "val/masks"]
    assert len(panels) == 1 and len(panels[0]["images"]) == 3
    gt = panels[0]["masks"][0]["gt"]["mask_data"]
    assert gt.shape == (32, 32) and gt.dtype.kind == "i"
    np.testing.assert_array_equal(gt, batch["target"][0].numpy())


def test_pictures_and_wandb_panels_of_large_images_are_at_most_1024_px(tmp_path):
    """1536x2048 validation images: the PNG and the W&B panels (images and masks alike) are shrunk to 1024 px
    on the longer side; the picture's top-left 1024 px at full resolution is written beside it."""
    task = SegmentationTask(num_classes=2, encoder="tu-test_resnet", image_size=[1536, 2048]).eval()
    target = torch.zeros(1, 1536, 2048, dtype=torch.long)
    target[:, 700:900, 1000:1300] = 1
    batch = {"image": target[:, None].float().repeat(1, 3, 1, 1), "target": target, "id": ["big"],
             "index": torch.arange(1), "valid": torch.tensor([[1536, 2048]])}
    outputs = target[:, None].float() * 8 - 4  # logits: the truth
    wandb = _validation_epoch(tmp_path, task, batch, outputs)
    picture = cv2.imread(str(tmp_path / "pictures" / "examples_epoch000.png"))
    crop = cv2.imread(str(tmp_path / "pictures" / "examples_epoch000_crop.png"))
    assert max(picture.shape[:2]) == 1024 and crop.shape[:2] == (1024, 1024)
    panel = next(c.kwargs for c in wandb.log_image.call_args_list if c.kwargs.get("key") == "val/masks")
    image, gt = panel["images"][0], panel["masks"][0]["gt"]["mask_data"]
    assert image.shape == (768, 1024, 3) and gt.shape == (768, 1024)
    assert set(np.unique(gt)) == {0, 1} and gt[350:450, 500:650].all()  # nearest: still class indices, in place


def test_carvana_layout_through_the_cli(carvana, tmp_path):
    """Only --data.* options change (the smaller encoder only keeps the test fast); predictions come
    back at each image's original size."""
    data = ["--model.encoder", "tu-test_resnet", "--data.data_dir", str(carvana), "--data.image_size", "48", "--data.batch_size", "4",
            "--data.rle_csv", "train_masks.csv", "--data.id_col", "img"]
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    config = ["--config", str(ROOT / "configs" / "seg.yaml")]
    run = tmp_path / "run"
    cli = build_cli(["fit", *config, *data, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                     "--trainer.default_root_dir", str(run)])
    assert "val/dice" in cli.trainer.callback_metrics
    pred = tmp_path / "pred"
    build_cli(["predict", *config, *data, *quiet, "--data.predict_dir", str(carvana / "test"),
               "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--trainer.default_root_dir", str(pred)])
    submission = pd.read_csv(pred / "submission.csv", keep_default_na=False)
    assert list(submission.columns) == ["id", "rle_mask"]
    assert sorted(submission["id"]) == [f"car{i:02d}_test" for i in range(3)]
    for row in submission.itertuples():
        png = cv2.imread(str(pred / "masks" / f"{row.id}.png"), cv2.IMREAD_GRAYSCALE)
        assert png.shape == (HEIGHT, WIDTH)
        np.testing.assert_array_equal(rle_decode(row.rle_mask, (HEIGHT, WIDTH)), (png > 0).astype(np.uint8))


def test_wandb_prediction_table_at_the_end_of_fit(tmp_path):
    """The last validation epoch's first batch goes to W&B as a Table: image with true and predicted masks
    (wandb.Image) and the image's Dice; classification gives image, truth, prediction, probability."""
    import wandb as wandb_module
    from specs import _seg_batch

    from lightning_cv.tasks import ClassificationTask

    wandb = mock.Mock(spec=WandbLogger)
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, default_root_dir=str(tmp_path),
                              loggers=[wandb], current_epoch=0, global_step=5)
    batch = _seg_batch(3)
    for task, columns in ((SegmentationTask(num_classes=2, encoder="tu-test_resnet", image_size=32).eval(), ["image", "dice"]),
                          (ClassificationTask(num_classes=2, backbone="test_resnet", image_size=32).eval(),
                           ["image", "truth", "prediction", "probability"])):
        callback = ValidationPictures()
        with torch.no_grad():
            outputs = task(batch["image"])
        cls_batch = batch if columns == ["image", "dice"] else {**batch, "target": torch.tensor([0, 1, 1])}
        callback.on_validation_batch_end(trainer, task, {"outputs": outputs}, cls_batch, 0)
        callback.on_validation_epoch_end(trainer, task)
        callback.on_fit_end(trainer, task)
        table = wandb.log_table.call_args.kwargs
        assert table["key"] == "val/predictions" and table["columns"] == columns and len(table["data"]) == 3
        assert isinstance(table["data"][0][0], wandb_module.Image)
        assert 0.0 <= table["data"][0][-1] <= 1.0


def _wide_sample(root: Path) -> np.ndarray:
    """One 60x150 image (a wide plate) whose object sits at its right end, and its 0/255 mask."""
    for d in ("train", "train_masks"):
        (root / d).mkdir(parents=True, exist_ok=True)
    mask = np.zeros((60, 150), np.uint8)
    mask[10:50, 110:140] = 255
    image = np.full((60, 150, 3), 40, np.uint8)
    image[mask > 0] = 220
    cv2.imwrite(str(root / "train" / "wide.png"), image)
    cv2.imwrite(str(root / "train_masks" / "wide.png"), mask)
    return mask > 0


def test_keep_aspect_letterboxes_and_maps_back_exactly(tmp_path):
    """--data.keep_aspect: the 60x150 plate is fitted into 64x64 as 26x64 (not stretched), padded with
    background; its mask, as predicted at model resolution, comes back at 60x150 with the object where it was."""
    truth = _wide_sample(tmp_path)
    dm = SegmentationDataModule(str(tmp_path), image_size=64, mask_suffix="", keep_aspect=True)
    stretched = SegmentationDataModule(str(tmp_path), image_size=64, mask_suffix="")
    rows = dm.labelled_rows()
    sample = dm.build_dataset(rows, None)[0]
    assert tuple(sample["image"].shape) == (3, 64, 64) and sample["size"].tolist() == [60, 150]
    target = sample["target"].numpy()
    assert target[26:].sum() == 0 and sample["image"][:, 26:].abs().sum() == 0  # the padding: background
    # Rows 10..50 of 60 -> 4.3..21.3 of 26, columns 110..140 of 150 -> 46.9..59.7 of 64: one scale, aspect kept.
    assert target[5:21, 47:59].all() and target[:4].sum() == target[22:].sum() == 0
    assert stretched.build_dataset(stretched.labelled_rows(), None)[0]["target"][11:53, 47:59].all()  # rows -> 10.7..53.3
    probs = torch.from_numpy(target[None, None].astype(np.float32))
    task = SegmentationTask(num_classes=2, encoder="tu-test_resnet", image_size=64)
    predictions = Predictions("seg", np.array(["wide"]), {"probs": probs.numpy(), "size": np.array([[60, 150]])},
                              ["background", "foreground"], task.prediction_meta(dm))
    SegmentationTask.write_outputs(predictions, tmp_path / "out", None)
    png = cv2.imread(str(tmp_path / "out" / "masks" / "wide.png"), cv2.IMREAD_GRAYSCALE)
    assert png.shape == (60, 150)
    rows, cols = np.nonzero(png)
    # Within a model pixel (150 / 64 = 2.3 original pixels) of the object's box rows 10..49, columns 110..139.
    assert np.allclose([rows.min(), rows.max(), cols.min(), cols.max()], [10, 49, 110, 139], atol=2.5)
    assert ((png > 0) & truth).sum() / ((png > 0) | truth).sum() > 0.85
    # Without dropping the padding, the mask would come back squashed into the top of the image.
    wrong = next(SegmentationTask.masks(predictions.with_meta(keep_aspect=False)))
    assert (wrong.astype(bool) & truth).sum() / (wrong.astype(bool) | truth).sum() < 0.5
    with pytest.raises(DataError, match="keep_aspect"):
        SegmentationTask.combine([predictions, predictions.with_meta(keep_aspect=False)])


def test_crops_train_whole_images_validate(carvana):
    """--data.crop: training samples are random crops of the resized image, validation sees it whole;
    bad crops are one-line errors."""
    dm = _dm(carvana, image_size=[64, 96], keep_aspect=True, crop=[32, 64], val_fraction=0.25)
    dm.setup("fit")
    train, val = dm.datasets["train"][0], dm.datasets["val"][0]
    assert tuple(train["image"].shape) == (3, 32, 64) and tuple(train["target"].shape) == (32, 64)
    assert train["valid"].tolist() == [32, 64]
    assert tuple(val["image"].shape) == (3, 64, 96) and val["valid"].tolist() == [64, 96]
    assert val["size"].tolist() == [HEIGHT, WIDTH]
    for crop, message in (([32, 40], "multiples of 32"), (128, r"larger than --data.image_size \[64, 96\]"),
                          ([0, 32], "one side or")):
        with pytest.raises(UserInputError, match=message):
            _dm(carvana, image_size=[64, 96], crop=crop)
    # seg.yaml's RandomRotate90 would make 64x32 samples of 32x64 crops.
    turning = [{"OneOf": {"p": 0.5, "transforms": [{"RandomRotate90": {"p": 1.0}}]}}]
    with pytest.raises(UserInputError, match="RandomRotate90 turns 32x64 training samples into 64x32"):
        _dm(carvana, image_size=[64, 96], crop=[32, 64], train_augment=turning).setup("fit")


def test_crops_keep_aspect_and_tiles_through_the_cli(carvana, tmp_path):
    """fit on 32x64 crops of letterboxed 64x96 images, validated whole by 64-px tiles, the best checkpoint
    picked by val/f2_instances; predict maps masks back to each image's 97x150."""
    from lightning_cv.models import tiling

    data = ["--config", str(ROOT / "configs" / "seg.yaml"), "--model.encoder", "tu-test_resnet", "--data.data_dir",
            str(carvana), "--data.image_size", "[64, 96]", "--data.keep_aspect", "true", "--data.crop", "[32, 64]",
            "--data.batch_size", "4", "--model.tile_size", "64", "--data.train_augment", '[{"HorizontalFlip": {"p": 0.5}}]',
            "--model.monitor", "val/f2_instances"]
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    run, pred = tmp_path / "run", tmp_path / "pred"
    with mock.patch("lightning_cv.tasks.segmentation.predict_tiled", wraps=tiling.predict_tiled) as tiled:
        cli = build_cli(["fit", *data, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                         "--trainer.default_root_dir", str(run)])
        assert tiled.call_count > 0 and tuple(tiled.call_args.args[1].shape[-2:]) == (64, 96)
    assert cli.datamodule.datasets["train"][0]["image"].shape[-2:] == (32, 64)
    assert {"val/dice", "val/f2_instances"} <= set(cli.trainer.callback_metrics)
    assert cli.trainer.checkpoint_callback.monitor == "val/f2_instances"  # picks the best checkpoint
    build_cli(["predict", *data, *quiet, "--data.predict_dir", str(carvana / "test"),
               "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--trainer.default_root_dir", str(pred)])
    submission = pd.read_csv(pred / "submission.csv", keep_default_na=False)
    assert len(submission) == 3
    for row in submission.itertuples():
        png = cv2.imread(str(pred / "masks" / f"{row.id}.png"), cv2.IMREAD_GRAYSCALE)
        assert png.shape == (HEIGHT, WIDTH)
        np.testing.assert_array_equal(rle_decode(row.rle_mask, (HEIGHT, WIDTH)), (png > 0).astype(np.uint8))


def test_f2_instances_is_a_validation_metric_equal_to_score():
    """val/f2_instances (binary masks): Airbus' per-image F2 of connected components, as `score --metric
    f2_instances` computes it from a row per instance."""
    from lightning_cv.cli.commands.score import score_frames

    truth, pred = np.zeros((3, 16, 16), np.int64), np.zeros((3, 16, 16), np.int64)
    truth[0, 1:5, 1:5] = truth[0, 9:14, 9:14] = 1  # two ships: one found exactly, one missed, one false alarm
    pred[0, 1:5, 1:5] = pred[0, 9:12, 1:4] = 1
    truth[2, 4:8, 4:8] = 1  # a ship not found; image 1: nothing to find, nothing found
    task = SegmentationTask(num_classes=2, encoder="tu-test_resnet", image_size=16).eval()
    task.val_metrics.update(torch.from_numpy(pred), torch.from_numpy(truth))
    value = float(task.val_metrics.compute()["val/f2_instances"])
    assert value == pytest.approx((5 / (5 + 4 + 1) + 1 + 0) / 3)

    def rows(masks):
        out = []
        for i, mask in enumerate(masks):
            count, labels = cv2.connectedComponents(mask.astype(np.uint8))
            out += [(f"im{i}", rle_encode(labels == k, "F")) for k in range(1, count)] or [(f"im{i}", "")]
        return pd.DataFrame(out, columns=["ImageId", "EncodedPixels"])

    assert score_frames(rows(pred), rows(truth), "f2_instances") == pytest.approx(value)


def test_binary_postprocess_tuned_on_oof_empties_specks_and_is_applied(tmp_path):
    """Out-of-fold binary masks with 4-px false positives on the empty images: `tune` finds a minimum area
    that empties them (mean Dice over images 0.5 -> 1.0), saves postprocess.json, and the masks a
    submission is written from apply it, as `ensemble` and `predict --model.postprocess` do."""
    from lightning_cv.predictions.decisions import load_decisions

    n, size = 20, 16
    probs = np.zeros((n, 1, size, size), np.float16)
    targets = np.zeros((n, size, size), np.int64)
    targets[:10, 4:12, 4:12] = 1
    probs[:10, 0, 4:12, 4:12] = 0.9                      # right where there is an object
    probs[10:, 0, 0:2, 0:2] = 0.8                        # 4-px specks on the empty ones
    predictions = Predictions("seg", np.array([f"im{i}" for i in range(n)]),
                              {"probs": probs, "size": np.full((n, 2), size)}, ["background", "foreground"],
                              {"threshold": 0.5, "min_area": 0}, targets)
    decisions, report = SegmentationTask.tune(predictions, tmp_path)
    assert report["dice_mean_raw"] == pytest.approx(0.5) and report["dice_mean_tuned"] == pytest.approx(1.0)
    assert 4 < decisions["min_area"] <= 64 and load_decisions(tmp_path / "postprocess.json", ["foreground"]) == decisions
    masks = list(SegmentationTask.masks(predictions.with_meta(**decisions)))
    assert all(m.any() for m in masks[:10]) and not any(m.any() for m in masks[10:])
    assert any(m.any() for m in SegmentationTask.masks(predictions))  # without it, the specks stay
    # Class-index masks have nothing to tune.
    multi = Predictions("seg", predictions.ids, {"probs": np.zeros((n, 3, 4, 4), np.float16), "size": np.full((n, 2), 4)},
                        ["background", "a", "b"], {}, np.zeros((n, 4, 4), np.int64))
    assert SegmentationTask.tune(multi, tmp_path / "m") == ({}, {})


def test_largest_component_rule_empties_scattered_noise_that_outnumbers_small_objects(tmp_path):
    """TGS's rule: empty images sprinkled with 256 one-pixel specks, true objects of 36 px. No pixel count
    separates them (256 > 36), the largest component does (1 < 36): tune picks it (mean Dice 0.5 -> 1.0)
    and the masks apply it."""
    n, size = 12, 32
    probs = np.zeros((n, 1, size, size), np.float16)
    targets = np.zeros((n, size, size), np.int64)
    targets[:6, 10:16, 10:16] = 1
    probs[:6, 0, 10:16, 10:16] = 0.9
    probs[6:, 0, ::2, ::2] = 0.8                         # isolated specks, 8-connected apart
    predictions = Predictions("seg", np.array([f"im{i}" for i in range(n)]),
                              {"probs": probs, "size": np.full((n, 2), size)}, ["background", "foreground"],
                              {"threshold": 0.5, "min_area": 0}, targets)
    decisions, report = SegmentationTask.tune(predictions, tmp_path)
    assert report["dice_mean_raw"] == pytest.approx(0.5) and report["dice_mean_tuned"] == pytest.approx(1.0)
    assert decisions["min_area"] == 0 and 1 < decisions["min_component"] <= 36
    masks = list(SegmentationTask.masks(predictions.with_meta(**decisions)))
    assert all(m.any() for m in masks[:6]) and not any(m.any() for m in masks[6:])
