"""Multi-label segmentation data (Severstal steel, Understanding Clouds): a mask per class, overlaps allowed,
given as a run-length encoded table."""

from __future__ import annotations

from collections import defaultdict
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lightning_cv.data.base import Rows
from lightning_cv.data.mask_layouts import decide_order, find_rle_tables
from lightning_cv.data.segmentation import SegmentationDataModule
from lightning_cv.data.survey import Reading, Survey, shared_layout, values
from lightning_cv.errors import DataError
from lightning_cv.io.cache import content_id
from lightning_cv.io.file_checks import remembered
from lightning_cv.io.images import IMAGE_EXTENSIONS, check_image
from lightning_cv.io.labels import read_table, sorted_labels
from lightning_cv.io.masks import is_empty_rle, rle_decode


def split_key(key: str, sep: str) -> tuple[str, str]:
    """A composite key `<image><sep><class>` (Clouds' `0011165.jpg_Fish`) -> (image, class)."""
    image, found, label = str(key).rpartition(sep)
    if not found or not image or not label:
        raise ValueError(f"{key!r} is not <image>{sep}<class>")
    return image, label


def image_key(name: str) -> str:
    """Images are keyed by file stem: tables may give ids or file names."""
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else str(name)


class ClassMasks:
    """The (H, W, C) 0/1 mask of one image from its RLE strings per class (a class's rows are instances:
    their union is its mask); a picklable per-sample reader."""

    def __init__(self, rles: dict[str, list[str]], classes: list[str], size: tuple[int, int], order: str):
        self.rles, self.classes, self.size, self.order = rles, classes, size, order

    def __call__(self) -> np.ndarray:
        mask = np.zeros((*self.size, len(self.classes)), np.uint8)
        for c, name in enumerate(self.classes):
            for rle in self.rles.get(name, ()):
                mask[..., c] |= rle_decode(rle, self.size, self.order)
        return mask


