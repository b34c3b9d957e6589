"""The pieces of a run report (`lightning-cv report`): sections of notes, tables, plots and image tiles,
and the plots themselves (matplotlib, Agg, imported on first use so other commands do not pay for it).

Tasks build their own sections from these (`CVTask.report_sections`); the command lays them out.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from lightning_cv.pictures.draw import PALETTE

# The rows' images as the model saw them (RGB uint8, at the training resolution), by id; an empty list when
# the data cannot be read (a run moved away from its data).
ImageSource = Callable[[Sequence[str]], list[np.ndarray]]
MAX_TILES = 12
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


@dataclass
class Picture:
    """A PNG with a caption: a plot, or an image tile of a gallery."""

    png: bytes
    caption: str = ""
    alt: str = ""


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class Section:
    """One heading of the page: notes (short paragraphs), tables, plots, then a gallery of image tiles."""

    title: str
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    plots: list[Picture] = field(default_factory=list)
    gallery: list[Picture] = field(default_factory=list)


# -- matplotlib -------------------------------------------------------------------------------------------
def _figure(width: float = 4.4, height: float = 3.2, columns: int = 1) -> tuple[Any, Any]:
    """A matplotlib Figure (no pyplot: no global state, no GUI backend) and its axes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(1, columns)


def _png(figure: Any, caption: str) -> Picture:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return Picture(buffer.getvalue(), caption, caption)


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str,
              styles: dict[str, str] | None = None, colors: dict[str, str] | None = None,
              marks: dict[str, float] | None = None) -> Picture:
    """Lines by label ({label: (x, y)}); `styles` gives a label a line style ("--"), `colors` a colour
    (default: one per label), `marks` a vertical dotted line at an x (a tuned threshold) in its colour.
    An x axis of epochs gets whole-number ticks."""
    from matplotlib.ticker import MaxNLocator

    figure, ax = _figure()
    for k, (label, (x, y)) in enumerate(series.items()):
        color = (colors or {}).get(label, COLORS[k % len(COLORS)])
        ax.plot(x, y, (styles or {}).get(label, "-"), label=label, color=color, marker="." if len(x) < 30 else None)
        if marks and label in marks:
            ax.axvline(marks[label], color=color, linestyle=":", linewidth=1)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if xlabel == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7, ncols=2 if len(series) > 6 else 1)
    return _png(figure, title)


def histogram(values: dict[str, np.ndarray], title: str, xlabel: str, bins: int = 20,
              value_range: tuple[float, float] | None = None) -> Picture:
    """Overlaid histograms by label (counts)."""
    figure, ax = _figure()
    for k, (label, data) in enumerate(values.items()):
        data = np.asarray(data, np.float64)
        data = data[np.isfinite(data)]
        ax.hist(data, bins=bins, range=value_range, alpha=0.55 if len(values) > 1 else 0.9, label=f"{label} (n={len(data)})",
                color=COLORS[k % len(COLORS)])
    ax.set(title=title, xlabel=xlabel, ylabel="count")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(figure, title)


def scatter(x: np.ndarray, y: np.ndarray, title: str, xlabel: str, ylabel: str) -> Picture:
    """Points with the y = x diagonal (predicted against true)."""
    figure, ax = _figure(3.8, 3.6)
    ax.scatter(x, y, s=6, alpha=0.5, color=COLORS[0])
    low, high = float(np.nanmin([x.min(), y.min()])), float(np.nanmax([x.max(), y.max()]))
    ax.plot([low, high], [low, high], "--", color="grey", linewidth=1)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return _png(figure, title)


def confusion_plot(matrix: np.ndarray, class_names: list[str]) -> Picture:
    """Counts and row-normalised shares side by side (rows: true class, columns: predicted)."""
    n = len(class_names)
    side = min(9.0, 2.6 + 0.45 * n)
    figure, axes = _figure(2 * side, side, columns=2)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for ax, values, title, fmt in ((axes[0], matrix, "counts", "{:.0f}"), (axes[1], shares, "row-normalised", "{:.2f}")):
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if shares[i, j] > 0.6 else "black")
        ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(n), class_names, fontsize=7)
        ax.set(title=title, xlabel="predicted", ylabel="true")
    return _png(figure, "confusion matrix")


def reliability_plot(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> Picture:
    """Accuracy against confidence in equal-width bins, with the expected calibration error (ECE)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    accuracy = np.bincount(which, weights=correct.astype(np.float64), minlength=bins) / np.maximum(count, 1)
    mean_conf = np.bincount(which, weights=confidence, minlength=bins) / np.maximum(count, 1)
    ece = float(np.sum(count / max(len(confidence), 1) * np.abs(accuracy - mean_conf)))
    figure, ax = _figure(3.8, 3.6)
    used = count > 0
    ax.bar(edges[:-1][used], accuracy[used], width=1 / bins, align="edge", alpha=0.7, color=COLORS[0], label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    ax.set(title=f"reliability (ECE {ece:.3f})", xlabel="confidence (top probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    return _png(figure, f"reliability (ECE {ece:.3f})")


# -- image tiles ----------------------------------------------------------------------------------------
def tile(image: np.ndarray, caption: str, side: int = 128) -> Picture:
    """An RGB image as a PNG thumbnail whose longer side is `side` (small images scaled up, sharp)."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    interpolation = cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA
    small = cv2.resize(np.ascontiguousarray(image), (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=interpolation)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode the tile {caption!r} as PNG")
    return Picture(encoded.tobytes(), caption, caption)


def side_by_side(images: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """RGB images of one height in a row, separated by white gaps (image | truth | prediction)."""
    h = images[0].shape[0]
    parts: list[np.ndarray] = []
    for image in images:
        parts += [image, np.full((h, gap, 3), 255, np.uint8)]
    return np.hstack(parts[:-1])


def mask_overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(K, h, w) 0/1 class masks coloured over an RGB image (class k in the palette's colour k + 1)."""
    if image.shape[:2] != masks.shape[1:]:
        image = cv2.resize(image, (masks.shape[2], masks.shape[1]), interpolation=cv2.INTER_AREA)
    out = image.astype(np.float32)
    for k, mask in enumerate(masks.astype(bool)):
        out[mask] = (1 - alpha) * out[mask] + alpha * PALETTE[1 + k % (len(PALETTE) - 1)]
    return out.round().astype(np.uint8)


def gallery(ids: Sequence[str], captions: Sequence[str], images: ImageSource,
            draw: Callable[[int, np.ndarray], np.ndarray] | None = None, side: int = 128) -> tuple[list[Picture], list[str]]:
    """Tiles (longer side `side`) of the first MAX_TILES ids, each drawn over by `draw(i, image)` when
    given, and a note when the images cannot be read."""
    ids, captions = list(ids)[:MAX_TILES], list(captions)[:MAX_TILES]
    if not ids:
        return [], []
    found = images(ids)
    if not found:
        return [], ["images not shown: the run's training data could not be read (see the header's data)"]
    tiles = [tile(draw(i, image) if draw else image, f"{id_}: {text}", side) for i, (id_, image, text) in
             enumerate(zip(ids, found, captions))]
    return tiles, []
