"""Test-time augmentation as pure functions over a model's forward: flips and the 8 dihedral views.

Each view transforms the images, runs the model, turns outputs into probabilities and (for dense
outputs such as masks) maps them back to the original orientation; the probabilities are averaged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

TTAMode = Literal["none", "hflip", "flip", "d4"]
# How outputs become what TTA averages: probabilities (softmax, sigmoid) or the values themselves (identity).
Activation = Literal["softmax", "sigmoid", "identity"]
# (transform of the images, inverse for dense outputs), both over the last two (H, W) dimensions.
View = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]
EPS = 1e-7


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _vflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2)


def _dihedral(k: int, flip: bool) -> View:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))

    def inverse(y: torch.Tensor) -> torch.Tensor:
        y = torch.rot90(y, -k, dims=(-2, -1))
        return y.flip(-1) if flip else y

    return forward, inverse


def views(mode: TTAMode) -> list[View]:
    """none: 1 view; hflip: 2; flip: 3 (+ vertical); d4: 8 (4 rotations, each mirrored or not)."""
    if mode == "none":
        return [(_identity, _identity)]
    if mode == "hflip":
        return [(_identity, _identity), (_hflip, _hflip)]
    if mode == "flip":
        return [(_identity, _identity), (_hflip, _hflip), (_vflip, _vflip)]
    if mode == "d4":
        return [_dihedral(k, flip) for flip in (False, True) for k in range(4)]
    raise ValueError(f"unknown TTA mode {mode!r}; choose none, hflip, flip or d4")


def probabilities(outputs: torch.Tensor, activation: Activation) -> torch.Tensor:
    """Logits -> probabilities: softmax over dim 1 (single label, multiclass masks) or sigmoid; values
    (regression) stay as they are."""
    outputs = outputs.float()
    if activation == "identity":
        return outputs
    return outputs.softmax(dim=1) if activation == "softmax" else outputs.sigmoid()


def to_logits(probs: torch.Tensor, activation: Activation) -> torch.Tensor:
    """Logits whose activation gives back `probs` (clamped away from 0 and 1), so averaged
    probabilities go through the same code as a plain forward's outputs."""
    if activation == "identity":
        return probs
    probs = probs.clamp(EPS, 1 - EPS)
    return probs.log() if activation == "softmax" else probs.log() - (-probs).log1p()


def tta_probabilities(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    mode: TTAMode,
    activation: Activation = "softmax",
    dense: bool = False,
) -> torch.Tensor:
    """Mean probabilities over the views of `mode`; dense (N, C, H, W) outputs are transformed back
    to the original orientation before averaging."""
    total = None
    chosen = views(mode)
    for transform, inverse in chosen:
        probs = probabilities(forward(transform(images)), activation)
        if dense:
            probs = inverse(probs)
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(chosen)


def tta_logits(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    mode: TTAMode,
    activation: Activation = "softmax",
    dense: bool = False,
) -> torch.Tensor:
    """`tta_probabilities` as logits; with mode "none" the plain forward, untouched."""
    if mode == "none":
        return forward(images)
    return to_logits(tta_probabilities(forward, images, mode, activation, dense), activation)
