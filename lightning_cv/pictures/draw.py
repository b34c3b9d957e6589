"""Pictures for people: image grids, captions, confusion matrices and mask overlays (RGB uint8 arrays)."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def to_uint8_image(tensor: torch.Tensor) -> np.ndarray:
    """CHW float [0, 1] tensor back to HxWx3 uint8 RGB, for pictures."""
    array = tensor.detach().float().clamp(0, 1).mul(255).round().byte().cpu().numpy().transpose(1, 2, 0)
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else np.ascontiguousarray(array[..., :3])


# The longer side of a picture written or uploaded for people (validation pictures, W&B panels and tables).
PICTURE_SIDE = 1024


def shrink(image: np.ndarray, max_side: int = PICTURE_SIDE, nearest: bool = False) -> np.ndarray:
    """An image (or, `nearest`, a mask) shrunk to at most `max_side` pixels on its longer side; as it is
    when already that small."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def image_grid(tiles: list[np.ndarray], columns: int = 8, pad: int = 2) -> np.ndarray:
    """Tile equally sized RGB images into one picture."""
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = tile
    return grid


def caption(tile: np.ndarray, text: str, ok: bool | None = None, scale: int = 2) -> np.ndarray:
    """Upscale a tile and write a caption strip under it (green when right, red when wrong)."""
    tile = cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    strip = np.full((14, tile.shape[1], 3), 255, np.uint8)
    color = (0, 0, 0) if ok is None else ((0, 140, 0) if ok else (200, 0, 0))
    cv2.putText(strip, text[: tile.shape[1] // 6], (2, 11), cv2.FONT_HERSHEY_PLAIN, 0.8, color, 1, cv2.LINE_AA)
    return np.vstack([tile, strip])


def draw_confusion(matrix: np.ndarray, class_names: list[str], cell: int = 44) -> np.ndarray:
    """A confusion-matrix heatmap (rows: true, columns: predicted) with counts, as an RGB image."""
    n = len(class_names)
    label_w = 90
    image = np.full((label_w + n * cell, label_w + n * cell, 3), 255, np.uint8)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for i in range(n):
        for j in range(n):
            shade = int(255 * (1 - norm[i, j]))
            y, x = label_w + i * cell, label_w + j * cell
            image[y : y + cell, x : x + cell] = (shade, shade, 255)
            cv2.putText(image, str(int(matrix[i, j])), (x + 4, y + cell // 2 + 5), cv2.FONT_HERSHEY_PLAIN, 1.0,
                        (0, 0, 0) if norm[i, j] < 0.6 else (255, 255, 255), 1, cv2.LINE_AA)
    for k, name in enumerate(class_names):
        cv2.putText(image, name[:10], (2, label_w + k * cell + cell // 2 + 5), cv2.FONT_HERSHEY_PLAIN, 0.9, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, name[:5], (label_w + k * cell + 2, label_w - 8), cv2.FONT_HERSHEY_PLAIN, 0.9, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "true \\ pred", (2, 20), cv2.FONT_HERSHEY_PLAIN, 0.9, (0, 0, 0), 1, cv2.LINE_AA)
    return image


# Overlay colours per class (RGB); class 0 (background) is left transparent.
PALETTE = np.array([[0, 0, 0], [255, 40, 40], [40, 200, 40], [60, 90, 255], [255, 200, 0], [200, 0, 200],
                    [0, 200, 200], [255, 120, 0]], np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Colour the non-background classes of an index mask over an RGB image."""
    colours = PALETTE[mask % len(PALETTE)]
    out = image.astype(np.float32)
    fg = mask > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    return out.round().astype(np.uint8)
