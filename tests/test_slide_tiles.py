"""Large images by tiles: masks decoded by windows from their runs, training tiles sampled by share and never
on blank glass, images kept in one fold, tiles stitched band by band as tiled inference blends them, and
probability maps run-length encoded band by band as the whole mask is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lightning_cv.data.slides import SlideImage, SlideSegmentationDataModule, SlideTiles, make_slides
from lightning_cv.io.masks import RLERuns, rle_decode, rle_encode
from lightning_cv.io.tiles import tile_grid
from lightning_cv.models.tiling import BandStitcher, predict_tiled
from lightning_cv.predictions import maps
from lightning_cv.tasks.slides import SlideSegmentationTask


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("slides")
    make_slides(out, seed=3, n_train=4, n_test=1, train_size=(384, 512), test_size=(256, 256), per_mpx=150)
    return out


@pytest.mark.parametrize("order", ["C", "F"])
def test_mask_windows_equal_crops_of_the_whole_decode(order):
    rng = np.random.default_rng(0)
    mask = (rng.random((37, 53)) > 0.7).astype(np.uint8)
    runs = RLERuns(rle_encode(mask, order), mask.shape, order)
    assert runs.pixels == mask.sum()
    padded = np.pad(mask, 40)
    for _ in range(100):
        y, x, h, w = rng.integers(-15, 45), rng.integers(-15, 60), rng.integers(0, 30), rng.integers(0, 30)
        np.testing.assert_array_equal(runs.window(y, x, h, w), padded[y + 40 : y + 40 + h, x + 40 : x + 40 + w])
    assert all(mask[runs.sample(rng)] == 1 for _ in range(50))
    assert RLERuns("", mask.shape, order).sample(rng) is None
    with pytest.raises(ValueError, match="outside"):
        RLERuns(f"{mask.size} 2", mask.shape, order)


def test_stitched_bands_equal_tiled_inference():
    image = torch.rand(2, 150, 230)
    predict = lambda tiles: tiles * 2 + 1  # noqa: E731
    overlap = 16
    stitcher = BandStitcher((150, 230), 64, overlap, channels=2)
    bands = []
    for y, x in tile_grid((150, 230), 64, overlap):
        bands += stitcher.add(int(y), int(x), predict(image[:, y : y + 64, x : x + 64]).numpy())
    bands += stitcher.finish()
    assert [top for top, _ in bands] == sorted(top for top, _ in bands)
    assert max(band.shape[1] for _, band in bands) <= 64  # a row of tiles at most is held
    np.testing.assert_allclose(np.concatenate([b for _, b in bands], axis=1),
                               predict_tiled(predict, image, 64, overlap / 64).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="non-decreasing"):
        stitcher.add(0, 0, np.zeros((2, 64, 64)))


@pytest.mark.parametrize("order", ["C", "F"])
def test_maps_encode_band_by_band_as_the_whole_mask(tmp_path, monkeypatch, order):
    monkeypatch.setattr(maps, "BAND_BYTES", 1000)  # many bands
    probs = np.random.default_rng(1).random((301, 207)).astype(np.float32)
    writer = maps.MapWriter(tmp_path / "a.npy", probs.shape)
    for top in range(0, 301, 50):
        writer.add(probs[top : top + 50])
    writer.close()
    stored = np.load(tmp_path / "a.npy")
    np.testing.assert_array_equal(stored, np.rint(probs * 255))
    assert maps.map_rle(tmp_path / "a.npy", 0.5, order) == rle_encode(stored > 127.5, order)
    assert maps.map_rle(tmp_path / "a.npy", 0.5, order, min_area=probs.size) == ""
    mean = maps.mean_map([tmp_path / "a.npy", tmp_path / "a.npy"], [0.5, 0.5], tmp_path / "m.npy")
    np.testing.assert_array_equal(np.load(mean), stored)
    assert maps.preview(tmp_path / "a.npy", 100).shape == (100, 69)


def _datamodule(slides: Path, **options) -> SlideSegmentationDataModule:
    return SlideSegmentationDataModule(data_dir=str(slides), image_size=64, tiles_per_image=100, cache_dir="/nonexistent",
                                       **options)


@pytest.mark.parametrize("positive", [0.0, 0.5, 1.0])
def test_training_tiles_share_the_foreground_and_skip_the_glass(slides, positive):
    np.random.seed(0)
    datamodule = _datamodule(slides, tile_positive=positive)
    datamodule.setup("fit")
    tiles: SlideTiles = datamodule.datasets["train"]
    samples = [tiles[i] for i in range(0, len(tiles), 2)]
    kinds = np.array(tiles.positions)
    assert abs((kinds == "positive").mean() - positive) < 0.12
    for sample, kind in zip(samples, kinds):
        assert sample["image"].shape == (3, 64, 64) and sample["target"].shape == (64, 64)
        if kind == "positive":
            assert sample["target"].sum() > 0  # around a foreground pixel
        assert (sample["image"] * 255 < 220).any()  # never a tile of blank glass


def test_images_stay_in_one_fold_and_the_grid_covers_their_tissue(slides, tmp_path):
    ids = sorted(p.stem for p in (slides / "train").iterdir())
    pd.DataFrame({"id": ids, "fold": [0, 0, 1, 1]}).to_csv(tmp_path / "folds.csv", index=False)
    datamodule = _datamodule(slides, fold=1, folds_csv=str(tmp_path / "folds.csv"))
    datamodule.setup("fit")
    train, val = datamodule.datasets["train"], datamodule.datasets["val"]
    assert set(train.ids) == set(ids[:2]) and set(val.ids) == set(ids[2:])
    assert {train[i]["id"] for i in range(0, len(train), 10)} <= set(ids[:2])
    datamodule.arrange(128, 0.25)
    entries = val.entries
    assert [e[0] for e in entries] == sorted(e[0] for e in entries)  # image after image
    assert sum(e[3] for e in entries) == 2  # one last tile per image
    for k, stem in enumerate(ids[2:]):  # each image's tissue tiles on its grid, and not the glass around
        corners = SlideImage(slides / "train" / f"{stem}.tiff").tiles(128, 32)
        assert [(y, x) for i, y, x, _ in entries if i == k] == [tuple(c) for c in corners.tolist()]
        assert len(corners) < len(tile_grid((384, 512), 128, 32))
    np.testing.assert_array_equal(datamodule.targets("val")[:, 0], [int(rle_decode(rle, (384, 512), "F").sum()) for rle in
                                  pd.read_csv(slides / "train.csv").set_index("id").loc[ids[2:], "encoding"]])


def test_validation_stitches_images_to_their_dice(slides):
    """A perfect model (its output: the truth) scores Dice 1 on every image; an empty one 0."""
    datamodule = _datamodule(slides)
    datamodule.setup("fit")
    datamodule.arrange(128, 0.25)
    task = SlideSegmentationTask(num_classes=2, encoder="tu-test_resnet", image_size=64)
    loader = torch.utils.data.DataLoader(datamodule.datasets["val"], batch_size=4)
    for perfect in (True, False):
        open_, done = {}, []
        for batch in loader:
            target = batch["target"][:, None].float()
            probs = torch.nn.functional.interpolate(target, size=(128, 128)) if perfect else torch.zeros(len(target), 1, 128, 128)
            done += task.feed_tiles(open_, {**batch, "probs": probs})
        assert not open_ and len(done) == len(datamodule.datasets["val"].ids)
        k = task.count_thresholds.index(0.5)
        for _, _, stitch in done:
            assert stitch.truth > 0
            assert stitch.inter[k] == (stitch.truth if perfect else 0) and stitch.above[k] == stitch.inter[k]


@pytest.mark.slow
def test_init_reads_a_folder_of_large_images_as_this_task(tmp_path):
    """HuBMAP's layout (train.csv `id,encoding`, column-major) with 4.5k px TIFFs: tiles, not shrunk whole."""
    import cv2
    import tifffile

    from lightning_cv.cli.commands.init import read_folder

    rows = []
    for i, center in enumerate([(1500, 2000), (3000, 2500)]):
        image = np.full((4608, 4224, 3), 230, np.uint8)
        mask = np.zeros(image.shape[:2], np.uint8)
        cv2.ellipse(mask, center, (900, 300), 0, 0, 360, 1, -1)
        image[mask > 0] = (120, 60, 130)
        (tmp_path / "train").mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / "train" / f"{i:08x}.tiff", image, tile=(256, 256), compression="zlib")
        rows.append((f"{i:08x}", rle_encode(mask, "F")))
    pd.DataFrame(rows, columns=["id", "encoding"]).to_csv(tmp_path / "train.csv", index=False)
    reading = read_folder(tmp_path)
    assert reading.task == "slides" and not reading.questions
    assert reading.data["rle_csv"] == "train.csv" and reading.data["rle_order"] == "F" and "image_size" not in reading.data


def test_the_cache_stores_grid_tiles_not_whole_images(slides, tmp_path):
    """--data.cache memmap: the inference grid's windows are decoded once, each its own small entry, and read
    back equal; training tiles (random windows) are not cached."""
    datamodule = _datamodule(slides, cache="memmap")
    datamodule.cache_dir = tmp_path
    datamodule.setup("fit")
    datamodule.arrange(128, 0.25)
    grid = datamodule.datasets["val"]
    first = [grid[i]["image"] for i in range(len(grid))]
    entries = list(tmp_path.rglob("*.npy"))
    assert len(entries) == len(grid) and all(np.load(e).shape == (128, 128, 3) for e in entries)
    np.testing.assert_array_equal(torch.stack(first).numpy(), torch.stack([grid[i]["image"] for i in range(len(grid))]).numpy())
    datamodule.datasets["train"][0]
    assert len(list(tmp_path.rglob("*.npy"))) == len(grid)
