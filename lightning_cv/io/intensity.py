"""Intensities to 8 bits: high-bit-depth and float images (16-bit PNG/TIFF, DICOM) mapped over a window."""

from __future__ import annotations

from typing import Literal

import numpy as np

from lightning_cv.errors import UserInputError

# --data.window: [center, width] in the image's units, "file" (DICOM's own window), "percentile"
# (0.5-99.5 % of each image), or None (16-bit: the bits the image uses; DICOM: its stored bits).
Window = list[float] | Literal["file", "percentile"] | None
PERCENTILES = (0.5, 99.5)


def check_window(window: Window) -> tuple[float, float] | str | None:
    """`--data.window` as (low, high), "file", "percentile" or None; anything else is a one-line error."""
    if window is None or window in ("file", "percentile"):
        return window
    if isinstance(window, str) or len(window) != 2 or float(window[1]) <= 0:
        raise UserInputError(f"--data.window {window!r}: give [center, width] with width > 0, file or percentile")
    center, width = float(window[0]), float(window[1])
    return center - width / 2, center + width / 2


def used_bits_to_uint8(image: np.ndarray) -> np.ndarray:
    """A 16-bit image to 8 bits by the bits it actually uses: a 12-bit X-ray stored in 16 bits (0-4095)
    spans 0-255, not 0-16 as a blind /257 would leave it (8 bits at the least, so dark images stay dark)."""
    bits = max(8, int(image.max()).bit_length())
    return (image.astype(np.float32) * (255.0 / (2**bits - 1))).round().astype(np.uint8)


def window_to_uint8(image: np.ndarray, window: tuple[float, float] | str | None) -> np.ndarray:
    """`image` mapped linearly from `window` = (low, high) to 0-255 and clipped; "percentile" takes
    (low, high) from the image; None: uint8 as it is, 16-bit by the bits used, anything else min-max."""
    if window is None:
        if image.dtype == np.uint8:
            return image
        if image.dtype == np.uint16:
            return used_bits_to_uint8(image)
        window = (float(image.min()), float(image.max()))
    elif window == "percentile":
        window = tuple(float(v) for v in np.percentile(image, PERCENTILES))
    elif isinstance(window, str):
        raise UserInputError(f"--data.window {window}: only DICOM files carry their own window")
    low, high = window
    scaled = (image.astype(np.float32) - low) * (255.0 / max(high - low, 1e-6))
    return np.clip(scaled, 0, 255).round().astype(np.uint8)
