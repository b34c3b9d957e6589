"""Masks as competitions exchange them: Kaggle run-length encoding (whole, or band by band for masks too
large to hold), probabilities restored to an image's original size, and instances matched as Airbus scores
them."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from lightning_cv.io.boxes import letterbox_shape

# How competitions write an empty mask: an empty cell, NaN (Clouds, Airbus), -1 (SIIM pneumothorax).
EMPTY_RLE = ("", "-1", "nan", "NaN")


def is_empty_rle(rle: object) -> bool:
    """An empty mask in any of the competitions' spellings."""
    return rle is None or (isinstance(rle, float) and np.isnan(rle)) or str(rle).strip() in EMPTY_RLE


def rle_encode(mask: np.ndarray, order: str = "C") -> str:
    """Kaggle run-length encoding: 1-indexed "start length" pairs; order "F" for column-major comps."""
    pixels = np.asarray(mask).flatten(order=order) > 0
    padded = np.concatenate([[False], pixels, [False]])
    runs = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(map(str, runs))


class RLEWriter:
    """`rle_encode` of a mask too large to hold, fed band by band in its pixel order: for order "C"
    horizontal bands (whole rows) from the top, for "F" vertical bands (whole columns) from the left, so
    that each band continues the flat pixel sequence; a run crossing bands is written once."""

    def __init__(self, shape: tuple[int, int], order: str = "C"):
        if order not in ("C", "F"):
            raise ValueError(f"RLE order {order!r}: C (row-major) or F (column-major)")
        self.shape, self.order = (int(shape[0]), int(shape[1])), order
        self._done = 0  # pixels added so far
        self._open: int | None = None  # 0-based start of the run the last band ended in
        self._parts: list[str] = []

    def add(self, band: np.ndarray) -> None:
        """The next rows (order C) or columns (order F) of the mask; nonzero is foreground."""
        band = np.asarray(band)
        across = 1 if self.order == "C" else 0  # the axis every band spans whole
        if band.ndim != 2 or band.shape[across] != self.shape[across]:
            whole = ("rows", f"(n, {self.shape[1]})") if self.order == "C" else ("columns", f"({self.shape[0]}, n)")
            raise ValueError(f"order {self.order} takes bands of whole {whole[0]}, shaped {whole[1]}, not {band.shape}")
        pixels = band.flatten(order=self.order) > 0
        if self._done + pixels.size > self.shape[0] * self.shape[1]:
            raise ValueError(f"the bands hold more pixels than a {self.shape[0]}x{self.shape[1]} mask")
        if pixels.size == 0:
            return
        # Positions where the value flips, alternately a run's start and its end, the open run's start first.
        flips = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
        if pixels[0] != (self._open is not None):
            flips = np.concatenate([[0], flips])
        flips = flips + self._done
        if self._open is not None:
            flips = np.concatenate([[self._open], flips])
        self._open = int(flips[-1]) if flips.size % 2 else None
        starts, ends = flips[0 : flips.size - flips.size % 2 : 2], flips[1::2]
        if starts.size:
            self._parts.append(" ".join(map(str, np.column_stack([starts + 1, ends - starts]).ravel())))
        self._done += pixels.size

    def result(self) -> str:
        """The whole mask's RLE, once the bands have covered it."""
        total = self.shape[0] * self.shape[1]
        if self._done != total:
            raise ValueError(f"the bands held {self._done} of a {self.shape[0]}x{self.shape[1]} mask's {total} pixels")
        tail = [f"{self._open + 1} {total - self._open}"] if self._open is not None else []
        return " ".join([*self._parts, *tail])


def rle_encode_bands(bands: Iterable[np.ndarray], shape: tuple[int, int], order: str = "C") -> str:
    """`rle_encode` of a mask of `shape` given as bands (`RLEWriter`), never holding it whole."""
    writer = RLEWriter(shape, order)
    for band in bands:
        writer.add(band)
    return writer.result()


def rle_decode(rle: str | float | None, shape: tuple[int, int], order: str = "C") -> np.ndarray:
    """Inverse of `rle_encode`: an HxW uint8 mask of 0/1; an empty string, NaN or -1 is an empty mask."""
    mask = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    if not is_empty_rle(rle):
        rle = str(rle)
        numbers = np.asarray(rle.split(), dtype=np.int64)
        if numbers.size % 2:
            raise ValueError(f"RLE has an odd number of values ({numbers.size}): {rle[:60]!r}")
        starts, lengths = numbers[0::2] - 1, numbers[1::2]
        if (starts < 0).any() or (starts + lengths > mask.size).any():
            raise ValueError(f"RLE runs fall outside a {shape[0]}x{shape[1]} mask")
        for start, length in zip(starts, lengths):
            mask[start : start + length] = 1
    return mask.reshape(shape, order=order)


