"""The preprocessing cache: hits, invalidation on a changed source, and samples identical to decoding."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from lightning_cv.data.augment import Preprocess, resize
from lightning_cv.data.classification import ClassificationDataModule
from lightning_cv.data.segmentation import SegmentationDataModule
from lightning_cv.io.cache import ArrayCache, CachedReader, describe
from lightning_cv.io.images import read_image, write_image
from lightning_cv.io.masks import rle_encode

AUGMENT = [{"HorizontalFlip": {"p": 0.5}}, {"Affine": {"rotate": [-20, 20], "scale": [0.8, 1.2], "p": 0.7}},
           {"RandomBrightnessContrast": {"p": 0.5}}]
HEIGHT, WIDTH = 45, 70  # odd, non-square: the resize really resamples


def _image(rng: np.random.Generator) -> np.ndarray:
    image = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return cv2.GaussianBlur(image, (5, 5), 0)


def _bump(path: Path, image: np.ndarray) -> None:
    """Rewrite a source with new content and a later mtime."""
    write_image(path, image)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


@pytest.fixture()
def cls_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    (tmp_path / "train").mkdir()
    rows = []
    for i in range(12):
        write_image(tmp_path / "train" / f"{i}.jpg", _image(rng))
        rows.append((f"{i}.jpg", "ab"[i % 2]))
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(tmp_path / "train.csv", index=False)
    return tmp_path


@pytest.fixture()
def seg_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    (tmp_path / "train").mkdir()
    (tmp_path / "train_masks").mkdir()
    rles = []
    for i in range(10):
        image = _image(rng)
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        cv2.circle(mask, (int(rng.integers(15, WIDTH - 15)), int(rng.integers(15, HEIGHT - 15))), 12, 255, -1)
        write_image(tmp_path / "train" / f"{i}.png", image)
        write_image(tmp_path / "train_masks" / f"{i}_mask.png", mask)
        rles.append((str(i), rle_encode(mask)))
    pd.DataFrame(rles, columns=["id", "rle_mask"]).to_csv(tmp_path / "masks.csv", index=False)
    return tmp_path


def _samples(dm, split: str) -> list[dict]:
    dataset = dm.datasets[split]
    return [dataset[i] for i in range(len(dataset))]


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], torch.Tensor):
                torch.testing.assert_close(x[key], y[key], rtol=0, atol=0)
            else:
                assert x[key] == y[key]


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_reader_hits_and_rebuilds_a_changed_source(tmp_path):
    path = tmp_path / "a.png"
    rng = np.random.default_rng(2)
    write_image(path, _image(rng))
    calls = []

    def counting_read(p):
        calls.append(p)
        return read_image(p)

    pre = [resize(16, 24)]
    reader = CachedReader(ArrayCache(tmp_path / "cache", "memmap", describe(pre)), Preprocess(pre), counting_read)
    first = reader(path)
    assert first.shape == (16, 24, 3) and len(calls) == 1
    np.testing.assert_array_equal(reader(path), first)
    assert len(calls) == 1  # a hit: no decode
    np.testing.assert_array_equal(first, Preprocess(pre)(read_image(path)))

    _bump(path, _image(rng))
    changed = reader(path)
    assert len(calls) == 2 and not np.array_equal(changed, first)
    np.testing.assert_array_equal(changed, Preprocess(pre)(read_image(path)))
    assert len(_entries(tmp_path / "cache")) == 1  # the stale entry was replaced

    other = CachedReader(ArrayCache(tmp_path / "cache", "memmap", describe([resize(8, 8)])), Preprocess([resize(8, 8)]), counting_read)
    assert other(path).shape == (8, 8, 3) and len(calls) == 3  # another resize is another key


@pytest.mark.parametrize("mode", ["memmap", "npz"])
def test_classification_cached_samples_equal_decoded_ones(cls_dir, mode):
    cache_dir = cls_dir.with_name(f"{cls_dir.name}-cache")  # beside the data, not in it

    def module(cache: str) -> ClassificationDataModule:
        dm = ClassificationDataModule(str(cls_dir), image_size=32, batch_size=4, train_augment=AUGMENT, cache=cache,
                                      cache_dir=str(cache_dir))
        dm.setup("fit")
        return dm

    files = sorted(p for p in cls_dir.rglob("*"))
    plain = module("none")
    assert not cache_dir.exists()
    expected = {split: _samples(plain, split) for split in ("train", "val")}
    cold = module(mode)
    for split in ("train", "val"):
        _assert_same(_samples(cold, split), expected[split])
    entries = _entries(cache_dir)
    assert sorted(p for p in cls_dir.rglob("*")) == files  # nothing written into the data
    assert len(entries) == 12 and all(p.suffix == (".npy" if mode == "memmap" else ".npz") for p in entries)
    mtimes = [p.stat().st_mtime_ns for p in entries]

    warm = module(mode)  # a second run reads the entries, writes nothing
    for split in ("train", "val"):
        _assert_same(_samples(warm, split), expected[split])
    assert [p.stat().st_mtime_ns for p in _entries(cache_dir)] == mtimes

    # A changed source is decoded again: the cached run follows the new image.
    source = cls_dir / "train" / "3.jpg"
    _bump(source, 255 - read_image(source))
    fresh, again = module("none"), module(mode)
    for split in ("train", "val"):
        _assert_same(_samples(again, split), _samples(fresh, split))
    assert len(_entries(cache_dir)) == 12


@pytest.mark.parametrize("masks", ["files", "rle"])
def test_segmentation_cached_images_and_masks_equal_decoded_ones(seg_dir, masks):
    cache_dir = seg_dir.with_name(f"{seg_dir.name}-cache")

    def module(cache: str) -> SegmentationDataModule:
        extra = {"rle_csv": "masks.csv"} if masks == "rle" else {}
        dm = SegmentationDataModule(str(seg_dir), image_size=40, batch_size=2, train_augment=AUGMENT, cache=cache,
                                    cache_dir=str(cache_dir), **extra)
        dm.setup("fit")
        return dm

    expected = {split: _samples(module("none"), split) for split in ("train", "val")}
    assert expected["val"][0]["size"].tolist() == [HEIGHT, WIDTH]
    for _ in range(2):  # cold, then warm
        cached = module("memmap")
        for split in ("train", "val"):
            _assert_same(_samples(cached, split), expected[split])
    # 10 images + one entry per mask (RLE masks are keyed by content: equal strings share one)
    n_masks = 10 if masks == "files" else pd.read_csv(seg_dir / "masks.csv")["rle_mask"].nunique()
    assert len(_entries(cache_dir)) == 10 + n_masks

    if masks == "files":
        mask_path = seg_dir / "train_masks" / "0_mask.png"
        _bump(mask_path, np.flipud(cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)).copy())
        fresh = {split: _samples(module("none"), split) for split in ("train", "val")}
        again = module("memmap")
        for split in ("train", "val"):
            _assert_same(_samples(again, split), fresh[split])
        assert len(_entries(cache_dir)) == 20


def test_segmentation_predict_keeps_original_sizes(seg_dir):
    dm = SegmentationDataModule(str(seg_dir), image_size=40, predict_dir=str(seg_dir / "train"), cache="memmap")
    dm.setup("predict")
    sample = dm.datasets["predict"][0]
    assert sample["size"].tolist() == [HEIGHT, WIDTH] and tuple(sample["image"].shape[1:]) == (64, 64)
