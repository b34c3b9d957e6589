"""Box TTA: a box follows its image through every dihedral view and back; a detector's finds come back to the
original."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_cv.models.box_tta import (
    DIHEDRAL,
    flip_images,
    unflip_boxes,
    view_boxes,
    view_predictions,
    views,
)

VIEWS = ["none", "hflip", "vflip", "hvflip"]


def test_views_of_each_mode():
    assert views("none") == ["none"] and views("hflip") == ["none", "hflip"] and views("flip") == VIEWS
    assert views("d4")[:4] == VIEWS and len(set(views("d4"))) == 8
    with pytest.raises(ValueError, match="unknown box TTA mode"):
        views("rot45")


@pytest.mark.parametrize("view", list(DIHEDRAL))
def test_a_box_follows_its_image_through_every_view_and_back(view):
    # image 6 high, 8 wide; a block of pixels x 2..5, y 1..3: where the view's image has it is where its box goes
    image = torch.zeros(1, 1, 6, 8)
    image[..., 1:3, 2:5] = 1.0
    seen = flip_images(image, view)[0, 0]
    ys, xs = torch.nonzero(seen, as_tuple=True)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    box = np.array([[2.0, 1.0, 5.0, 3.0]], np.float32)
    np.testing.assert_array_equal(view_boxes(box, (6, 8), view), found)
    np.testing.assert_array_equal(unflip_boxes(found, (6, 8), view), box)
    assert seen.shape == ((8, 6) if view.startswith("rot") else (6, 8))


def test_flipped_box_coordinates():
    # image 6 high, 8 wide; box x 2..5, y 1..3: mirrored, x becomes 8 - 5 .. 8 - 2 = 3..6; flipped, y 6 - 3 .. 6 - 1
    box = torch.tensor([[2.0, 1.0, 5.0, 3.0]])
    assert unflip_boxes(box, (6, 8), "hflip").tolist() == [[3.0, 1.0, 6.0, 3.0]]
    assert unflip_boxes(box, (6, 8), "vflip").tolist() == [[2.0, 3.0, 5.0, 5.0]]
    assert unflip_boxes(box, (6, 8), "hvflip").tolist() == [[3.0, 3.0, 6.0, 5.0]]


def brightest_pixel(images: torch.Tensor) -> list[dict]:
    """A fake detector: a 1-pixel box around each image's brightest pixel."""
    out = []
    for image in images:
        flat = int(image.sum(0).argmax())
        y, x = divmod(flat, image.shape[-1])
        out.append({"boxes": torch.tensor([[x, y, x + 1, y + 1]], dtype=torch.float32),
                    "labels": torch.tensor([0]), "scores": torch.tensor([1.0])})
    return out


def test_detections_in_every_view_flip_back_to_the_original():
    images = torch.zeros(2, 3, 6, 8)
    images[0, :, 1, 2] = 1.0  # row 1, column 2: box (2, 1, 3, 2)
    images[1, :, 4, 7] = 1.0  # row 4, column 7: box (7, 4, 8, 5)
    seen = {tuple(brightest_pixel(flip_images(images, "hvflip"))[0]["boxes"][0].tolist())}
    assert seen == {(8 - 3, 6 - 2, 8 - 2, 6 - 1)}  # the view itself moves the pixel
    per_image = view_predictions(brightest_pixel, images, "d4")
    assert [len(p) for p in per_image] == [8, 8]
    for pred in per_image[0]:
        assert pred["boxes"].tolist() == [[2.0, 1.0, 3.0, 2.0]]
    for pred in per_image[1]:
        assert pred["boxes"].tolist() == [[7.0, 4.0, 8.0, 5.0]]
