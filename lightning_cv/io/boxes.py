"""Square-box geometry: boxes between normalised, letterbox and original pixels, and crops with clamping.

Plain deterministic functions; the box task, its writer and the crop command share them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def letterbox_shape(height: int, width: int, size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) of an image after `augment.letterbox(size)` fits it into `size` (one side, or
    [height, width]), before padding.

    Mirrors albumentations' LongestMaxSize, so boxes and masks map back exactly to the pixels it produced.
    """
    box_h, box_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    scale = min(box_h / height, box_w / width)
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
