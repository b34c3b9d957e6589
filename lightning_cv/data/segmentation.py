"""Semantic segmentation data: images with mask files (matched by stem) or an RLE CSV."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from lightning_cv.data.augment import (
    AugmentSpec,
    Preprocess,
    build_pipeline,
    image_hw,
    letterbox,
    pad_to_multiple,
    random_crop,
    resize,
)
from lightning_cv.data.base import CVDataModule, Rows, list_images
from lightning_cv.data.mask_layouts import decide_order, find_mask_files, find_rle_tables, mask_values
from lightning_cv.data.survey import Reading, Survey, shared_layout
from lightning_cv.errors import UserInputError
from lightning_cv.io.cache import CachedSource, content_id, file_version
from lightning_cv.io.file_checks import remembered
from lightning_cv.io.images import IMAGE_EXTENSIONS, DataError, check_image, read_image, read_mask
from lightning_cv.io.labels import read_table
from lightning_cv.io.masks import is_empty_rle, rle_decode

MASK_EXTENSIONS = (".png", ".gif", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Masks read to guess the class count before setup (setup then checks every mask).
CLASS_SAMPLE = 32
STRIDE = 32
# Images with a side above this many pixels are large: learnt from tiles (the slides task), not shrunk whole.
LARGE = 4096


def padded_size(size: int, stride: int = STRIDE) -> int:
    """The smallest multiple of the network stride that holds `size`."""
    return -(-size // stride) * stride


def crop_hw(crop: int | list[int], image_size: tuple[int, int]) -> tuple[int, int]:
    """--data.crop as (height, width), checked against the stride and the resized image it is cut from."""
    try:
        hw = image_hw(crop)
    except ValueError:
        raise UserInputError(f"--data.crop {crop!r}: give one side or [height, width] (positive)") from None
    if any(side % STRIDE for side in hw):
        raise UserInputError(f"--data.crop {list(hw)}: sides must be multiples of {STRIDE} (the encoders' stride)")
    if hw[0] > image_size[0] or hw[1] > image_size[1]:
        raise UserInputError(f"--data.crop {list(hw)} is larger than --data.image_size {list(image_size)}: crops are "
                             "cut from the resized image; lower the crop or raise image_size")
    return hw


# Transforms that swap height and width: with non-square samples, a batch would mix two shapes.
TRANSPOSING = ("RandomRotate90", "Transpose", "D4", "SquareSymmetry")


def transform_names(spec: Any) -> list[str]:
    """Every transform named in an augmentation spec, composites' `transforms` included."""
    names = []
    for entry in spec or ():
        for name, args in (entry.items() if isinstance(entry, dict) else ()):
            names += [name, *transform_names((args or {}).get("transforms") if isinstance(args, dict) else None)]
    return names


# Column names that give each row of an RLE table a class (Severstal's ClassId).
CLASS_COLUMNS = ("classid", "class_id", "class", "label", "category", "category_id", "categoryid")


def per_class_layout(frame: pd.DataFrame, id_col: str, rle_col: str) -> str | None:
    """How an RLE table gives each mask a class, when it does (a multi-label table), else None: a class
    column with several classes among its masks, or `<image file>_<class>` keys (Clouds)."""
    masked = frame[[not is_empty_rle(r) for r in frame[rle_col]]]
    for column in frame.columns:
        if column not in (id_col, rle_col) and column.lower() in CLASS_COLUMNS and masked[column].nunique() > 1:
            return f"column {column!r} gives its masks {masked[column].nunique()} classes (--data.class_col {column})"
    keys = [str(k).rpartition("_") for k in frame[id_col]]
    if keys and all(sep and Path(image).suffix.lower() in IMAGE_EXTENSIONS for image, sep, _ in keys):
        return f"its {id_col} keys are <image>_<class> ({frame[id_col].iloc[0]!r}: --data.class_col null)"
    return None


def binary_or_classes(values: set[int]) -> int:
    """2 for binary masks (0/1 or 0/255), else max value + 1 (pixel value = class index)."""
    if values <= {0, 1} or values <= {0, 255}:
        return 2
    return max(values) + 1


def to_class_mask(mask: np.ndarray, num_classes: int, source: Any) -> np.ndarray:
    """Pixel values to class indices: binary masks to 0/1; others are checked against `num_classes`."""
    if num_classes == 2:
        values = np.unique(mask)
        if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
            raise DataError(f"{source}: mask values {values[:8].tolist()} are not binary (0/1 or 0/255); "
                            "for multiclass masks pass --data.classes")
        return (mask > 0).astype(np.uint8)
    if int(mask.max()) >= num_classes:
        raise DataError(f"{source}: mask value {int(mask.max())} is not a class index below {num_classes} "
                        "(pixel value = class index; see --data.classes)")
    return mask


