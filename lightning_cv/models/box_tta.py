"""Test-time augmentation for boxes: flipped views of a batch, and each view's boxes flipped back.

A detector runs once per view; `view_predictions` returns, per image, the views' predictions in the original
orientation, for `predictions.box_fusion.fuse_boxes` to fuse (weighted boxes fusion, as the Kaggle kernels do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

BoxView = Literal["none", "hflip", "vflip", "hvflip"]
BoxTTAMode = Literal["none", "hflip", "flip"]
# The (vertical, horizontal) flips of each view: flipping is its own inverse, so one table serves both ways.
FLIPS = {"none": (False, False), "hflip": (False, True), "vflip": (True, False), "hvflip": (True, True)}
MODES: dict[str, list[str]] = {"none": ["none"], "hflip": ["none", "hflip"], "flip": ["none", "hflip", "vflip", "hvflip"]}


def views(mode: BoxTTAMode) -> list[BoxView]:
    """none: the image; hflip: + its mirror; flip: + vertical and both (4 views). No rotations: a rotated box's
    axis-aligned hull is larger than the object."""
    if mode not in MODES:
        raise ValueError(f"unknown box TTA mode {mode!r}; choose {', '.join(MODES)}")
    return list(MODES[mode])  # type: ignore[return-value]


def check_view(view: str) -> tuple[bool, bool]:
    if view not in FLIPS:
        raise ValueError(f"unknown view {view!r}; choose {', '.join(FLIPS)}")
    return FLIPS[view]


def flip_images(images: torch.Tensor, view: BoxView) -> torch.Tensor:
    """A batch (N, C, H, W) seen through `view`."""
    vertical, horizontal = check_view(view)
    dims = [d for d, on in ((-2, vertical), (-1, horizontal)) if on]
    return images.flip(dims) if dims else images


def unflip_boxes(boxes: Any, size: tuple[int, int], view: BoxView) -> Any:
    """Boxes (K, 4) x_min, y_min, x_max, y_max found in `view` of an image of `size` (height, width), back in the
    original's pixels (numpy or torch, as given). A flip is its own inverse, so this also flips boxes into a view."""
    vertical, horizontal = check_view(view)
    height, width = size
    out = boxes.clone() if isinstance(boxes, torch.Tensor) else np.array(boxes, copy=True)
    if horizontal:
        out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    if vertical:
        out[:, 1], out[:, 3] = height - boxes[:, 3], height - boxes[:, 1]
    return out


def view_predictions(detect: Callable[[torch.Tensor], list[dict[str, Any]]], images: torch.Tensor,
                     mode: BoxTTAMode) -> list[list[dict[str, Any]]]:
    """Per image, the predictions of every view of `mode` with boxes back in the original orientation.

    `detect` maps a batch (N, C, H, W) to one {"boxes", "labels", "scores"} per image, boxes in its pixels.
    """
    size = (int(images.shape[-2]), int(images.shape[-1]))
    out: list[list[dict[str, Any]]] = [[] for _ in range(len(images))]
    for view in views(mode):
        for i, pred in enumerate(detect(flip_images(images, view))):
            out[i].append({**pred, "boxes": unflip_boxes(pred["boxes"], size, view)})
    return out
