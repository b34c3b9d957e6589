"""Callbacks: validation pictures (W&B + PNG) and the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
from lightning.pytorch.loggers import WandbLogger

from lightning_cv.io import write_image


def _wandb(trainer: L.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


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


class ValidationPictures(L.Callback):
    """Each validation epoch: the task's picture of its first batch (and, where the task keeps one,
    the confusion matrix) to W&B and as PNGs under `<run>/pictures/`."""

    def __init__(self, max_images: int = 16):
        self.max_images = max_images
        self._first: tuple[dict, Any] | None = None

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and trainer.is_global_zero and not trainer.sanity_checking:
            n = self.max_images
            self._first = ({k: v[:n] for k, v in batch.items()}, outputs["outputs"][:n])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        confusion = getattr(pl_module, "val_confusion", None)
        matrix = confusion.compute().cpu().numpy() if confusion is not None else None  # on every rank: it syncs
        if confusion is not None:
            confusion.reset()
        if not trainer.is_global_zero:
            return
        out = Path(trainer.default_root_dir) / "pictures"
        pictures: dict[str, np.ndarray] = {}
        if self._first is not None and hasattr(pl_module, "draw_validation"):
            pictures["val/examples"] = pl_module.draw_validation(*self._first)
        if matrix is not None:
            pictures["val/confusion"] = draw_confusion(matrix, pl_module.class_names)
        wandb = _wandb(trainer)
        # Tasks with richer W&B panels (e.g. segmentation masks) return log_image keyword arguments.
        if wandb is not None and self._first is not None and hasattr(pl_module, "wandb_validation"):
            wandb.log_image(step=trainer.global_step, **pl_module.wandb_validation(*self._first))
        self._first = None
        for key, picture in pictures.items():
            write_image(out / f"{key.split('/')[-1]}_epoch{trainer.current_epoch:03d}.png", picture)
            if wandb is not None:
                wandb.log_image(key=key, images=[picture], step=trainer.global_step)
