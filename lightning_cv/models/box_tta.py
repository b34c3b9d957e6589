"""Test-time augmentation for boxes: the dihedral views of a batch (flips and quarter turns), and each view's boxes
mapped back.

A quarter turn or a flip maps an axis-aligned box onto an axis-aligned box of the same size, so every view of the
dihedral group is exact for boxes. A detector runs once per view; `view_predictions` returns, per image, the views'
predictions in the original orientation, for `predictions.box_fusion.fuse_boxes` to fuse (weighted boxes fusion,
as the Kaggle kernels do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

BoxView = Literal["none", "hflip", "vflip", "hvflip", "rot90", "rot270", "rot90_hflip", "rot270_hflip"]
BoxTTAMode = Literal["none", "hflip", "flip", "d4"]
# Each view as (quarter turns counterclockwise, mirrored first): a vertical flip is a half turn of the mirror image.
DIHEDRAL: dict[str, tuple[int, bool]] = {"none": (0, False), "hflip": (0, True), "vflip": (2, True), "hvflip": (2, False),
                                         "rot90": (1, False), "rot270": (3, False), "rot90_hflip": (1, True),
                                         "rot270_hflip": (3, True)}
MODES: dict[str, list[str]] = {"none": ["none"], "hflip": ["none", "hflip"], "flip": ["none", "hflip", "vflip", "hvflip"],
                               "d4": list(DIHEDRAL)}


def views(mode: BoxTTAMode) -> list[BoxView]:
    """none: the image; hflip: + its mirror; flip: + vertical and both (4 views); d4: + the quarter turns, mirrored
    or not (8 views)."""
    if mode not in MODES:
        raise ValueError(f"unknown box TTA mode {mode!r}; choose {', '.join(MODES)}")
    return list(MODES[mode])  # type: ignore[return-value]


def check_view(view: str) -> tuple[int, bool]:
    if view not in DIHEDRAL:
        raise ValueError(f"unknown view {view!r}; choose {', '.join(DIHEDRAL)}")
    return DIHEDRAL[view]


def flip_images(images: torch.Tensor, view: BoxView) -> torch.Tensor:
    """A batch (N, C, H, W) seen through `view` (a quarter turn swaps H and W)."""
    turns, mirrored = check_view(view)
    images = images.flip(-1) if mirrored else images
    return torch.rot90(images, turns, dims=(-2, -1)) if turns else images


def _copy(boxes: Any) -> Any:
    return boxes.clone() if isinstance(boxes, torch.Tensor) else np.array(boxes, copy=True)


def _mirror(boxes: Any, width: float) -> Any:
    out = _copy(boxes)
    out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return out


def _turn(boxes: Any, size: tuple[int, int], clockwise: bool) -> Any:
    """Boxes of an image of `size` (height, width) after a quarter turn of it (the image is then width x height)."""
    height, width = size
    out = _copy(boxes)
    if clockwise:  # (x, y) -> (height - y, x)
        out[:, 0], out[:, 1], out[:, 2], out[:, 3] = height - boxes[:, 3], boxes[:, 0], height - boxes[:, 1], boxes[:, 2]
    else:  # (x, y) -> (y, width - x)
        out[:, 0], out[:, 1], out[:, 2], out[:, 3] = boxes[:, 1], width - boxes[:, 2], boxes[:, 3], width - boxes[:, 0]
    return out


def view_boxes(boxes: Any, size: tuple[int, int], view: BoxView) -> Any:
    """Boxes (K, 4) x_min, y_min, x_max, y_max of an image of `size` (height, width) as `view` shows them."""
    turns, mirrored = check_view(view)
    out = _mirror(boxes, size[1]) if mirrored else _copy(boxes)
    for turn in range(turns):
        out = _turn(out, size if turn % 2 == 0 else size[::-1], clockwise=False)
    return out


def unflip_boxes(boxes: Any, size: tuple[int, int], view: BoxView) -> Any:
    """Boxes (K, 4) found in `view` of an image of `size` (height, width), back in the original's pixels (numpy or
    torch, as given): the inverse of `view_boxes`."""
    turns, mirrored = check_view(view)
    out = _copy(boxes)
    for turn in range(turns):  # the view is width x height after an odd number of turns
        out = _turn(out, size[::-1] if (turns - turn) % 2 else size, clockwise=True)
    return _mirror(out, size[1]) if mirrored else out


def view_predictions(detect: Callable[[torch.Tensor], list[dict[str, Any]]], images: torch.Tensor,
                     mode: BoxTTAMode) -> list[list[dict[str, Any]]]:
    """Per image, the predictions of every view of `mode` with boxes back in the original orientation.

    `detect` maps a batch (N, C, H, W) to one {"boxes", "labels", "scores"} per image, boxes in its pixels (a quarter
    turn's batch is N, C, W, H).
    """
    size = (int(images.shape[-2]), int(images.shape[-1]))
    out: list[list[dict[str, Any]]] = [[] for _ in range(len(images))]
    for view in views(mode):
        for i, pred in enumerate(detect(flip_images(images, view))):
            out[i].append({**pred, "boxes": unflip_boxes(pred["boxes"], size, view)})
    return out
