"""Square-box regression data: one object per image, its square (x, y, size) in original pixels.

Large originals are letterboxed (aspect kept, padded bottom/right) to `image_size`; the box follows
the letterbox and every augmentation through albumentations' box support. The model's target is the
square (centre x, centre y, side) divided by `image_size`; `lightning_cv.io.boxes` maps boxes between
normalised, letterbox and original pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from lightning_cv.data.augment import AugmentSpec, build_pipeline, letterbox
from lightning_cv.data.base import CVDataModule, Rows
from lightning_cv.data.label_layouts import find_label_table
from lightning_cv.data.survey import Reading, Survey, shared_layout
from lightning_cv.io.boxes import letterbox_boxes, square_target
from lightning_cv.io.cache import CacheMode
from lightning_cv.io.images import DataError, check_image, read_image
from lightning_cv.io.labels import read_table

BOX_COLUMNS = ("x", "y", "size")
MAX_AUGMENT_TRIES = 20


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
        cache: letterbox every image once into `--data.cache_dir` ("memmap" or "npz", see
            CVDataModule), so epochs skip decoding the large originals; "none" decodes every time.
        class_name: the name of the one object class (pictures, checkpoints).
    """

    def __init__(
        self,
        data_dir: str = "data/bbox",
        csv: str = "train.csv",
        image_dir: str = "train",
        cache: CacheMode = "memmap",
        class_name: str = "object",
        **kwargs: Any,
    ):
        # The other standard options (image_size, fold, predict_dir, ...) are CVDataModule's (via **kwargs).
        super().__init__(data_dir=data_dir, cache=cache, **kwargs)
        if self.channels != 3:
            raise DataError(f"--data.channels {self.channels}: the box task reads RGB images")
        if not isinstance(self.image_size, int):
            raise DataError(f"--data.image_size {self.image_size}: the box task letterboxes to a square; give one side")
        self.csv = self.data_dir / csv
        self.image_dir = self.data_dir / image_dir
        self.class_name = class_name

    @classmethod
    def recognize(cls, survey: Survey) -> Reading | None:
        """A table of images with one square box each (x, y, size: the box crop task's own format)."""
        table = find_label_table(survey)
        if table is None or not set(BOX_COLUMNS) <= set(table.frame.columns):
            return None
        reading = Reading(cls.task_name, 0.85)
        reading.evidence.append(("task", cls.task_name, table.name, "columns x, y, size: one square box per image"))
        if table.name != "train.csv":
            reading.set("csv", table.name, table.name, "the box table")
        shared_layout(reading, survey, table.images)
        size = reading.data["image_size"]
        if not isinstance(size, int):  # boxes are regressed on a letterboxed square
            reading.set("image_size", max(size), table.images, "the long side: the box task letterboxes to a square")
        return reading

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

    def fold_table(self) -> tuple[pd.DataFrame, str, str | None]:
        """The box CSV as it is, keyed by image; folds are not stratified."""
        return self.table, "image", None

    # -- the setup hooks -----------------------------------------------------------------------------------
    def labelled_rows(self) -> Rows:
        """Every image with its box (pascal_voc, original pixels, clipped to the image) and size, checked."""
        table = self.table
        paths = [self.image_dir / name for name in table["image"]]
        sizes = [check_image(p) for p in paths]
        return Rows(table["image"].tolist(), paths, check_boxes(table, sizes, self.csv), {"size": sizes})

    def test_rows(self) -> Rows:
        """`test` evaluates the held-out rows: the demo's test images carry no boxes."""
        rows = self.labelled_rows()
        return rows.take(self.split_rows(rows)[1])

    def build_dataset(self, rows: Rows, augment: AugmentSpec | None) -> BoxDataset:
        """Letterboxed in the pipeline, or once into the cache (boxes then mapped to the letterbox here)."""
        reader = self.image_reader(letterbox(self.image_size))
        boxes, sizes = rows.targets, rows.extra["size"]
        if reader is None:
            return BoxDataset(rows.items, boxes, self._pipeline(augment, True), self.image_size, sizes, rows.ids)
        boxes = None if boxes is None else letterbox_boxes(boxes, sizes, self.image_size)
        return BoxDataset(rows.items, boxes, self._pipeline(augment, False), self.image_size, sizes, rows.ids, reader=reader)
