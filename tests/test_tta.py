"""TTA: views invert exactly, equivariant models gain nothing and lose nothing, tasks average probabilities."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_cv.models.tta import probabilities, tta_logits, tta_probabilities, views
from lightning_cv.tasks import ClassificationTask


@pytest.mark.parametrize("mode", ["none", "hflip", "flip", "d4"])
def test_every_view_is_inverted(mode):
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    chosen = views(mode)
    assert len(chosen) == {"none": 1, "hflip": 2, "flip": 3, "d4": 8}[mode]
    seen = set()
    for transform, inverse in chosen:
        y = transform(x)
        torch.testing.assert_close(inverse(y), x)
        seen.add(tuple(y.flatten().tolist()))
    assert len(seen) == len(chosen)  # all views differ


class PointwiseSeg(nn.Module):
    """1x1 convolutions only: rotating or flipping the input rotates or flips the output (equivariant)."""

    def __init__(self, classes: int):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, classes, 1))

    def forward(self, x):
        return self.net(x)


class PooledCls(PointwiseSeg):
    """Pointwise features averaged over the image: invariant to flips and rotations."""

    def forward(self, x):
        return self.net(x).mean(dim=(2, 3))


@pytest.mark.parametrize("mode", ["hflip", "flip", "d4"])
def test_equivariant_models_give_identical_tta_and_plain_outputs(mode):
    x = torch.rand(2, 3, 8, 8)
    cls = PooledCls(4)
    torch.testing.assert_close(tta_probabilities(cls, x, mode), probabilities(cls(x), "softmax"))
    seg = PointwiseSeg(1)
    torch.testing.assert_close(tta_probabilities(seg, x, mode, "sigmoid", dense=True), probabilities(seg(x), "sigmoid"))
    seg3 = PointwiseSeg(3)
    torch.testing.assert_close(tta_probabilities(seg3, x, mode, "softmax", dense=True), probabilities(seg3(x), "softmax"))


def test_masks_are_flipped_back_before_averaging():
    """A model that marks the left half: plain and every flipped-back view agree only if inverted."""
    def left_half(x):
        out = torch.full((x.shape[0], 1, *x.shape[2:]), -20.0)
        out[..., : x.shape[-1] // 2] = 20.0
        return out + 0 * x[:, :1]

    x = torch.rand(1, 3, 6, 6)
    plain = probabilities(left_half(x), "sigmoid")
    # hflip of a constant-position output, flipped back, marks the right half: the mean is 0.5 everywhere.
    torch.testing.assert_close(tta_probabilities(left_half, x, "hflip", "sigmoid", dense=True), torch.full_like(plain, 0.5))
    # An image-dependent equivariant output survives: the image's own left half stays marked.
    def bright(x):
        return (x[:, :1] - 0.5) * 40

    x[..., :3] = 1.0
    x[..., 3:] = 0.0
    torch.testing.assert_close(tta_probabilities(bright, x, "d4", "sigmoid", dense=True), probabilities(bright(x), "sigmoid"))


def test_logits_of_averaged_probabilities_give_them_back():
    x = torch.rand(3, 3, 8, 8)
    model = PooledCls(5)
    torch.testing.assert_close(tta_logits(model, x, "none"), model(x))
    probs = tta_probabilities(model, x, "d4")
    torch.testing.assert_close(probabilities(tta_logits(model, x, "d4"), "softmax"), probs, atol=1e-6, rtol=1e-5)


def test_classification_task_predicts_with_tta():
    task = ClassificationTask(num_classes=3, backbone="small_cnn", image_size=32, tta="hflip").eval()
    batch = {"image": torch.rand(2, 3, 32, 32), "id": ["a", "b"]}
    with torch.no_grad():
        out = task.predict_step(batch, 0)["probs"]
        expected = (task(batch["image"]).softmax(1) + task(batch["image"].flip(-1)).softmax(1)) / 2
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(out, task(batch["image"]).softmax(1).detach())


def test_tta_is_not_restored_from_checkpoints():
    """`--ckpt_path` puts a checkpoint's hparams over the command line: tta must not be one of them."""
    task = ClassificationTask(num_classes=3, backbone="small_cnn", image_size=32, tta="d4")
    assert "tta" not in task.hparams and task.tta == "d4"


def test_segmentation_task_flips_masks_back():
    from lightning_cv.tasks import SegmentationTask

    task = SegmentationTask(num_classes=2, encoder="tu-test_resnet", image_size=32, tta="flip").eval()
    assert "tta" not in task.hparams
    images = torch.rand(1, 3, 32, 32)
    batch = {"image": images, "id": ["a"], "size": torch.tensor([[32, 32]]), "valid": torch.tensor([[32, 32]])}
    with torch.no_grad():
        probs = task.predict_step(batch, 0)["probs"].float()
        views = [task(images).sigmoid(), task(images.flip(-1)).sigmoid().flip(-1), task(images.flip(-2)).sigmoid().flip(-2)]
    torch.testing.assert_close(probs, sum(views) / 3, atol=2e-3, rtol=0)  # predictions are float16
