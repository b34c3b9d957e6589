"""The shared Dataset: files (+ targets) through an albumentations pipeline to dict samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from lightning_cv.io.images import read_image


class ImageDataset(Dataset):
    """Samples `{"image", "target"?, "id", "index"}` from items (image paths) and optional targets:
    class indices (int64, one per image) or, with `target_dtype` float32, 0/1 rows (multi-label tags).

    `reader` turns one item into an HxW(xC) uint8 array (cached readers and in-memory arrays plug in
    here); `transform` is an albumentations Compose.
    """

    def __init__(
        self,
        items: Sequence[Any],
        targets: Sequence[int] | None = None,
        transform: Callable[..., dict[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
        reader: Callable[[Any], np.ndarray] = read_image,
        target_dtype: type = np.int64,
    ):
        if targets is not None and len(targets) != len(items):
            raise ValueError(f"{len(items)} images but {len(targets)} targets")
        self.items = list(items)
        self.targets = None if targets is None else np.asarray(targets, dtype=target_dtype)
        self.ids = list(ids) if ids is not None else [Path(str(p)).name for p in self.items]
        self.transform = transform
        self.reader = reader

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.reader(self.items[index])
        sample: dict[str, Any] = {"id": self.ids[index], "index": index}
        sample["image"] = self.transform(image=image)["image"] if self.transform else image
        if self.targets is not None:
            target = self.targets[index]
            sample["target"] = int(target) if target.ndim == 0 else target
        return sample


class ArrayReader:
    """A `reader` over images already in memory (a uint8 array N x H x W [x C]), items are indices."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __call__(self, index: int) -> np.ndarray:
        return self.images[index]