class SegmentationDataset(Dataset):
    """Samples `{"image", "target"?, "id", "index", "size", "valid"}`.

    `size` is the original (height, width), for mapping predictions back; `valid` is the
    (height, width) of the resized image inside the padded tensor.
    """

    def __init__(
        self,
        paths: list[Path],
        masks: list[Callable[[], np.ndarray]] | None,
        transform: Any,
        ids: list[str],
        valid: tuple[int, int],
        reader: Callable[[Path], np.ndarray] = read_image,
        sizes: list[tuple[int, int]] | None = None,
    ):
        self.reader = reader
        self.sizes = sizes  # original sizes: needed when `reader` returns cached, resized images
        self.paths = paths
        self.masks = masks
        self.transform = transform
        self.ids = ids
        self.valid = torch.tensor(valid)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.reader(self.paths[index])
        size = image.shape[:2] if self.sizes is None else self.sizes[index]
        sample: dict[str, Any] = {"id": self.ids[index], "index": index, "size": torch.tensor(size),
                                  "valid": self.valid}
        if self.masks is None:
            sample["image"] = self.transform(image=image)["image"]
            return sample
        mask = self.masks[index]()
        if mask.shape[:2] != image.shape[:2]:
            raise DataError(f"{self.paths[index]}: image is {image.shape[:2]} but its mask is {mask.shape[:2]}")
        out = self.transform(image=image, mask=mask)
        target = out["mask"].long()
        # A mask per class (H, W, C), as multi-label masks come: channels first, as the model's outputs.
        sample["image"], sample["target"] = out["image"], target.permute(2, 0, 1) if target.ndim == 3 else target
        return sample


class MaskFile:
    """Reads one mask file as class indices (a picklable per-sample reader)."""

    def __init__(self, path: Path, num_classes: int):
        self.path, self.num_classes = path, num_classes

    def __call__(self) -> np.ndarray:
        return to_class_mask(read_mask(self.path), self.num_classes, self.path)


class MaskRLE:
    """Decodes one run-length encoded binary mask."""

    def __init__(self, rle: str, shape: tuple[int, int], order: str):
        self.rle, self.shape, self.order = rle, shape, order

    def __call__(self) -> np.ndarray:
        return rle_decode(self.rle, self.shape, self.order)


