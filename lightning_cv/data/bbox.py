"""Square-box regression data: one object per image, its square (x, y, size) in original pixels.

Large originals are letterboxed (aspect kept, padded bottom/right) to `image_size`; the box follows
the letterbox and every augmentation through albumentations' box support. The model's target is the
square (centre x, centre y, side) divided by `image_size`. The plain functions below map boxes
between normalised, letterbox and original pixels, and crop with clamping; the crop tool uses them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from lightning_cv.augment import AugmentSpec, build_pipeline, letterbox
from lightning_cv.cache import CacheMode
from lightning_cv.data.base import CVDataModule, holdout_split, list_images
from lightning_cv.data.classification import read_table
from lightning_cv.io import DataError, check_image, read_image

BOX_COLUMNS = ("x", "y", "size")
MAX_AUGMENT_TRIES = 20


# -- box geometry: deterministic functions ------------------------------------------------------------
def letterbox_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of an image after `augment.letterbox(size)` shrinks it, before padding.

    Mirrors albumentations' LongestMaxSize, so boxes map back exactly to the pixels it produced.
    """
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def letterbox_boxes(boxes: np.ndarray, sizes: Sequence[tuple[int, int]], size: int) -> np.ndarray:
    """pascal_voc boxes in original pixels -> in letterbox pixels (what `augment.letterbox` does to them)."""
    scales = np.array([(lambda lh, lw: (lw / w, lh / h, lw / w, lh / h))(*letterbox_shape(h, w, size)) for h, w in sizes],
                      np.float64).reshape(-1, 4)
    return (boxes.astype(np.float64) * scales).astype(np.float32)


def normalized_to_square(box: Sequence[float], size: int) -> tuple[float, float, float]:
    """(cx, cy, side) as fractions of the letterboxed square -> (x, y, side) in its pixels."""
    cx, cy, side = (float(v) * size for v in box)
    return cx - side / 2, cy - side / 2, side


def letterbox_to_original(square: Sequence[float], height: int, width: int, size: int) -> tuple[float, float, float]:
    """A square (x, y, side) in letterbox pixels -> the same square in the original's pixels."""
    new_h, new_w = letterbox_shape(height, width, size)
    sx, sy = width / new_w, height / new_h
    x, y, side = square
    cx, cy = (x + side / 2) * sx, (y + side / 2) * sy
    side = side * max(sx, sy)
    return cx - side / 2, cy - side / 2, side


def fit_square(x: float, y: float, side: float, height: int, width: int) -> tuple[int, int, int]:
    """Round a square to whole pixels and move it inside the image (shrunk about its centre if larger)."""
    new_side = int(min(max(round(side), 1), height, width))
    x, y, side = x + (side - new_side) / 2, y + (side - new_side) / 2, new_side
    x = int(min(max(round(x), 0), width - side))
    y = int(min(max(round(y), 0), height - side))
    return x, y, side


def expand_square(x: float, y: float, side: float, margin: float) -> tuple[float, float, float]:
    """Grow a square by `margin` times its side on every edge (same centre)."""
    return x - margin * side, y - margin * side, side * (1 + 2 * margin)


def clamp_box(x0: float, y0: float, x1: float, y1: float, height: int, width: int) -> tuple[int, int, int, int]:
    """Whole-pixel (x0, y0, x1, y1) clipped to the image; a box wholly outside becomes empty."""
    cx0 = int(min(max(math.floor(x0), 0), width))
    cy0 = int(min(max(math.floor(y0), 0), height))
    cx1 = int(min(max(math.ceil(x1), cx0), width))
    cy1 = int(min(max(math.ceil(y1), cy0), height))
    return cx0, cy0, cx1, cy1


