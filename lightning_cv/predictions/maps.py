"""Probability maps of large images on disk: a `.npy` of uint8 (probability x 255) per image, written band
of rows by band of rows as tiled prediction completes them, and read back the same way, so a mask of a
gigapixel image is thresholded, run-length encoded, averaged with other models' or shrunk to a preview
without ever being held whole."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from lightning_cv.io.masks import RLEWriter
from lightning_cv.predictions.stores import npy_header

# The bytes of one band read back (rows x width): bounds the memory of every reader below.
BAND_BYTES = 64 << 20


class MapWriter:
    """A (height, width) uint8 map written row band by row band, top to bottom (`add` probabilities in
    [0, 1]); the file appears complete (atomically) at `close`."""

    def __init__(self, path: str | Path, size: tuple[int, int]):
        self.path, self.size, self._rows = Path(path), (int(size[0]), int(size[1])), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.part")
        self._file = open(self._tmp, "wb")
        self._file.write(npy_header(np.dtype(np.uint8), self.size))

    def add(self, band: np.ndarray) -> None:
        band = np.asarray(band)
        if band.ndim != 2 or band.shape[1] != self.size[1] or self._rows + len(band) > self.size[0]:
            raise ValueError(f"{self.path}: a band of {band.shape} after {self._rows} rows of a {self.size} map")
        self._file.write(np.clip(np.rint(band * 255), 0, 255).astype(np.uint8).tobytes())
        self._rows += len(band)

    def close(self) -> Path:
        self._file.close()
        if self._rows != self.size[0]:
            raise ValueError(f"{self.path}: {self._rows} of {self.size[0]} rows written")
        self._tmp.replace(self.path)
        return self.path


def map_size(path: str | Path) -> tuple[int, int]:
    return tuple(np.load(path, mmap_mode="r").shape)  # type: ignore[return-value]


def row_bands(path: str | Path, rows: int | None = None) -> Iterator[np.ndarray]:
    """The map's (rows, width) uint8 bands from the top; `rows` by default as many as BAND_BYTES hold."""
    height, width = map_size(path)
    rows = rows or max(1, BAND_BYTES // max(width, 1))
    with open(path, "rb") as file:
        offset = len(npy_header(np.dtype(np.uint8), (height, width)))
        for top in range(0, height, rows):
            n = min(rows, height - top)
            yield np.fromfile(file, np.uint8, count=n * width, offset=offset if top == 0 else 0).reshape(n, width)


def foreground_pixels(path: str | Path, threshold: float) -> int:
    """Pixels above `threshold`."""
    level = threshold * 255
    return int(sum(int((band > level).sum()) for band in row_bands(path)))


def pixel_runs(flat: np.ndarray) -> str:
    """Kaggle run-length encoding of sorted flat pixel indices (0-based): 1-based "start length" pairs."""
    if not flat.size:
        return ""
    breaks = np.flatnonzero(np.diff(flat) != 1) + 1
    starts, ends = flat[np.r_[0, breaks]], flat[np.r_[breaks - 1, flat.size - 1]]
    return " ".join(map(str, np.column_stack([starts + 1, ends - starts + 1]).ravel()))


def map_rle(path: str | Path, threshold: float, order: str = "C", min_area: float = 0) -> str:
    """The run-length encoding of the pixels above `threshold` (empty when fewer than `min_area` are), in
    the competition's pixel order, read row band by row band: row-major streams through `RLEWriter`;
    column-major gathers the foreground's flat indices (memory: 8 bytes per foreground pixel) and sorts them."""
    height, width = size = map_size(path)
    if min_area and foreground_pixels(path, threshold) < min_area:
        return ""
    level = threshold * 255
    if order == "C":
        writer = RLEWriter(size, order)
        for band in row_bands(path):
            writer.add(band > level)
        return writer.result()
    if order != "F":
        raise ValueError(f"RLE order {order!r}: C (row-major) or F (column-major)")
    found, top = [], 0
    for band in row_bands(path):
        ys, xs = np.nonzero(band > level)
        found.append(xs.astype(np.int64) * height + ys + top)
        top += len(band)
    return pixel_runs(np.sort(np.concatenate(found)))


def mean_map(paths: Sequence[str | Path], weights: Sequence[float], out: str | Path) -> Path:
    """The weighted mean of maps of one image, band by band, as a new map at `out`."""
    size = map_size(paths[0])
    if any(map_size(p) != size for p in paths[1:]):
        raise ValueError(f"maps of different sizes cannot be averaged: {[map_size(p) for p in paths]}")
    writer = MapWriter(out, size)
    w = np.asarray(weights, np.float32) / 255
    for bands in zip(*(row_bands(p, max(1, BAND_BYTES // (4 * size[1] * len(paths)))) for p in paths)):
        writer.add(sum(weight * band.astype(np.float32) for weight, band in zip(w, bands)))
    return writer.close()


def preview(path: str | Path, max_side: int = 1024) -> np.ndarray:
    """The map shrunk to at most `max_side` pixels on its longer side (area interpolation), uint8."""
    height, width = map_size(path)
    scale = min(1.0, max_side / max(height, width))
    size = max(1, round(width * scale)), max(1, round(height * scale))
    rows = max(1, BAND_BYTES // max(width, 1))
    rows = max(rows - rows % max(1, round(1 / scale)), 1)  # whole blocks of the shrink in every band
    parts = [cv2.resize(band, (size[0], max(1, round(len(band) * scale))), interpolation=cv2.INTER_AREA)
             for band in row_bands(path, rows)]
    return cv2.resize(np.concatenate(parts), size, interpolation=cv2.INTER_AREA)
