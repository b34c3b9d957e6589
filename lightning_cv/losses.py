"""Named losses, thin over torch / torchvision / smp: configs name a loss, one function builds it."""

from __future__ import annotations

import difflib

import torch
from torch import nn

from lightning_cv.errors import UserInputError


# -- segmentation masks --------------------------------------------------------------------------------
class SegmentationLoss(nn.Module):
    """A sum of named mask losses on logits, computed in float32 (Dice sums overflow fp16).

    Binary: logits (N, 1, H, W), target (N, H, W) of 0/1. Multiclass: logits (N, C, H, W), target
    (N, H, W) of class indices.
    """

    def __init__(self, parts: dict[str, nn.Module], binary: bool):
        super().__init__()
        self.parts = nn.ModuleDict(parts)
        self.binary = binary

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        target = target.float().view_as(logits) if self.binary else target.long()
        return sum(part(logits, target) for part in self.parts.values())


def _segmentation_part(name: str, binary: bool) -> nn.Module:
    import segmentation_models_pytorch as smp

    mode = "binary" if binary else "multiclass"
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


def segmentation_loss(name: str, num_classes: int) -> SegmentationLoss:
    """A mask loss by name: dice, bce, ce, focal, lovasz, or a sum such as bce+dice or ce+dice.

    `num_classes` counts the background: 2 is binary (one logit channel), more is multiclass.
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
    binary = num_classes <= 2
    return SegmentationLoss({p: _segmentation_part(p, binary) for p in parts}, binary)