class SegmentationDataModule(CVDataModule):
    """Images under `data_dir/<image_dir>/`, masks under `data_dir/<mask_dir>/` named `<stem><mask_suffix>`
    with any image extension (png, gif, jpg, bmp, tif), or run-length encoded in `data_dir/<rle_csv>`.

    Masks are binary (0/1 or 0/255) or hold class indices (0 = background). Images are resized to
    image_size (one side, or [height, width]; with keep_aspect, fitted into it and padded) and padded to a
    multiple of 32 (the encoders' stride); predictions are mapped back to each image's own size.

    Args:
        image_dir: folder of training images, relative to data_dir.
        mask_dir: folder of mask files, relative to data_dir.
        mask_suffix: appended to the image stem to name its mask ("_mask" for Carvana's `<id>_mask.gif`).
        rle_csv: a CSV of run-length encoded masks (relative to data_dir) instead of mask files.
        id_col: the CSV column with the image id (file stem, or file name: Carvana's "img").
        rle_col: the CSV column with the mask's RLE (Carvana's "rle_mask"); empty = empty mask.
        rle_order: pixel order of the RLE: "C" row-major (Carvana), "F" column-major (TGS Salt, Airbus).
        classes: class names, background first; default: from the masks (binary: background, foreground).
        keep_aspect: resize by the long side (each image fitted into image_size, aspect kept) and pad the
            rest (bottom/right, background in the mask) instead of stretching to image_size; the padding is
            dropped again when predictions are mapped back to each image's size.
        instances: one submission row per predicted instance (a connected region), as Airbus lists ships;
            default: when the RLE table lists several rows for an image. Saved with the checkpoint.
        crop: train on a random crop of this side, or [height, width] (multiples of 32, at most image_size),
            of each resized image (before the training augmentations); validation and prediction see whole
            images, tiled by --model.tile_size when given and larger.

    With --data.sample_submission, `predict` writes submission.csv with its ids, order and columns, each
    RLE matched to its image by id or file stem (Carvana's `img` = `<id>.jpg`). Binary masks.
    """

    def __init__(
        self,
        data_dir: str = "data/seg",
        image_size: int | list[int] = 96,
        batch_size: int = 16,
        image_dir: str = "train",
        mask_dir: str = "train_masks",
        mask_suffix: str = "_mask",
        rle_csv: str | None = None,
        id_col: str = "id",
        rle_col: str = "rle_mask",
        rle_order: Literal["C", "F"] = "C",
        classes: list[str] | None = None,
        keep_aspect: bool = False,
        crop: int | list[int] | None = None,
        instances: bool | None = None,
        **kwargs: Any,
    ):
        # The other standard options (fold, cache, predict_dir, ...) are CVDataModule's (via **kwargs).
        super().__init__(data_dir=data_dir, image_size=image_size, batch_size=batch_size, **kwargs)
        self.image_dir = self.data_dir / image_dir
        self.mask_dir = self.data_dir / mask_dir
        self.mask_suffix = mask_suffix
        self.rle_csv = self.data_dir / rle_csv if rle_csv else None
        self.id_col = id_col
        self.rle_col = rle_col
        self.rle_order = rle_order
        self.classes = classes
        self.keep_aspect = keep_aspect
        self.crop = crop
        self.instances = instances
        self.crop_hw = None if crop is None else crop_hw(crop, self.image_hw)

    # -- recognizing a competition folder (`lightning-cv init`) ------------------------------------
    @classmethod
    def recognize(cls, survey: Survey) -> Reading | None:
        """Binary or class-index masks: mask files beside the images, or an RLE table holding one mask (or a
        row per instance) per image; multi-label tables (a class per row or key) are `seg-multilabel`'s."""
        masks = find_mask_files(survey)
        table = next((t for t in find_rle_tables(survey) if t.class_col is None and t.key_sep is None), None)
        if masks is None and table is None:
            return None
        reading = Reading(cls.task_name, 0.9)
        if masks is not None:
            found = mask_values(list(masks.files.values()))
            kind = "binary" if found <= {0, 1} or found <= {0, 255} else f"{len(found)} classes (class-index masks)"
            reading.evidence.append(("task", cls.task_name, f"{masks.masks}/", f"masks of the images, values {sorted(found)[:6]}: {kind}"))
            if masks.masks != "train_masks":
                reading.set("mask_dir", masks.masks, f"{masks.masks}/", f"{len(masks.files)} masks")
            if masks.suffix != "_mask":
                reading.set("mask_suffix", masks.suffix, f"{masks.masks}/", "a mask is named <image stem><suffix>")
        else:
            reading.evidence.append(("task", cls.task_name, table.name, f"{table.rle_col}: run-length encoded masks, no class column"))
            reading.set("rle_csv", table.name, table.name, f"masks run-length encoded in {table.rle_col}")
            for option, column, default in (("id_col", table.id_col, "id"), ("rle_col", table.rle_col, "rle_mask")):
                if column != default:
                    reading.set(option, column, table.name, f"the column of the {option[:-4]}s")
        if table is None:
            reading.ask("rle_order", "no RLE table to tell the submission's pixel order: pass --data.rle_order C (row-major, "
                                     "Carvana) or F (column-major, TGS, Airbus)")
        else:
            decide_order(reading, survey, table, masks)
            rows = table.image_ids().value_counts()
            if (rows > 1).any():
                reading.set("model.monitor", "val/f2_instances", table.name, f"{int((rows > 1).sum())} images have several "
                            "rows: a row per instance, scored by F2 over instances (Airbus)")
        folder = masks.images if masks is not None else table.images
        shared_layout(reading, survey, folder)
        if max(max(size) for size in survey.sizes(folder)) > LARGE:
            reading.score = 0.7  # shrunk whole, their objects would vanish: tiles read them better
        return reading

    # -- images and their masks ------------------------------------------------------------------
    @cached_property
    def images(self) -> list[Path]:
        if not self.data_dir.is_dir():
            raise DataError(
                f"{self.data_dir}: data directory not found. Create the demo with `lightning-cv demo --task seg "
                f"--out {self.data_dir}` or point --data.data_dir at a folder with train/ and train_masks/"
            )
        return list_images(self.image_dir)

    @cached_property
    def mask_files(self) -> dict[str, Path]:
        """Mask file by image stem."""
        if not self.mask_dir.is_dir():
            raise DataError(f"{self.mask_dir}: mask directory not found (see --data.mask_dir, or --data.rle_csv)")
        found: dict[str, Path] = {}
        for path in sorted(self.mask_dir.iterdir()):
            if path.suffix.lower() in MASK_EXTENSIONS and path.stem.endswith(self.mask_suffix):
                found.setdefault(path.stem[: len(path.stem) - len(self.mask_suffix)] if self.mask_suffix else path.stem, path)
        return found

    @cached_property
    def rle_rows(self) -> dict[str, list[str]]:
        """The RLE strings of each image stem (ids may be stems or file names); several rows of one image
        are its instances (Airbus ships, SIIM regions); an empty cell, NaN or -1 is an empty mask."""
        assert self.rle_csv is not None
        frame = read_table(self.rle_csv, [self.id_col, self.rle_col])
        found: dict[str, list[str]] = {}
        for name, rle in zip(frame[self.id_col], frame[self.rle_col]):
            runs = found.setdefault(Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name, [])
            if not is_empty_rle(rle):
                runs.append(str(rle).strip())
        return found

    @cached_property
    def rles(self) -> dict[str, str]:
        """RLE string by image stem: an image's instances together are its mask."""
        return {image: " ".join(runs) for image, runs in self.rle_rows.items()}

    @property
    def instance_rows(self) -> bool:
        """The RLE table lists instances (several rows of an image): submissions then get a row per
        predicted instance, as the table has."""
        if self.instances is not None:
            return self.instances
        return self.rle_csv is not None and self.rle_csv.is_file() and any(len(r) > 1 for r in self.rle_rows.values())

    def _mask_source(self, image: Path) -> Path | str:
        if self.rle_csv is not None:
            if image.stem not in self.rles:
                raise DataError(f"{image}: no row with {self.id_col} {image.stem!r} in {self.rle_csv}")
            return self.rles[image.stem]
        if image.stem not in self.mask_files:
            raise DataError(f"{image}: no mask {self.mask_dir / (image.stem + self.mask_suffix)}.(png|gif|jpg|bmp|tif) "
                            "(see --data.mask_dir, --data.mask_suffix)")
        return self.mask_files[image.stem]

    # -- linked to the model ---------------------------------------------------------------------
    @cached_property
    def class_names(self) -> list[str]:
        if self.rle_csv is not None and self.classes and len(self.classes) != 2:
            raise UserInputError(f"--data.classes {list(self.classes)}: run-length encoded masks are binary (2 classes: "
                                 "background, mask); a mask per class is multi-label segmentation: --config "
                                 "configs/seg-multilabel.yaml (task seg-multilabel)")
        if self.classes:
            return list(self.classes)
        if self.rle_csv is not None:
            self._check_binary_table()
            num_classes = 2  # run-length encoding is binary
        else:
            images = self.images
            sample = images[:: max(1, len(images) // CLASS_SAMPLE)][:CLASS_SAMPLE]
            values: set[int] = set()
            for image in sample:
                source = self._mask_source(image)
                found = set(np.unique(read_mask(source)).tolist())
                if 255 in found and not found <= {0, 255}:
                    # Not 255 classes: an anti-aliased or JPEG-compressed binary mask.
                    raise DataError(f"{source}: mask values {sorted(found)[:8]} mix 255 with other values; save binary "
                                    "masks as 0/255 or 0/1 PNGs, or pass --data.classes for class-index masks")
                values |= found
            num_classes = binary_or_classes(values)
        if num_classes == 2:
            return ["background", "foreground"]
        return ["background", *(str(i) for i in range(1, num_classes))]

    def _check_binary_table(self) -> None:
        """An RLE table holds binary masks (each image's rows: its instances); a table with a class per mask
        is multi-label segmentation, another task, said in one line rather than trained as one class."""
        assert self.rle_csv is not None
        if not self.rle_csv.is_file():
            return  # setup names the missing file
        layout = per_class_layout(read_table(self.rle_csv, [self.id_col, self.rle_col]), self.id_col, self.rle_col)
        if layout:
            raise DataError(f"{self.rle_csv}: {layout}: a mask per class is multi-label segmentation (a sigmoid channel "
                            "per class): --config configs/seg-multilabel.yaml (task seg-multilabel)")

    def recipe_facts(self) -> dict[str, Any]:
        return {**super().recipe_facts(), "instances": self.instance_rows}

    def fold_table(self) -> tuple[pd.DataFrame, str, str | None]:
        """Training images by id (file stem); folds are not stratified."""
        return pd.DataFrame({"id": [p.stem for p in self.images]}), "id", None

    # -- the setup hooks -----------------------------------------------------------------------------------
    def _check(self, image: Path, source: Path | str) -> tuple[int, int]:
        """The image's (height, width); the mask must have the same size and class values (once per CV run)."""
        mask = f"file {source.absolute()}" if isinstance(source, Path) else content_id(source, self.rle_order)
        key = f"segmentation {image.absolute()} {mask} classes={self.num_classes}"
        files = [image, source] if isinstance(source, Path) else [image]
        return remembered(key, files, lambda: self._check_pair(image, source))

    def _check_pair(self, image: Path, source: Path | str) -> tuple[int, int]:
        size = check_image(image)
        if isinstance(source, Path):
            mask_size = check_image(source)
            if mask_size != size:
                raise DataError(f"{source}: mask is {mask_size[0]}x{mask_size[1]} but its image {image.name} is {size[0]}x{size[1]}")
            to_class_mask(read_mask(source), self.num_classes, source)
        else:
            try:
                rle_decode(source, size, self.rle_order)
            except ValueError as err:
                raise DataError(f"{self.rle_csv}: {self.id_col} {image.stem!r}: {err} (image {image.name})") from None
        return size

    def labelled_rows(self) -> Rows:
        """Training images by stem, with their mask source (file or RLE) and size, every pair checked."""
        if self.rle_csv is not None:
            self._check_binary_table()
        images = self.images
        sources = [self._mask_source(p) for p in images]
        sizes = [self._check(p, s) for p, s in zip(images, sources)]
        return Rows([p.stem for p in images], images, None, {"source": sources, "size": sizes})

    def unlabelled_rows(self, directory: Path) -> Rows:
        rows = super().unlabelled_rows(directory)
        return Rows([Path(i).stem for i in rows.ids], rows.items, None, rows.extra)

    def resize_steps(self) -> list[Any]:
        """To image_size: stretched, or (keep_aspect) fitted with the aspect kept and padded."""
        return letterbox(self.image_hw) if self.keep_aspect else [resize(*self.image_hw)]

    def build_dataset(self, rows: Rows, augment: AugmentSpec | None,
                      crop: tuple[int, int] | None = None) -> SegmentationDataset:
        """The resize runs in the pipeline, or once into the cache (images and masks alike); a `crop` is cut
        from the resized image before the augmentations."""
        pre = self.resize_steps()
        reader = self.image_reader(pre)
        sources, sizes = rows.extra.get("source"), rows.extra["size"]
        masks = None
        if sources is not None:
            readers = [self.mask_reader(source, size) for source, size in zip(sources, sizes)]
            mask_cache = self.array_cache([*pre, f"mask classes={self.num_classes}"])
            masks = [read if mask_cache is None else CachedSource(mask_cache, read, Preprocess(pre, "mask"), key, version)
                     for read, key, version in readers]
        fixed = [*([] if reader else pre), *([random_crop(*crop)] if crop else [])]
        pipeline = build_pipeline(augment, pre=fixed, post=[pad_to_multiple(STRIDE)], seed=self.seed)
        return SegmentationDataset(rows.items, masks, pipeline, rows.ids, crop or self.image_hw,
                                   reader or self.decoder, sizes=sizes)

    def train_dataset(self, rows: Rows) -> SegmentationDataset:
        """Training samples are random crops (--data.crop) of the resized images, when asked for; a
        non-square sample must keep its shape through the augmentations."""
        height, width = self.crop_hw or self.image_hw
        turning = [n for n in transform_names(self.train_augment) if n in TRANSPOSING]
        if height != width and turning:
            raise UserInputError(f"--data.train_augment: {turning[0]} turns {height}x{width} training samples into "
                                 f"{width}x{height}, and a batch needs one shape: drop it, or train on square samples "
                                 "(--data.crop, --data.image_size)")
        return self.build_dataset(rows, self.train_augment, self.crop_hw)

    def mask_reader(self, source: Any, size: tuple[int, int]) -> tuple[Callable[[], np.ndarray], str, str]:
        """How one image's mask is read, and its cache key and version: a file by its path and mtime, an
        RLE string by its content."""
        if isinstance(source, Path):
            return MaskFile(source, self.num_classes), str(source.resolve()), file_version(source)
        return MaskRLE(source, size, self.rle_order), content_id(source, size, self.rle_order), ""

    def check_sample(self, sample: pd.DataFrame, source: Path) -> None:
        if self.num_classes != 2:
            raise UserInputError(f"--data.sample_submission: {self.num_classes} classes; sample submissions are "
                                 "for binary masks (multiclass predict writes submission.csv as id,class,rle_mask)")
        super().check_sample(sample, source)

    def sample_target(self, sample: dict[str, Any]) -> np.ndarray:
        """The mask without the stride padding."""
        h, w = (int(v) for v in sample["valid"])
        return sample["target"][..., :h, :w].numpy()
