"""`lightning-cv crop`: predict each image's box (or every object's), crop the full-resolution original.

With a square-box model (configs/bbox.yaml), writes under `--out`:
  train/<image>      the crops (same file names), ready for a classifier: add a labels CSV as
                     `<out>/train.csv` (image,label) and `fit --config configs/cls.yaml --data.data_dir <out>`
  boxes.csv          the predicted squares in original pixels (image,x,y,size): correct it by hand and
                     retrain the box model with `--data.csv boxes.csv`
  contact_sheet.png  the originals with their boxes, for a quick review
With a detection model (detect -> crop -> classify), a crop per box the model's decisions keep:
  train/<stem>_<k><ext>  the crops, best box first
  crops.csv          image (the crop), source (the original), class, score, the box x_min, y_min, x_max, y_max
                     in original pixels: add a label column to train a classifier on the crops
  contact_sheet.png  the originals with their boxes
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from lightning_cv.data.augment import build_pipeline, letterbox
from lightning_cv.data.base import list_images
from lightning_cv.errors import MissingFileError, UserInputError
from lightning_cv.io.boxes import clamp_box, expand_square, original_square
from lightning_cv.io.boxes import crop as crop_image
from lightning_cv.io.images import read_image, write_csv, write_image
from lightning_cv.pictures.draw import image_grid
from lightning_cv.tasks.base import CVTask
from lightning_cv.tasks.checkpoints import load_task

BOX_COLOR, CROP_COLOR = (230, 0, 0), (255, 200, 0)
BOX_NAMES = ("x_min", "y_min", "x_max", "y_max")
CROP_COLUMNS = ["image", "source", "class", "score", *BOX_NAMES]


def draw_boxes(image: np.ndarray, square: tuple[int, int, int], crop_box: tuple[int, int, int, int], thumb: int) -> np.ndarray:
    """A `thumb`-pixel letterboxed thumbnail of an original with its square (red) and crop (yellow)."""
    height, width = image.shape[:2]
    scale = thumb / max(height, width)
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    tile = np.zeros((thumb, thumb, 3), np.uint8)
    tile[: small.shape[0], : small.shape[1]] = small
    x, y, side = square
    cv2.rectangle(tile, (round(x * scale), round(y * scale)), (round((x + side) * scale), round((y + side) * scale)), BOX_COLOR, 1)
    x0, y0, x1, y1 = crop_box
    cv2.rectangle(tile, (round(x0 * scale), round(y0 * scale)), (round(x1 * scale), round(y1 * scale)), CROP_COLOR, 1)
    return tile


def crop(
    *,
    ckpt_path: Path,
    images: Path,
    config: Path | None = None,
    out: Path,
    margin: float = 0.1,
    batch_size: int = 32,
    sheet_images: int = 64,
    thumb_size: int = 160,
) -> Path:
    """Crop every image in a folder around its predicted square box, or around every object a detection model
    finds, at full resolution.

    Args:
        ckpt_path: a box-model checkpoint (`lightning-cv fit --config configs/bbox.yaml`), or a detection one (a
            task that finds boxes: configs/detection.yaml), whose threshold and NMS (--model.postprocess of its
            fit's inference options) decide the boxes.
        config: the training config; needed only for checkpoints that do not name their task class.
        images: folder of original images.
        out: output folder (train/ crops, boxes.csv, contact_sheet.png).
        margin: grow the square (a detected box) by this share of its side on each edge before cropping.
        batch_size: images per forward pass.
        sheet_images: how many originals the contact sheet shows (the first ones, sorted by name).
        thumb_size: contact-sheet thumbnail side in pixels.
    """
    ckpt_path, images, out = Path(ckpt_path), Path(images), Path(out)
    if not ckpt_path.is_file():
        raise MissingFileError(f"--ckpt_path: checkpoint {ckpt_path} does not exist")
    if margin < 0:
        raise UserInputError(f"--margin must be >= 0, got {margin}")
    if (out / "train").resolve() == images.resolve():
        raise UserInputError(f"--out {out}: the crops would replace the images they are cut from ({images}); "
                             "write them to another folder")
    model = load_task(ckpt_path, Path(config) if config else None)
    paths = list_images(images)
    if "box" in model.outputs:
        rows, tiles = crop_squares(model, paths, out, margin, batch_size, sheet_images, thumb_size)
        write_csv(pd.DataFrame(rows, columns=["image", "x", "y", "size"]), out / "boxes.csv")
        table = out / "boxes.csv"
    else:
        rows, tiles = crop_detections(model, paths, out, margin, batch_size, sheet_images, thumb_size)
        write_csv(pd.DataFrame(rows, columns=CROP_COLUMNS), out / "crops.csv")
        table = out / "crops.csv"
    write_image(out / "contact_sheet.png", image_grid(tiles))
    print(f"wrote {len(rows)} crops to {out / 'train'}, boxes to {table}, review sheet {out / 'contact_sheet.png'}")
    return out


def crop_squares(model: CVTask, paths: list[Path], out: Path, margin: float, batch_size: int, sheet_images: int,
                 thumb_size: int) -> tuple[list[dict], list[np.ndarray]]:
    """One square per image (a box model's), grown by `margin`: the crop under the image's own name."""
    size = model.image_size
    pipeline = build_pipeline(None, pre=letterbox(size))
    rows, tiles = [], []
    for start in range(0, len(paths), batch_size):
        chunk = [read_image(p) for p in paths[start : start + batch_size]]
        with torch.no_grad():
            boxes = model(torch.stack([pipeline(image=im)["image"] for im in chunk])).float().numpy()
        for path, image, box in zip(paths[start : start + batch_size], chunk, boxes):
            height, width = image.shape[:2]
            square = original_square(box, height, width, size)
            x0, y0, side = expand_square(*square, margin)
            crop_box = clamp_box(x0, y0, x0 + side, y0 + side, height, width)
            write_image(out / "train" / path.name, np.ascontiguousarray(crop_image(image, crop_box)))
            rows.append({"image": path.name, "x": square[0], "y": square[1], "size": square[2]})
            if len(tiles) < sheet_images:
                tiles.append(draw_boxes(image, square, crop_box, thumb_size))
    return rows, tiles


def crop_detections(model: CVTask, paths: list[Path], out: Path, margin: float, batch_size: int, sheet_images: int,
                    thumb_size: int) -> tuple[list[dict], list[np.ndarray]]:
    """Every box the model keeps (`CVTask.find_boxes`), grown by `margin` of its width and height on each edge."""
    rows, tiles = [], []
    for start in range(0, len(paths), batch_size):
        chunk = [read_image(p) for p in paths[start : start + batch_size]]
        for path, image, found in zip(paths[start : start + batch_size], chunk, model.find_boxes(chunk)):
            height, width = image.shape[:2]
            crop_boxes = []
            for k, ((x0, y0, x1, y1), label, score) in enumerate(zip(found["boxes"], found["labels"], found["scores"])):
                dx, dy = margin * (x1 - x0), margin * (y1 - y0)
                crop_box = clamp_box(x0 - dx, y0 - dy, x1 + dx, y1 + dy, height, width)
                name = f"{path.stem}_{k}{path.suffix}"
                write_image(out / "train" / name, np.ascontiguousarray(crop_image(image, crop_box)))
                rows.append({"image": name, "source": path.name, "class": model.class_names[int(label)],
                             "score": round(float(score), 4), **dict(zip(BOX_NAMES, (round(float(v), 1) for v in (x0, y0, x1, y1))))})
                crop_boxes.append(crop_box)
            if len(tiles) < sheet_images:
                tiles.append(draw_detections(image, crop_boxes, thumb_size))
    return rows, tiles


def draw_detections(image: np.ndarray, boxes: list[tuple[int, int, int, int]], thumb: int) -> np.ndarray:
    """A `thumb`-pixel letterboxed thumbnail of an original with its crops (yellow)."""
    height, width = image.shape[:2]
    scale = thumb / max(height, width)
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    tile = np.zeros((thumb, thumb, 3), np.uint8)
    tile[: small.shape[0], : small.shape[1]] = small
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(tile, (round(x0 * scale), round(y0 * scale)), (round(x1 * scale), round(y1 * scale)), CROP_COLOR, 1)
    return tile
