"""Tiled inference: predict an image larger than the training size by overlapping tiles.

Tiles are blended with weights that are zero in a thin margin at each inner tile edge and ramp up
linearly across the rest of the overlap, so seams are smooth and, for a model whose receptive field
fits in that margin, tiling gives exactly the whole-image prediction. Memory is bounded by the tile
batch plus one output-sized accumulator.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lightning_cv.io.tiles import tile_starts

Predict = Callable[[torch.Tensor], torch.Tensor]


def edge_ramp(tile_size: int, overlap: int, taper_start: bool, taper_end: bool) -> torch.Tensor:
    """1-D blending weights: 0 for `overlap // 4` pixels at a tapered edge, then linear up to 1."""
    margin = overlap // 4
    width = overlap - 2 * margin + 1
    d = torch.arange(tile_size, dtype=torch.float32)
    weight = torch.ones(tile_size)
    if taper_start:
        weight = torch.minimum(weight, ((d - margin + 1) / width).clamp(0, 1))
    if taper_end:
        weight = torch.minimum(weight, ((tile_size - d - margin) / width).clamp(0, 1))
    return weight


def _check(tile_size: int, overlap: float, batch_size: int) -> None:
    if tile_size < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")


@torch.no_grad()
def predict_tiled(
    predict: Predict, image: torch.Tensor, tile_size: int, overlap: float = 0.25, batch_size: int = 8
) -> torch.Tensor:
    """Dense prediction of one image (C, H, W) or a batch (N, C, H, W) by blended overlapping tiles.

    Args:
        predict: maps a (B, C, t, t) tile batch to (B, K, t, t) outputs (logits or probabilities: they
            are averaged as given).
        image: the input, any size; sides smaller than a tile are zero-padded at the bottom/right.
        tile_size: tile side in pixels (a size the model accepts, e.g. a multiple of 32 for most Unets).
        overlap: share of the tile that neighbouring tiles overlap.
        batch_size: tiles per forward pass; bounds the memory.

    Returns:
        (K, H, W) or (N, K, H, W) outputs, float32, on the image's device.
    """
    _check(tile_size, overlap, batch_size)
    if image.ndim == 4:
        return torch.stack([predict_tiled(predict, im, tile_size, overlap, batch_size) for im in image])
    if image.ndim != 3:
        raise ValueError(f"expected an image (C, H, W) or a batch (N, C, H, W), got shape {tuple(image.shape)}")
    _, height, width = image.shape
    pad_h, pad_w = max(0, tile_size - height), max(0, tile_size - width)
    padded = F.pad(image, (0, pad_w, 0, pad_h)) if pad_h or pad_w else image
    full_h, full_w = padded.shape[1:]
    overlap_px = int(round(overlap * tile_size))
    ys, xs = tile_starts(full_h, tile_size, overlap_px), tile_starts(full_w, tile_size, overlap_px)
    ramps_y = {y: edge_ramp(tile_size, overlap_px, y > 0, y + tile_size < full_h) for y in ys}
    ramps_x = {x: edge_ramp(tile_size, overlap_px, x > 0, x + tile_size < full_w) for x in xs}
    positions = [(y, x) for y in ys for x in xs]

    total: torch.Tensor | None = None
    weights = torch.zeros(1, full_h, full_w, device=image.device)
    for i in range(0, len(positions), batch_size):
        chunk = positions[i : i + batch_size]
        tiles = torch.stack([padded[:, y : y + tile_size, x : x + tile_size] for y, x in chunk])
        outputs = predict(tiles).float()
        if outputs.ndim != 4 or outputs.shape[-2:] != (tile_size, tile_size):
            raise ValueError(
                f"tiled prediction needs per-pixel outputs (B, K, {tile_size}, {tile_size}); got {tuple(outputs.shape)}"
            )
        if total is None:
            total = torch.zeros(outputs.shape[1], full_h, full_w, device=image.device)
        for (y, x), out in zip(chunk, outputs):
            w = (ramps_y[y][:, None] * ramps_x[x][None, :]).to(image.device)
            total[:, y : y + tile_size, x : x + tile_size] += out * w
            weights[:, y : y + tile_size, x : x + tile_size] += w
    assert total is not None
    return (total / weights)[:, :height, :width]


class BandStitcher:
    """Blends the overlapping tiles of one large image, fed row of tiles by row of tiles, into horizontal
    bands of whole rows, so that the full-resolution output is never held: only the rows the current row of
    tiles spans (channels x tile x width floats). Tiles are placed as `tile_grid(size, tile, overlap)` places
    them and weighted as `predict_tiled` weights them, so the bands together equal `predict_tiled`'s output;
    tiles left out (blank background) leave 0.

    `add(y, x, values)` takes one tile's (C, tile, tile) outputs, tiles in non-decreasing `y`; it returns the
    bands completed before row `y` as (first row, (C, rows, width) array); `finish()` returns the rest."""

    def __init__(self, size: tuple[int, int], tile: int, overlap: int, channels: int = 1):
        self.height, self.width = int(size[0]), int(size[1])
        self.tile, self.overlap = tile, overlap
        self.ramp_y = {y: edge_ramp(tile, overlap, y > 0, y + tile < self.height).numpy()
                       for y in tile_starts(self.height, tile, overlap)}
        self.ramp_x = {x: edge_ramp(tile, overlap, x > 0, x + tile < self.width).numpy()
                       for x in tile_starts(self.width, tile, overlap)}
        padded = max(self.width, tile)
        self.total = np.zeros((channels, tile, padded), np.float32)
        self.weight = np.zeros((tile, padded), np.float32)
        self.top = 0  # the image row of the accumulators' first row

    def add(self, y: int, x: int, values: np.ndarray) -> list[tuple[int, np.ndarray]]:
        if y not in self.ramp_y or x not in self.ramp_x:
            raise ValueError(f"a tile at ({y}, {x}) is not on the {self.tile}-pixel grid of a {self.height}x{self.width} image")
        if y < self.top:
            raise ValueError(f"tiles must come in non-decreasing rows: a tile at row {y} after row {self.top}")
        bands = self._flush(y)
        w = self.ramp_y[y][:, None] * self.ramp_x[x][None, :]
        self.total[:, :, x : x + self.tile] += np.asarray(values, np.float32) * w
        self.weight[:, x : x + self.tile] += w
        return bands

    def finish(self) -> list[tuple[int, np.ndarray]]:
        return self._flush(self.height)

    def _flush(self, until: int) -> list[tuple[int, np.ndarray]]:
        """The bands of rows [top, until): those no later tile reaches."""
        bands = []
        while self.top < min(until, self.height):
            n = min(until, self.height) - self.top
            n = min(n, self.tile)
            weight = self.weight[:n, : self.width]
            band = np.zeros((self.total.shape[0], n, self.width), np.float32)
            if weight.any():  # else rows no tile reached (glass)
                np.divide(self.total[:, :n, : self.width], weight, out=band, where=weight > 0)
            if self.weight.any():
                self.total[:, :-n], self.weight[:-n] = self.total[:, n:].copy(), self.weight[n:].copy()
                self.total[:, -n:], self.weight[-n:] = 0, 0
            bands.append((self.top, band))
            self.top += n
        return bands