class MultiLabelSegmentationDataModule(SegmentationDataModule):
    """Images under `data_dir/<image_dir>/`; masks in `data_dir/<rle_csv>`, run-length encoded per image and
    class, as competitions write them:

    - a long table, `ImageId,ClassId,EncodedPixels` (Severstal): a row per present class, or per instance
      (several rows of an image and class are unioned);
    - composite keys, `Image_Label,EncodedPixels` with `0011165.jpg_Fish` (Clouds): pass
      `--data.class_col null --data.id_col Image_Label`, the separator is `key_sep`.

    Empty masks are an empty cell, NaN or -1; an image without a row is empty for every class. The model
    gets one sigmoid channel per class (`classes`, default: the table's, in numeric or alphabetical order).
    Folds are stratified over the classes an image holds (empty images included), by iterative stratification.

    Args:
        class_col: the table's class column; null for composite keys in `id_col`.
        key_sep: separator of composite keys `<image><sep><class>`.
        predict_dir: folder of images for `predict`; default `data_dir/test_images`.
    """

    multilabel = True  # folds by iterative stratification over the classes an image holds ("none": empty)

    def __init__(
        self,
        data_dir: str = "data/seg-multilabel",
        image_dir: str = "train_images",
        rle_csv: str = "train.csv",
        id_col: str = "ImageId",
        rle_col: str = "EncodedPixels",
        class_col: str | None = "ClassId",
        key_sep: str = "_",
        rle_order: Literal["C", "F"] = "F",
        predict_dir: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(data_dir=data_dir, image_dir=image_dir, rle_csv=rle_csv, id_col=id_col, rle_col=rle_col,
                         rle_order=rle_order, predict_dir=predict_dir, **kwargs)
        if predict_dir is None:
            self.predict_dir = self.data_dir / "test_images"  # Severstal's and Clouds' layout
        self.class_col = class_col
        self.key_sep = key_sep

    @classmethod
    def recognize(cls, survey: Survey) -> Reading | None:
        """An RLE table with a mask per image and class: a class column (Severstal) or `<image>_<class>` keys
        (Severstal's first table, Clouds)."""
        table = next((t for t in find_rle_tables(survey) if t.class_col or t.key_sep), None)
        if table is None:
            return None
        reading = Reading(cls.task_name, 0.9)
        if table.key_sep:
            labels = values(table.frame[table.id_col]).str.rsplit(table.key_sep, n=1).str[1].unique()
            reading.evidence.append(("task", cls.task_name, table.name, f"{table.id_col} keys <image>{table.key_sep}<class>, "
                                     f"classes {', '.join(sorted(labels)[:8])}: a mask per image and class"))
            reading.set("class_col", None, table.name, "the class is in the key")
        else:
            labels = values(table.frame[table.class_col]).unique()
            reading.evidence.append(("task", cls.task_name, table.name, f"{table.class_col}: classes "
                                     f"{', '.join(sorted(labels)[:8])}: a mask per image and class"))
            if table.class_col != "ClassId":
                reading.set("class_col", table.class_col, table.name, "the class column")
        for option, column, default in (("rle_csv", table.name, "train.csv"), ("id_col", table.id_col, "ImageId"),
                                        ("rle_col", table.rle_col, "EncodedPixels")):
            if column != default:
                reading.set(option, column, table.name, f"the {option.replace('_', ' ')}")
        decide_order(reading, survey, table, None)
        shared_layout(reading, survey, table.images, default_dir="train_images", default_test="test_images")
        return reading

    @cached_property
    def class_rles(self) -> dict[str, dict[str, list[str]]]:
        """{image stem: {class: [RLE, ...]}} from the table, empty markers left out."""
        assert self.rle_csv is not None
        frame = read_table(self.rle_csv, [self.id_col, self.rle_col, *([self.class_col] if self.class_col else [])])
        found: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for row, (key, rle, label) in enumerate(zip(frame[self.id_col], frame[self.rle_col],
                                                    frame[self.class_col] if self.class_col else frame[self.id_col]), start=2):
            try:
                image, label = (key, label) if self.class_col else split_key(key, self.key_sep)
            except ValueError as err:
                raise DataError(f"{self.rle_csv}: row {row}: {err} (see --data.class_col, --data.key_sep)") from None
            entry = found[image_key(image)][str(label).strip()]
            if not is_empty_rle(rle):
                entry.append(str(rle).strip())
        return {image: dict(labels) for image, labels in found.items()}

    def recipe_facts(self) -> dict[str, Any]:
        """The classes (a sigmoid channel each); instances are a binary-mask table's fact, not this one's."""
        return {"classes": list(self.class_names)}

    @cached_property
    def class_names(self) -> list[str]:
        if self.classes:
            return list(self.classes)
        return sorted_labels([label for labels in self.class_rles.values() for label in labels])

    def labelled_rows(self) -> Rows:
        """Every training image with its masks per class and size; every RLE decodes at the image's size."""
        images, rles = self.images, self.class_rles
        unknown = sorted({label for labels in rles.values() for label in labels} - set(self.class_names))
        if unknown:
            raise DataError(f"{self.rle_csv}: class {unknown[0]!r} is not one of --data.classes {self.class_names}")
        missing = sorted(set(rles) - {p.stem for p in images})
        if missing:
            raise DataError(f"{self.rle_csv}: image {missing[0]!r} is not in {self.image_dir} ({len(missing)} rows' images missing)")
        sizes, sources = [], []
        for path in images:
            masks = rles.get(path.stem, {})
            key = f"seg-multilabel {path.absolute()} {content_id(sorted(masks.items()), self.rle_order)}"
            size = remembered(key, [path], lambda path=path, masks=masks: self._check_rles(path, masks))
            sizes.append(size)
            sources.append(ClassMasks(masks, self.class_names, size, self.rle_order))
        return Rows([p.stem for p in images], images, None, {"source": sources, "size": sizes})

    def _check_rles(self, path: Path, masks: dict[str, list[str]]) -> tuple[int, int]:
        """The image's size; each of its RLEs decodes at that size (once per CV run)."""
        size = check_image(path)
        for label, runs in masks.items():
            for rle in runs:
                try:
                    rle_decode(rle, size, self.rle_order)
                except ValueError as err:
                    raise DataError(f"{self.rle_csv}: {path.stem!r} class {label!r}: {err} (image {path.name}, "
                                    f"--data.rle_order {self.rle_order})") from None
        return size

    def fold_table(self) -> tuple[pd.DataFrame, str, str | None]:
        """Images by id with the classes they hold (`classes`: e.g. "1 3", or "none"): folds keep each class's
        share (and the empty images'), rare combinations included."""
        rles = self.class_rles
        held = [" ".join(sorted(k for k, v in rles.get(p.stem, {}).items() if v)) or "none" for p in self.images]
        return pd.DataFrame({"id": [p.stem for p in self.images], "classes": held}), "id", "classes"

    def mask_reader(self, source: ClassMasks, size: tuple[int, int]) -> tuple[ClassMasks, str, str]:
        """An image's (H, W, C) class masks, cached by the content of its RLE rows."""
        return source, content_id(sorted(source.rles.items()), source.classes, size, source.order), ""

    def check_sample(self, sample: pd.DataFrame, source: Path) -> None:
        """Every image of a composite-key sample (`<image><sep><class>`) is among the images to predict."""
        ids = {image_key(i) for i in self.datasets["predict"].ids}
        for row, key in enumerate(sample.iloc[:, 0], start=2):
            try:
                image, _ = split_key(key, self.key_sep)
            except ValueError:
                image = key
            if image_key(image) not in ids:
                raise DataError(f"{source}: row {row}: image of {key!r} has no prediction ({len(ids)} images predicted)")
