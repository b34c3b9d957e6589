"""Box regression: geometry, CSV checks, boxes through letterbox and augmentations, loss and metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lightning_cv.data.augment import build_pipeline, letterbox
from lightning_cv.data.bbox import BBoxCropDataModule, BoxDataset, check_boxes
from lightning_cv.errors import DataError, UserInputError
from lightning_cv.io.boxes import letterbox_shape, original_square, square_target
from lightning_cv.io.images import write_csv
from lightning_cv.models.losses import box_loss
from lightning_cv.tasks.bbox import BBoxCropTask, MeanIoU, square_iou


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("hw", [(480, 640), (333, 500), (97, 61), (64, 64)])
def test_letterbox_shape_matches_the_pipeline(hw):
    out = build_pipeline(None, pre=letterbox(64)[:1])(image=_image(*hw))["image"]
    assert tuple(out.shape[1:]) == letterbox_shape(*hw, 64)


@pytest.mark.parametrize("hw,square", [((480, 640), (100, 50, 200)), ((333, 500), (0, 120, 213)), ((600, 300), (40, 300, 250))])
def test_letterboxed_box_maps_back_to_the_original(hw, square):
    x, y, s = square
    out = build_pipeline(None, pre=letterbox(64), bboxes=True)(image=_image(*hw), bboxes=np.array([[x, y, x + s, y + s]], np.float32), labels=[0])
    target = square_target(out["bboxes"][0], 64)
    back = original_square(target, *hw, 64)
    tolerance = max(hw) / 64  # one letterbox pixel
    assert np.abs(np.array(back) - np.array(square)).max() <= tolerance


def _frame(rows):
    return pd.DataFrame(rows, columns=["image", "x", "y", "size"]).astype(str)


def test_check_boxes_names_bad_rows_and_clamps_border_crossing(tmp_path):
    sizes = [(100, 200)] * 3
    ok = check_boxes(_frame([("a", 10, 10, 50), ("b", -5, 80, 30), ("c", 190, 0, 20)]), sizes, tmp_path / "t.csv")
    np.testing.assert_allclose(ok, [[10, 10, 60, 60], [0, 80, 25, 100], [190, 0, 200, 20]])
    with pytest.raises(DataError, match=r"row 3 \(b\).*numbers"):
        check_boxes(_frame([("a", 10, 10, 50), ("b", "nan", 10, 5)]), sizes[:2], tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"row 2 \(a\).*outside the 200x100 image"):
        check_boxes(_frame([("a", 250, 10, 20)]), sizes[:1], tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"row 2 \(a\).*positive"):
        check_boxes(_frame([("a", 5, 10, 0)]), sizes[:1], tmp_path / "t.csv")


def test_flip_moves_the_target_and_affine_never_drops_the_box():
    image = _image(120, 160)
    box = np.array([[20, 30, 80, 90]], np.float32)
    plain = BoxDataset([0], box, build_pipeline(None, pre=letterbox(32), bboxes=True), 32, [(120, 160)], ["a"], reader=lambda i: image)
    flip = BoxDataset([0], box, build_pipeline([{"HorizontalFlip": {"p": 1.0}}], pre=letterbox(32), bboxes=True), 32,
                      [(120, 160)], ["a"], reader=lambda i: image)
    t0, t1 = plain[0]["target"], flip[0]["target"]
    torch.testing.assert_close(t1, torch.stack([1 - t0[0], t0[1], t0[2]]))
    shaky = BoxDataset([0], box, build_pipeline([{"Affine": {"translate_percent": [-0.45, 0.45], "scale": [0.7, 1.5], "p": 1.0}}],
                                                pre=letterbox(32), bboxes=True, seed=0), 32, [(120, 160)], ["a"], reader=lambda i: image)
    targets = torch.stack([shaky[0]["target"] for _ in range(30)])
    assert ((targets >= 0) & (targets <= 1)).all() and (targets[:, 2] > 0).all()
    assert targets[:, 0].std() > 0.05  # the box moved with the image


@pytest.fixture(scope="module")
def box_dir(tmp_path_factory):
    from lightning_cv.data.demos import make_bbox

    root = tmp_path_factory.mktemp("bbox")
    make_bbox(root, n_train=10, n_test=2, size=(90, 120), seed=3, image_ext=".png")
    return root


def test_cached_and_uncached_loading_agree(box_dir):
    samples = []
    for cache in ("memmap", "none"):
        dm = BBoxCropDataModule(str(box_dir), image_size=32, batch_size=4, cache=cache)
        dm.setup("fit")
        samples.append([dm.datasets["val"][i] for i in range(len(dm.datasets["val"]))])
    assert dm.num_classes == 1 and dm.class_names == ["object"]
    for a, b in zip(*samples):
        torch.testing.assert_close(a["target"], b["target"])
        torch.testing.assert_close(a["image"], b["image"])
        assert a["orig_size"].tolist() == [90, 120]


def test_setup_reports_a_bad_row(box_dir, tmp_path):
    frame = pd.read_csv(box_dir / "train.csv")
    frame.loc[4, "x"] = 5000
    write_csv(frame, box_dir / "broken.csv")
    with pytest.raises(DataError, match="broken.csv: row 6"):
        BBoxCropDataModule(str(box_dir), csv="broken.csv").setup("fit")


def test_losses_by_name_and_iou_metrics():
    a = torch.tensor([[0.5, 0.5, 0.5], [0.3, 0.3, 0.2]])
    b = torch.tensor([[0.5, 0.5, 0.25], [0.8, 0.8, 0.2]])
    torch.testing.assert_close(square_iou(a, b), torch.tensor([0.25, 0.0]))
    for name in ("smooth_l1", "mse", "giou", "giou_smooth_l1"):
        loss = box_loss(name)
        assert loss(a, a).item() == pytest.approx(0.0, abs=1e-5)
        assert loss(a, b).item() > 0
    with pytest.raises(UserInputError, match="giou"):
        box_loss("gio")
    iou, hit = MeanIoU(), MeanIoU(threshold=0.2)
    iou.update(a, b)
    hit.update(a, b)
    assert iou.compute().item() == pytest.approx(0.125) and hit.compute().item() == pytest.approx(0.5)


@pytest.mark.parametrize("head", ["softargmax", "pool"])
def test_heads_predict_squares_inside_the_image_and_draw(head):
    task = BBoxCropTask(backbone="test_resnet", head=head, image_size=32).eval()
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = task(images)
    assert out.shape == (3, 3) and ((out >= -0.05) & (out <= 1.05)).all()
    picture = task.draw_validation({"image": images, "target": torch.tensor([[0.5, 0.5, 0.4]] * 3)}, out)
    assert picture.ndim == 3 and picture.dtype == np.uint8
    assert (picture[..., 1] > 150).any()  # the green true box is drawn


def test_feature_stride_cuts_the_backbone_for_a_finer_heatmap():
    full = BBoxCropTask(backbone="resnet10t", image_size=64)
    cut = BBoxCropTask(backbone="resnet10t", feature_stride=16, image_size=64)
    grids = []
    cut.model.head.heat.register_forward_hook(lambda module, args, out: grids.append(tuple(out.shape[-2:])))
    out = cut(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 3) and grids == [(4, 4)]  # stride 32 would leave 2x2
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in full.parameters()) / 2  # layer4 is gone
    with pytest.raises(UserInputError, match=r"feature_stride 12.*\[2, 4, 8, 16, 32\]"):
        BBoxCropTask(backbone="resnet10t", feature_stride=12)


def test_corrected_boxes_csv_trains_again(box_dir, tmp_path):
    frame = pd.read_csv(box_dir / "train.csv")[["image", "x", "y", "size"]]
    frame["x"] = frame["x"] + 1  # a reviewer's correction
    write_csv(frame, tmp_path / "boxes.csv")
    dm = BBoxCropDataModule(str(tmp_path), csv="boxes.csv", image_dir=str(box_dir / "train"), image_size=32)
    dm.setup("fit")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == len(frame)
