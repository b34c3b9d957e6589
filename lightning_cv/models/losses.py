"""Named losses, thin over torch / torchvision / smp: configs name a loss, one function builds it."""

from __future__ import annotations

import difflib

import torch
from torch import nn
from torchvision.ops import generalized_box_iou_loss

from lightning_cv.errors import UserInputError


# -- square boxes (cx, cy, side), normalised to the image ----------------------------------------------
def square_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 3) squares (cx, cy, side) -> (..., 4) corners (x0, y0, x1, y1)."""
    cx, cy, side = boxes.unbind(-1)
    half = side.abs() / 2
    return torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1)


class SquareBoxLoss(nn.Module):
    """A weighted sum of GIoU and coordinate losses between predicted and true squares.

    GIoU scores the overlap the metric measures (and still has a gradient when boxes do not
    overlap); the coordinate term (smooth L1 or MSE on cx, cy, side) steadies early training.
    """

    def __init__(self, giou: float = 0.0, smooth_l1: float = 0.0, mse: float = 0.0, beta: float = 0.05):
        super().__init__()
        self.weights = {"giou": giou, "smooth_l1": smooth_l1, "mse": mse}
        self.beta = beta

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = pred.float(), target.float()
        loss = pred.new_zeros(())
        if self.weights["giou"]:
            loss = loss + self.weights["giou"] * generalized_box_iou_loss(square_to_xyxy(pred), square_to_xyxy(target), reduction="mean")
        if self.weights["smooth_l1"]:
            loss = loss + self.weights["smooth_l1"] * nn.functional.smooth_l1_loss(pred, target, beta=self.beta)
        if self.weights["mse"]:
            loss = loss + self.weights["mse"] * nn.functional.mse_loss(pred, target)
        return loss


BOX_LOSSES = {
    "smooth_l1": dict(smooth_l1=1.0),
    "mse": dict(mse=1.0),
    "giou": dict(giou=1.0),
    "giou_smooth_l1": dict(giou=1.0, smooth_l1=5.0),
}


def box_loss(name: str) -> SquareBoxLoss:
    """A square-box loss by name: smooth_l1, mse, giou, or giou_smooth_l1 (GIoU + 5 x smooth L1)."""
    if name not in BOX_LOSSES:
        close = difflib.get_close_matches(name, list(BOX_LOSSES), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserInputError(f"unknown box loss {name!r}; choose one of {', '.join(BOX_LOSSES)}.{hint}")
    return SquareBoxLoss(**BOX_LOSSES[name])


# -- segmentation masks --------------------------------------------------------------------------------
class SegmentationLoss(nn.Module):
    """A sum of named mask losses on logits, computed in float32 (Dice sums overflow fp16).

    Binary: logits (N, 1, H, W), target (N, H, W) of 0/1. Multiclass: logits (N, C, H, W), target
    (N, H, W) of class indices. Multilabel: logits and 0/1 target (N, C, H, W), a sigmoid per class.
    """

    def __init__(self, parts: dict[str, nn.Module], mode: str):
        super().__init__()
        self.parts = nn.ModuleDict(parts)
        self.mode = mode

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        target = target.long() if self.mode == "multiclass" else target.float().view_as(logits)
        return sum(part(logits, target) for part in self.parts.values())


def _segmentation_part(name: str, mode: str) -> nn.Module:
    import segmentation_models_pytorch as smp

    binary = mode != "multiclass"  # one sigmoid per channel
    if name == "dice":
        return smp.losses.DiceLoss(mode, from_logits=True)
    if name == "focal":
        return smp.losses.FocalLoss(mode)
    if name == "lovasz":
        return smp.losses.LovaszLoss(mode, per_image=False, from_logits=True)
    if name == "bce":
        if not binary:
            raise UserInputError("loss 'bce' is for binary masks; multiclass masks take 'ce' (or ce+dice)")
        return nn.BCEWithLogitsLoss()
    if name == "ce":
        if binary:
            raise UserInputError("loss 'ce' is for multiclass masks; binary masks take 'bce' (or bce+dice)")
        return nn.CrossEntropyLoss()
    raise AssertionError(name)


SEGMENTATION_LOSSES = ("dice", "bce", "ce", "focal", "lovasz")


def segmentation_loss(name: str, num_classes: int, multilabel: bool = False) -> SegmentationLoss:
    """A mask loss by name: dice, bce, ce, focal, lovasz, or a sum such as bce+dice or ce+dice.

    `num_classes` counts the background: 2 is binary (one logit channel), more is multiclass; with
    `multilabel`, one sigmoid channel per class (no background; overlaps allowed).
    """
    parts = [p.strip() for p in name.split("+")]
    for part in parts:
        if part not in SEGMENTATION_LOSSES:
            close = difflib.get_close_matches(part, list(SEGMENTATION_LOSSES), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UserInputError(
                f"unknown segmentation loss {part!r}; choose from {', '.join(SEGMENTATION_LOSSES)}, "
                f"or join them with '+' (bce+dice).{hint}"
            )
    mode = "multilabel" if multilabel else "binary" if num_classes <= 2 else "multiclass"
    return SegmentationLoss({p: _segmentation_part(p, mode) for p in parts}, mode)
