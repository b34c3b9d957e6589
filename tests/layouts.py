"""Small replicas of competition layouts, in each competition's own shape, made from the shapes demo.

- TGS Salt: `train/images/<id>.png` grey, `train/masks/<id>.png` (same name), `train.csv` `id,rle_mask`
  column-major; `test/images/`; `sample_submission.csv` `id,rle_mask`; the answers in `solution.csv`.
- Carvana: `train/<car>_<view>.jpg`, `train_masks/<car>_<view>_mask.gif`, `train_masks.csv` `img,rle_mask`
  row-major keyed by file name; `test/`; `sample_submission.csv` `img,rle_mask`; `solution.csv`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from lightning_cv.data.demos import make_shapes
from lightning_cv.io.images import read_mask
from lightning_cv.io.masks import rle_encode


def _shapes(root: Path, n_train: int, n_test: int, size: tuple[int, int], seed: int) -> Path:
    source = root / "shapes"
    make_shapes(source, n_train=n_train, n_test=n_test, size=size, seed=seed)
    return source


def make_tgs(root: Path, n_train: int = 24, n_test: int = 6, seed: int = 3) -> Path:
    """A TGS-Salt-like folder of 101x101 grey images (column-major RLE) at `root`."""
    source = _shapes(root.parent / f"{root.name}-source", n_train, n_test, (101, 101), seed)
    for split in ("train", "test"):
        rows = []
        for image in sorted((source / split).glob("*.png")):
            grey = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2GRAY)
            ident = f"{image.stem.split('_')[1]}a{seed}"  # TGS ids are hex-like stems
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / split / "images" / f"{ident}.png"), grey)
            mask = (read_mask(source / f"{split}_masks" / f"{image.stem}_mask.png") > 0).astype(np.uint8)
            if split == "train":
                (root / split / "masks").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / split / "masks" / f"{ident}.png"), mask * 255)
            rows.append({"id": ident, "rle_mask": rle_encode(mask, "F")})
        frame = pd.DataFrame(rows)
        if split == "train":
            frame.to_csv(root / "train.csv", index=False)
        else:
            frame.to_csv(root / "solution.csv", index=False)
            frame.assign(rle_mask="").to_csv(root / "sample_submission.csv", index=False)
    shutil.rmtree(source.parent)
    return root


def make_carvana(root: Path, cars: int = 8, views: int = 4, n_test: int = 6, seed: int = 5) -> Path:
    """A Carvana-like folder at `root`: `views` JPEG views per car, GIF masks, row-major RLE by file name."""
    source = _shapes(root.parent / f"{root.name}-source", cars * views, n_test, (48, 72), seed)
    for split in ("train", "test"):
        rows = []
        for i, image in enumerate(sorted((source / split).glob("*.png"))):
            name = f"car{i // views:03d}_{i % views + 1:02d}" if split == "train" else f"test{i:03d}_01"
            (root / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / split / f"{name}.jpg"), cv2.imread(str(image)), [cv2.IMWRITE_JPEG_QUALITY, 95])
            mask = (read_mask(source / f"{split}_masks" / f"{image.stem}_mask.png") > 0).astype(np.uint8)
            if split == "train":
                (root / "train_masks").mkdir(exist_ok=True)
                Image.fromarray(mask).save(root / "train_masks" / f"{name}_mask.gif")
            rows.append({"img": f"{name}.jpg", "rle_mask": rle_encode(mask)})
        frame = pd.DataFrame(rows)
        if split == "train":
            frame.to_csv(root / "train_masks.csv", index=False)
        else:
            frame.to_csv(root / "solution.csv", index=False)
            frame.assign(rle_mask="").to_csv(root / "sample_submission.csv", index=False)
    shutil.rmtree(source.parent)
    return root