def crop(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The pixels of `image` inside box (x0, y0, x1, y1), clamped at the borders (a view, no copy)."""
    x0, y0, x1, y1 = clamp_box(*box, image.shape[0], image.shape[1])
    return image[y0:y1, x0:x1]


def original_square(box: Sequence[float], height: int, width: int, size: int) -> tuple[int, int, int]:
    """A predicted normalised square -> whole-pixel (x, y, side) inside the original image."""
    return fit_square(*letterbox_to_original(normalized_to_square(box, size), height, width, size), height, width)


def square_target(box: Sequence[float], size: int) -> np.ndarray:
    """A (possibly clipped) pascal_voc box in the letterbox -> normalised square (cx, cy, side)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)], np.float32) / size


def check_boxes(frame: pd.DataFrame, sizes: Sequence[tuple[int, int]], source: Path) -> np.ndarray:
    """Validate the x, y, size columns against each image's (height, width): pascal_voc boxes, clamped.

    A missing/non-numeric value, a side <= 0 or a box wholly outside its image is an error naming the
    row; a box that crosses the border is clipped to the image.
    """
    values = frame[list(BOX_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    boxes = np.zeros((len(frame), 4), np.float32)
    for i, ((x, y, side), (height, width)) in enumerate(zip(values, sizes)):
        where = f"{source}: row {i + 2} ({frame['image'].iloc[i]})"
        raw = ", ".join(f"{c}={frame[c].iloc[i]!r}" for c in BOX_COLUMNS)
        if not np.isfinite([x, y, side]).all():
            raise DataError(f"{where}: box values must be numbers, got {raw}")
        if side <= 0:
            raise DataError(f"{where}: box size must be positive, got {raw}")
        if x >= width or y >= height or x + side <= 0 or y + side <= 0:
            raise DataError(f"{where}: box {raw} lies outside the {width}x{height} image; fix or remove the row")
        boxes[i] = (max(x, 0), max(y, 0), min(x + side, width), min(y + side, height))
    return boxes


# -- dataset ----------------------------------------------------------------------------------------
class BoxDataset(Dataset):
    """Samples `{"image", "target"?, "orig_size", "id", "index"}`; target = normalised (cx, cy, side).

    `items` are image paths, or indices into a cache when `reader` reads one; `boxes` are pascal_voc
    boxes in the pixels of what `reader` returns. The transform is an albumentations Compose with
    box support; a draw that pushes the box out of the image is drawn again.
    """

    def __init__(
        self,
        items: Sequence[Any],
        boxes: np.ndarray | None,
        transform: Callable[..., dict[str, Any]],
        size: int,
        orig_sizes: Sequence[tuple[int, int]],
        ids: Sequence[str],
        reader: Callable[[Any], np.ndarray] = read_image,
    ):
        self.items = list(items)
        self.boxes = boxes
        self.transform = transform
        self.size = size
        self.orig_sizes = np.asarray(orig_sizes, dtype=np.int64).reshape(-1, 2)
        self.ids = list(ids)
        self.reader = reader

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.reader(self.items[index])
        sample: dict[str, Any] = {"id": self.ids[index], "index": index, "orig_size": torch.from_numpy(self.orig_sizes[index])}
        if self.boxes is None:
            sample["image"] = self.transform(image=image, bboxes=np.zeros((0, 4), np.float32), labels=[])["image"]
            return sample
        for _ in range(MAX_AUGMENT_TRIES):
            out = self.transform(image=image, bboxes=self.boxes[index : index + 1], labels=[0])
            if len(out["bboxes"]):
                break
        else:
            raise DataError(f"{self.ids[index]}: the augmentations pushed the box out of the image "
                            f"{MAX_AUGMENT_TRIES} times; use a smaller translate/scale range")
        sample["image"] = out["image"]
        sample["target"] = torch.from_numpy(square_target(out["bboxes"][0], self.size))
        return sample


# -- data module ------------------------------------------------------------------------------------
class BBoxCropDataModule(CVDataModule):
    """Reads `data_dir/<csv>` (image, x, y, size: the object's square in original pixels) with images
    under `data_dir/<image_dir>/`; a corrected `boxes.csv` from `lightning-cv crop` reads as is.

    Args:
        csv: the box CSV, relative to data_dir (e.g. boxes.csv written and corrected after `crop`).
        image_dir: folder of the original images, relative to data_dir.
        cache: letterbox every image once into `data_dir/.cache/` ("memmap" or "npz", see
            CVDataModule), so epochs skip decoding the large originals; "none" decodes every time.
        class_name: the name of the one object class (pictures, checkpoints).
    """

    task_name = "bbox"

    def __init__(
        self,
        data_dir: str = "data/bbox",
        image_size: int = 64,
        batch_size: int = 32,
        num_workers: int | None = None,
        val_fraction: float = 0.2,
        seed: int = 42,
        train_augment: AugmentSpec | None = None,
        predict_dir: str | None = None,
        csv: str = "train.csv",
        image_dir: str = "train",
        cache: CacheMode = "memmap",
        class_name: str = "object",
    ):
        super().__init__(data_dir, image_size, batch_size, num_workers, val_fraction, seed, train_augment, predict_dir,
                         cache=cache)
        self.csv = self.data_dir / csv
        self.image_dir = self.data_dir / image_dir
        self.class_name = class_name

    @property
    def class_names(self) -> list[str]:
        return [self.class_name]

    @cached_property
    def table(self) -> pd.DataFrame:
        if not self.data_dir.is_dir():
            raise DataError(
                f"{self.data_dir}: data directory not found. Create the demo with `lightning-cv demo --task bbox --out {self.data_dir}` "
                "or point --data.data_dir at a folder with train.csv (image,x,y,size) and train/"
            )
        frame = read_table(self.csv, ["image", *BOX_COLUMNS])
        if frame.empty:
            raise DataError(f"{self.csv}: no rows")
        duplicated = frame["image"][frame["image"].duplicated()]
        if len(duplicated):
            raise DataError(f"{self.csv}: row {duplicated.index[0] + 2}: duplicate image {duplicated.iloc[0]!r}")
        return frame

    def _pipeline(self, augment: AugmentSpec | None, with_letterbox: bool) -> Any:
        pre = letterbox(self.image_size) if with_letterbox else []
        with warnings.catch_warnings():
            # Cached validation images need no geometric transform; the box processor is idle then.
            warnings.filterwarnings("ignore", message="Got processor for bboxes")
            return build_pipeline(augment, pre=pre, bboxes=True, seed=self.seed)

    def _dataset(self, paths: list[Path], boxes: np.ndarray | None, sizes: list, augment: AugmentSpec | None) -> BoxDataset:
        """Letterboxed in the pipeline, or once into the cache (boxes then mapped to the letterbox here)."""
        ids = [p.name for p in paths]
        reader = self.image_reader(letterbox(self.image_size))
        if reader is None:
            return BoxDataset(paths, boxes, self._pipeline(augment, True), self.image_size, sizes, ids)
        boxes = None if boxes is None else letterbox_boxes(boxes, sizes, self.image_size)
        return BoxDataset(paths, boxes, self._pipeline(augment, False), self.image_size, sizes, ids, reader=reader)

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate", "test") and "val" not in self.datasets:
            table = self.table
            paths = [self.image_dir / name for name in table["image"]]
            sizes = [check_image(p) for p in paths]
            boxes = check_boxes(table, sizes, self.csv)
            train, val = holdout_split(len(table), self.val_fraction, self.seed)
            for split, rows, augment in (("train", train, self.train_augment), ("val", val, None)):
                self.datasets[split] = self._dataset([paths[i] for i in rows], boxes[rows], [sizes[i] for i in rows], augment)
            # `test` evaluates the held-out rows: the demo's test images carry no boxes.
            self.datasets["test"] = self.datasets["val"]
        if stage == "predict" and "predict" not in self.datasets:
            paths = list_images(self.predict_dir)
            sizes = [check_image(p) for p in paths]
            self.datasets["predict"] = self._dataset(paths, None, sizes, None)
