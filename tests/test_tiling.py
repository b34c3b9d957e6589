"""Tiled inference equals whole-image inference for translation-equivariant models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_cv.models.tiling import edge_ramp, predict_tiled, tile_starts


def _conv_stack(seed: int = 0) -> nn.Module:
    """Fully convolutional, zero padding, receptive radius 3: equivariant away from borders."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1),
    ).eval()


@pytest.mark.parametrize("size", [(150, 190), (64, 64), (71, 260)])
def test_tiling_matches_whole_image(size):
    model = _conv_stack()
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(image[None])[0]
    # 64 px tiles, 0.25 overlap: a 16 px overlap with a 4 px blending margin >= the radius.
    tiled = predict_tiled(model, image, tile_size=64, overlap=0.25, batch_size=3)
    assert tiled.shape == whole.shape
    r = 3  # receptive radius: pixels nearer the image border see the zero padding either way
    assert torch.allclose(tiled[:, r:-r, r:-r], whole[:, r:-r, r:-r], atol=1e-5)
    # Seams included: the blending margin hides the tiles' own zero-padded borders.
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_tiles_without_blend_margin_show_seams():
    """The check above can fail: plain averaging of overlapping tiles differs at the seams."""
    model = _conv_stack()
    image = torch.rand(3, 100, 100, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = model(image[None])[0]
    tiled = predict_tiled(model, image, tile_size=64, overlap=0.0)
    assert (tiled - whole).abs().max() > 1e-3


def test_small_image_and_batch():
    model = _conv_stack()
    images = torch.rand(2, 3, 20, 150, generator=torch.Generator().manual_seed(3))
    tiled = predict_tiled(model, images, tile_size=64, overlap=0.25)
    assert tiled.shape == (2, 2, 20, 150)
    with torch.no_grad():
        whole = model(images)
    # Rows near the zero-padded bottom differ; the top rows, away from the padding, agree.
    assert torch.allclose(tiled[:, :, :16], whole[:, :, :16], atol=1e-5)


def test_weights_cover_every_pixel():
    for length, tile, overlap in [(100, 32, 8), (33, 32, 8), (500, 64, 16), (64, 64, 16)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] == max(0, length - tile)
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
        cover = torch.zeros(max(length, tile))
        for s in starts:
            cover[s : s + tile] += edge_ramp(tile, overlap, s > 0, s + tile < max(length, tile))
        assert (cover[:length] > 0).all()


def test_rejects_non_dense_outputs():
    with pytest.raises(ValueError, match="per-pixel"):
        predict_tiled(lambda x: x.mean(dim=(2, 3)), torch.rand(3, 40, 40), tile_size=32)


def test_segmentation_predicts_by_tiles():
    from lightning_cv.tasks import SegmentationTask

    torch.manual_seed(0)
    task = SegmentationTask(num_classes=2, encoder="tu-test_resnet", image_size=32).eval()
    n, side = 2, 96
    batch = {"image": torch.rand(n, 3, side, side), "id": ["a", "b"], "size": torch.tensor([[side, side]] * n),
             "valid": torch.tensor([[side, side]] * n)}
    whole = task.predict_step(batch, 0)["probs"].float()
    task.tile_size = side  # one tile covering the image: the whole-image prediction
    assert torch.allclose(task.predict_step(batch, 0)["probs"].float(), whole, atol=1e-3)
    task.tile_size = 32  # 3x3+ overlapping tiles, blended
    tiled = task.predict_step(batch, 0)
    assert tiled["id"] == ["a", "b"] and tiled["probs"].shape == whole.shape
    assert ((tiled["probs"] >= 0) & (tiled["probs"] <= 1)).all()
    with pytest.raises(ValueError, match="multiple of 32"):
        SegmentationTask(num_classes=2, encoder="tu-test_resnet", image_size=32, tile_size=40)
