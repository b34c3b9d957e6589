"""Tiles of a large image: where they start (shared with tiled inference), and which of them hold tissue,
judged on a thumbnail so that a gigapixel slide is never decoded whole to choose its tiles."""

from __future__ import annotations

import math

import cv2
import numpy as np

from lightning_cv.errors import UserInputError

# The tissue rule (`tissue_mask`): pixels whose every channel is above WHITE (glass, blank background) or
# below BLACK (scanner borders, padding) are blank; tissue is what is left with a saturation above the Otsu
# threshold of the whole thumbnail's saturation, and at least MIN_SATURATION. A thumbnail whose non-blank
# pixels barely have colour (99th percentile of saturation under COLOURED) is judged on grey instead:
# tissue is the dark side of the Otsu threshold of its grey levels. Otsu splits tissue itself in two when a
# thumbnail holds almost nothing but tissue: the rule is meant for slides with glass around the tissue.
WHITE, BLACK = 220, 25
MIN_SATURATION = 20
COLOURED = 25


def tile_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Evenly spaced tile offsets covering `length`, neighbours overlapping by at least `overlap` pixels."""
    if length <= tile_size:
        return [0]
    stride = tile_size - overlap
    n = math.ceil((length - tile_size) / stride) + 1
    return [int(s) for s in np.linspace(0, length - tile_size, n).round()]


def tile_grid(size: tuple[int, int], tile: int, overlap: int = 0) -> np.ndarray:
    """(N, 2) top-left corners (y, x), row by row, of `tile`-pixel tiles covering an image of `size`
    (height, width), as tiled inference places them: evenly spaced, overlapping by at least `overlap`
    pixels, the last one ending at the border (only an image smaller than a tile is padded)."""
    if tile <= 0 or not 0 <= overlap < tile:
        raise UserInputError(f"tiles of {tile} px overlapping by {overlap} px: give tile > 0 and 0 <= overlap < tile")
    ys, xs = tile_starts(int(size[0]), tile, overlap), tile_starts(int(size[1]), tile, overlap)
    return np.array([(y, x) for y in ys for x in xs], dtype=np.int64)


def tissue_mask(thumbnail: np.ndarray) -> np.ndarray:
    """HxW bool: the pixels of an RGB (or grey) uint8 thumbnail that hold tissue, by the rule above."""
    image = np.asarray(thumbnail)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"tissue_mask takes an HxW or HxWx3 uint8 thumbnail, not {image.dtype} {image.shape}")
    image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else np.ascontiguousarray(image[..., :3])
    low, high = image.min(axis=2), image.max(axis=2)
    blank = (low > WHITE) | (high < BLACK)
    if blank.all():
        return np.zeros(blank.shape, dtype=bool)
    saturation = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1]
    if np.percentile(saturation[~blank], 99) >= COLOURED:
        return ~blank & (saturation > max(_otsu(saturation), MIN_SATURATION))
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return ~blank & (grey <= _otsu(grey))


def _otsu(values: np.ndarray) -> float:
    """OpenCV's Otsu threshold: the lower class is the values at most this."""
    threshold, _ = cv2.threshold(values.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return float(threshold)


def tissue_tiles(mask: np.ndarray, size: tuple[int, int], tile: int, overlap: int = 0,
                 min_share: float = 0.0) -> np.ndarray:
    """The rows of `tile_grid(size, tile, overlap)` whose area on the thumbnail `mask` (a `tissue_mask`
    of any size, scaled to the image's `size`) is tissue in a share above `min_share` (0: any tissue);
    thumbnail pixels a tile only touches count whole."""
    grid = tile_grid(size, tile, overlap)
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    counts = np.zeros((height + 1, width + 1), dtype=np.int64)
    counts[1:, 1:] = mask.cumsum(0).cumsum(1)
    rows = _thumbnail_span(grid[:, 0], tile, height / size[0], height)
    cols = _thumbnail_span(grid[:, 1], tile, width / size[1], width)
    (r0, r1, rows_in), (c0, c1, cols_in) = rows, cols
    inside = counts[r1, c1] - counts[r0, c1] - counts[r1, c0] + counts[r0, c0]
    return grid[inside / (rows_in * cols_in) > min_share]


def _thumbnail_span(starts: np.ndarray, tile: int, scale: float, limit: int):
    """Thumbnail rows (or columns) first, end clipped to the thumbnail, and the tile's whole span there."""
    first = np.floor(starts * scale).astype(np.int64)
    end = np.maximum(first + 1, np.ceil((starts + tile) * scale - 1e-9).astype(np.int64))
    return np.clip(first, 0, limit), np.clip(end, 0, limit), end - first
