"""The crop tool: box mapping and clamped crops, then the command end to end on a tiny checkpoint."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
from specs import ROOT

from lightning_cv.cli import main
from lightning_cv.data.bbox import BBoxCropDataModule
from lightning_cv.data.classification import ClassificationDataModule
from lightning_cv.io.boxes import clamp_box, crop, expand_square, fit_square
from lightning_cv.io.images import read_image
from lightning_cv.tasks.bbox import BBoxCropTask


def test_crop_is_the_slice_and_clamps_at_the_borders():
    image = np.arange(50 * 80 * 3, dtype=np.uint32).reshape(50, 80, 3)
    np.testing.assert_array_equal(crop(image, (10, 5, 30, 25)), image[5:25, 10:30])
    np.testing.assert_array_equal(crop(image, (-12, 40, 20, 72)), image[40:50, 0:20])  # bottom-left corner
    np.testing.assert_array_equal(crop(image, (70.4, -3.2, 95.5, 9.9)), image[0:10, 70:80])  # fractions widen
    assert crop(image, (100, 60, 120, 90)).size == 0  # wholly outside: empty, no error
    assert clamp_box(-5, -5, 500, 500, 50, 80) == (0, 0, 80, 50)


def test_square_fitting_and_margin():
    assert fit_square(-10.4, 45.6, 20.2, 50, 80) == (0, 30, 20)  # moved inside, whole pixels
    assert fit_square(10, 10, 90, 50, 80) == (30, 0, 50)  # larger than the image: shrunk about its centre
    assert expand_square(10, 20, 30, 0.1) == pytest.approx((7, 17, 36))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from lightning_cv.data.demos import make_bbox

    # The crop test checks geometry, not accuracy: one optimiser step of the tiniest model makes a real checkpoint.
    root = tmp_path_factory.mktemp("crop")
    make_bbox(root / "data", n_train=4, n_test=6, size=(90, 120), seed=4, image_ext=".png")
    dm = BBoxCropDataModule(str(root / "data"), image_size=32, batch_size=2, val_fraction=0.25, cache="none")
    task = BBoxCropTask(num_classes=1, class_names=dm.class_names, backbone="test_resnet", image_size=32)
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root)
    trainer.fit(task, dm)
    trainer.save_checkpoint(root / "box.ckpt")
    return root


def test_crop_command_writes_full_resolution_crops_boxes_and_sheet(checkpoint, tmp_path):
    data, out = checkpoint / "data", tmp_path / "crops"
    main(["crop", "--ckpt_path", str(checkpoint / "box.ckpt"), "--config", str(ROOT / "configs" / "bbox.yaml"),
          "--images", str(data / "test"), "--out", str(out),
          "--margin", "0.2"])
    boxes = pd.read_csv(out / "boxes.csv")
    assert list(boxes.columns) == ["image", "x", "y", "size"]
    assert sorted(boxes["image"]) == sorted(p.name for p in (data / "test").iterdir())
    assert read_image(out / "contact_sheet.png").ndim == 3
    for row in boxes.itertuples():
        original = read_image(data / "test" / row.image)
        height, width = original.shape[:2]
        assert 0 <= row.x <= width - row.size and 0 <= row.y <= height - row.size  # a valid training row
        x0, y0, side = expand_square(row.x, row.y, row.size, 0.2)
        expected = original[max(int(np.floor(y0)), 0) : int(np.ceil(y0 + side)), max(int(np.floor(x0)), 0) : int(np.ceil(x0 + side))]
        np.testing.assert_array_equal(read_image(out / "train" / row.image), expected)

    # The reviewed boxes train the box model again as is...
    again = BBoxCropDataModule(str(out), csv="boxes.csv", image_dir=str(data / "test"), image_size=32, val_fraction=0.4)
    again.setup("fit")
    assert len(again.datasets["train"]) + len(again.datasets["val"]) == len(boxes)
    # ...and the crops plus a labels CSV are a classification dataset.
    labels = pd.read_csv(data / "solution.csv")[["image"]].assign(label=lambda f: ["a", "b"] * (len(f) // 2))
    labels.to_csv(out / "train.csv", index=False)
    classify = ClassificationDataModule(str(out), image_size=32, val_fraction=0.4)
    classify.setup("fit")
    assert len(classify.datasets["train"]) + len(classify.datasets["val"]) == len(boxes)


def test_crop_command_reports_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["crop", "--ckpt_path", str(tmp_path / "none.ckpt"), "--images", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "none.ckpt does not exist" in capsys.readouterr().err


def test_crop_command_never_writes_over_its_images(tmp_path, capsys):
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "box.ckpt").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main(["crop", "--ckpt_path", str(tmp_path / "box.ckpt"), "--images", str(tmp_path / "data" / "train"),
              "--out", str(tmp_path / "data")])
    assert exit_info.value.code == 2
    assert "would replace the images" in capsys.readouterr().err