class RLERuns:
    """A run-length encoded mask of a large image, never decoded whole: its runs parsed once, any window
    decoded from the runs that cross it, its pixel count, and random foreground pixels (for tile sampling)."""

    def __init__(self, rle: str | float | None, shape: tuple[int, int], order: str = "C"):
        if order not in ("C", "F"):
            raise ValueError(f"RLE order {order!r}: C (row-major) or F (column-major)")
        self.shape, self.order = (int(shape[0]), int(shape[1])), order
        numbers = np.zeros(0, np.int64) if is_empty_rle(rle) else np.asarray(str(rle).split(), dtype=np.int64)
        if numbers.size % 2:
            raise ValueError(f"RLE has an odd number of values ({numbers.size}): {str(rle)[:60]!r}")
        order_ = np.argsort(numbers[0::2], kind="stable")
        self.starts, self.lengths = numbers[0::2][order_] - 1, numbers[1::2][order_]
        if (self.starts < 0).any() or (self.starts + self.lengths > self.shape[0] * self.shape[1]).any():
            raise ValueError(f"RLE runs fall outside a {self.shape[0]}x{self.shape[1]} mask")
        self.ends = self.starts + self.lengths

    @property
    def pixels(self) -> int:
        """How many pixels the mask covers."""
        return int(self.lengths.sum())

    def window(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        """The (height, width) uint8 0/1 window at (y, x), equal to `rle_decode(...)[y:y+height, x:x+width]`
        (0 outside the image); only the rows (order C) or columns (order F) it spans are decoded."""
        full_h, full_w = self.shape
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + height, full_h), min(x + width, full_w)
        out = np.zeros((height, width), np.uint8)
        if y0 >= y1 or x0 >= x1:
            return out
        # The band of whole lines (rows for C, columns for F) the window lies in, as a flat pixel range.
        line, first, last = (full_w, y0, y1) if self.order == "C" else (full_h, x0, x1)
        low, high = first * line, last * line
        band = np.zeros(high - low, np.uint8)
        lo, hi = np.searchsorted(self.ends, low, side="right"), np.searchsorted(self.starts, high, side="left")
        for start, end in zip(self.starts[lo:hi], self.ends[lo:hi]):
            band[max(start, low) - low : min(end, high) - low] = 1
        band = band.reshape(last - first, line)
        part = band[:, x0:x1] if self.order == "C" else band[:, y0:y1].T
        out[y0 - y : y1 - y, x0 - x : x1 - x] = part
        return out

    def sample(self, rng: np.random.Generator) -> tuple[int, int] | None:
        """A foreground pixel (y, x), every one equally likely; None for an empty mask."""
        if not self.lengths.size:
            return None
        run = rng.choice(self.lengths.size, p=self.lengths / self.lengths.sum())
        flat = int(self.starts[run] + rng.integers(self.lengths[run]))
        rows, cols = self.shape
        return (flat // cols, flat % cols) if self.order == "C" else (flat % rows, flat // rows)


def rle_pixels(rle: str) -> np.ndarray:
    """The flat pixel indices a Kaggle RLE string covers (no image size needed)."""
    if is_empty_rle(rle):
        return np.zeros(0, dtype=np.int64)
    numbers = np.asarray(str(rle).split(), dtype=np.int64)
    if numbers.size % 2:
        raise ValueError(f"RLE has an odd number of values ({numbers.size}): {str(rle)[:60]!r}")
    if numbers.size == 0:
        return numbers
    return np.concatenate([np.arange(s - 1, s - 1 + n) for s, n in zip(numbers[0::2], numbers[1::2])])


def restore_mask(probs: np.ndarray, size: tuple[int, int], binary: bool, threshold: float = 0.5,
                 letterboxed: bool = False) -> np.ndarray:
    """Probabilities (C, h, w) at model resolution -> an index mask (H, W) at the original size.

    `letterboxed`: the image was fitted into (h, w) with its aspect kept and padded (`augment.letterbox`);
    the padding is dropped first. The probabilities are resized (bilinear) before thresholding / argmax,
    so edges stay smooth.
    """
    height, width = int(size[0]), int(size[1])
    probs = np.asarray(probs, dtype=np.float32)
    if letterboxed:
        fit_h, fit_w = letterbox_shape(height, width, probs.shape[-2:])
        probs = probs[:, :fit_h, :fit_w]
    probs = np.ascontiguousarray(probs.transpose(1, 2, 0))
    resized = cv2.resize(probs, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, -1)
    if binary:
        return (resized[..., 0] > threshold).astype(np.uint8)
    return resized.argmax(axis=2).astype(np.uint8)


# TGS Salt and Airbus average over these IoU thresholds.
IOU_THRESHOLDS = np.arange(0.5, 1.0, 0.05)


def instance_f2(ious: np.ndarray) -> float:
    """Airbus, one image, from the IoU of every (predicted, true) instance pair: F2 = 5TP / (5TP + 4FN + FP)
    of instances matched one to one at IoU > t, averaged over t = 0.5 ... 0.95 (above 0.5 an instance
    matches at most one other); no instance on either side: 1, on one side only: 0."""
    if ious.shape[0] == 0 or ious.shape[1] == 0:
        return float(ious.shape[0] == ious.shape[1] == 0)
    scores = []
    for threshold in IOU_THRESHOLDS:
        matched = ious > threshold
        tp, fp, fn = int(matched.any(axis=0).sum()), int((~matched.any(axis=1)).sum()), int((~matched.any(axis=0)).sum())
        scores.append(5 * tp / (5 * tp + 4 * fn + fp))
    return float(np.mean(scores))


def component_ious(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of every (predicted, true) pair of instances, the connected components (8-connected, as
    submissions write them) of two binary masks."""
    n_pred, pred_labels = cv2.connectedComponents((pred > 0).astype(np.uint8), connectivity=8)
    n_true, true_labels = cv2.connectedComponents((truth > 0).astype(np.uint8), connectivity=8)
    pairs = np.bincount((pred_labels.astype(np.int64) * n_true + true_labels).ravel(), minlength=n_pred * n_true)
    table = pairs.reshape(n_pred, n_true)
    inter = table[1:, 1:]
    union = table[1:].sum(1)[:, None] + table[:, 1:].sum(0)[None, :] - inter
    return inter / np.maximum(union, 1)
