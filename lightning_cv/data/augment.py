"""Albumentations pipelines built from YAML. The only module that imports albumentations.

A pipeline is a list of one-key mappings, transform name -> arguments; composites (OneOf, SomeOf,
Sequential) take a nested `transforms` list::

    - HorizontalFlip: {p: 0.5}
    - OneOf:
        p: 0.5
        transforms:
          - RandomBrightnessContrast: {p: 1.0}
          - HueSaturationValue: {p: 1.0}

Transforms are constructed directly, so an omitted `p` is the transform's own default (never the
0.5 that `A.from_dict` substitutes), and unknown arguments raise instead of being dropped.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

AugmentSpec = list[dict[str, Any]]

_COMPOSITES = {"OneOf", "SomeOf", "Sequential", "OneOrOther", "SelectiveChannelTransform"}


def _transform_names() -> list[str]:
    return [n for n in dir(A) if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)]


def build_transform(spec: dict[str, Any]) -> A.BasicTransform | A.BaseCompose:
    """One `{Name: {args}}` mapping to an albumentations transform, with a helpful error on a typo."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"augmentation entry must be a one-key mapping {{Name: {{args}}}}, got {spec!r}")
    (name, args), = spec.items()
    args = dict(args or {})
    cls = getattr(A, name, None)
    if not isinstance(cls, type):
        close = difflib.get_close_matches(name, _transform_names() + sorted(_COMPOSITES), n=3)
        raise ValueError(f"unknown albumentations transform {name!r}" + (f"; did you mean {close}?" if close else ""))
    if name in _COMPOSITES:
        args["transforms"] = [build_transform(s) for s in args.get("transforms", [])]
    with warnings.catch_warnings():
        # albumentations 2 warns and drops renamed arguments; turn that into an error instead.
        warnings.simplefilter("error", UserWarning)
        try:
            transform = cls(**args)
        except UserWarning as err:
            raise ValueError(f"{name}: {err}") from None
        except TypeError as err:
            raise ValueError(f"{name}: {err}") from None
    if getattr(transform, "invalid_args", None):
        raise ValueError(f"{name}: argument(s) {transform.invalid_args} are not valid (albumentations 2.0 renamed many)")
    return transform


def build_pipeline(
    spec: Sequence[dict[str, Any]] | None,
    *,
    pre: Sequence[A.BasicTransform] = (),
    bboxes: bool = False,
    seed: int | None = None,
    post: Sequence[A.BasicTransform] = (),
) -> A.Compose:
    """`pre` (resizing, fixed by the task) + the configured augmentations + `post` (e.g. stride padding,
    which flips must not move) + float [0, 1] CHW tensor.

    Normalisation to the backbone's mean/std happens inside the model, so it always matches the
    backbone and exported models take plain [0, 1] RGB.
    """
    transforms = [*pre, *(build_transform(s) for s in spec or ()), *post, A.ToFloat(max_value=255.0), ToTensorV2()]
    bbox_params = A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True, min_visibility=0.0) if bboxes else None
    return A.Compose(transforms, bbox_params=bbox_params, strict=True, seed=seed)


def build_box_pipeline(
    spec: Sequence[dict[str, Any]] | None,
    *,
    pre: Sequence[A.BasicTransform] = (),
    seed: int | None = None,
    min_visibility: float = 0.0,
    min_size: float = 1.0,
) -> A.Compose:
    """`build_pipeline` for detection: pascal_voc boxes with a `labels` field follow every transform, clipped to
    the image; a box left with less than `min_visibility` of its area, or narrower or lower than `min_size`
    pixels, is dropped."""
    transforms = [*pre, *(build_transform(s) for s in spec or ()), A.ToFloat(max_value=255.0), ToTensorV2()]
    params = A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True, filter_invalid_bboxes=True,
                          min_visibility=min_visibility, min_width=min_size, min_height=min_size)
    return A.Compose(transforms, bbox_params=params, strict=True, seed=seed)


class Preprocess:
    """The fixed, pre-augmentation steps alone (no tensor conversion) on one image or one mask:
    what the cache (`lightning_cv.io.cache`) stores. Deterministic, so cached and uncached samples agree."""

    def __init__(self, transforms: Sequence[A.BasicTransform], target: str = "image"):
        self.transforms = list(transforms)
        self.compose = A.Compose(self.transforms, strict=True)
        self.target = target

    def __call__(self, array: np.ndarray) -> np.ndarray:
        if self.target == "mask":
            # albumentations reads the size from the image: a one-channel stand-in of the mask's size.
            return self.compose(image=np.zeros(array.shape[:2], np.uint8), mask=array)["mask"]
        return self.compose(image=array)["image"]


def image_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """--data.image_size as (height, width): one side for a square, or [height, width]."""
    hw = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"image_size must be one positive side or [height, width], got {size!r}")
    return hw  # type: ignore[return-value]


def resize(height: int, width: int) -> A.BasicTransform:
    return A.Resize(height, width, interpolation=cv2.INTER_AREA, p=1.0)


def letterbox(size: int | Sequence[int], fill: int = 0) -> list[A.BasicTransform]:
    """Shrink (or grow) the image to fit `size` (one side, or [height, width]) with its aspect kept, and pad
    it to that size, image at the top-left (`boxes.letterbox_shape` gives the image's part)."""
    if isinstance(size, int):
        fit = A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_AREA, p=1.0)
        height = width = size
    else:
        height, width = image_hw(size)
        fit = A.LongestMaxSize(max_size_hw=(height, width), interpolation=cv2.INTER_AREA, p=1.0)
    return [
        fit,
        A.PadIfNeeded(height, width, position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=fill, fill_mask=0, p=1.0),
    ]


def random_crop(height: int, width: int) -> A.BasicTransform:
    """A random (height, width) window of the image and its mask (the image must be at least that large)."""
    return A.RandomCrop(height, width, p=1.0)


def pad_to_multiple(divisor: int = 32) -> A.BasicTransform:
    """Pad bottom/right so height and width are multiples of `divisor` (the network's output stride)."""
    return A.PadIfNeeded(
        min_height=None, min_width=None, pad_height_divisor=divisor, pad_width_divisor=divisor,
        position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0,
    )


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: give each worker (and each DDP rank) its own augmentation stream.

    `Compose(seed=)` owns its RNG, so seeding numpy/torch alone leaves every worker repeating the
    same augmentations.
    """
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if isinstance(transform, A.Compose):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        transform.set_random_seed((torch.initial_seed() + 997 * rank) % 2**32)


def reseed(transform: Any, seed: int) -> None:
    if isinstance(transform, A.Compose):
        transform.set_random_seed(seed % 2**32)


