"""Object detection data: the images of a folder and their boxes, read from the table a competition ships.

The image folder decides which images there are: an image without a row in the table has no box (Global
Wheat), and so has one listed with empty coordinates (VinBigData's "No finding", RSNA's Target 0). Tables are
read by `io.box_tables`: a CSV (x_min..y_max, x, y, w, h or a `bbox` "[x, y, w, h]" column; a class and a reader
column when there are), a COCO JSON, or a folder of YOLO txt files. Several readers' boxes of one object are
fused by weighted boxes fusion before training (`--data.readers wbf`), or kept.

Images are resized to `image_size`; boxes follow every augmentation (albumentations' BboxParams), clipped to
the image, dropped when too little of them is left. A sample's target is (M, 5) rows x_min, y_min, x_max, y_max,
label in the model's pixels, padded with label -1 to the most boxes an image has (so batches collate as they
are); `targets` keep them in the original pixels, which predictions are scaled back to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Dataset

from lightning_cv.data.augment import AugmentSpec, build_box_pipeline, resize
from lightning_cv.data.base import CVDataModule, Rows, list_images
from lightning_cv.data.survey import Reading, Survey, shared_layout
from lightning_cv.errors import DataError, UserInputError
from lightning_cv.io.box_tables import (
    BOX_COLUMNS,
    ID_NAMES,
    BoxTable,
    find_box_columns,
    find_column,
    image_key,
    read_box_table,
    read_coco,
    read_yolo,
)
from lightning_cv.io.cache import CacheMode
from lightning_cv.predictions.box_fusion import fuse_readers
from lightning_cv.predictions.box_strings import BoxStyle

PAD = -1  # the label of a padding row
# Box-count bins the folds are stratified by (a tag each; classes are tags too).
COUNT_BINS = (0, 1, 3, 6, 11, 21, 51)


def padded_targets(boxes: Sequence[dict[str, np.ndarray]], rows: int | None = None) -> np.ndarray:
    """Per-image boxes as one (N, M, 5) float32 array x_min, y_min, x_max, y_max, label; padding rows have label
    -1 (M: the most boxes of an image, or `rows`)."""
    most = max([len(b["labels"]) for b in boxes] + [rows or 0, 1])
    out = np.zeros((len(boxes), most, 5), np.float32)
    out[:, :, 4] = PAD
    for i, b in enumerate(boxes):
        n = len(b["labels"])
        out[i, :n, :4], out[i, :n, 4] = b["boxes"], b["labels"]
    return out


def unpadded(target: np.ndarray) -> dict[str, np.ndarray]:
    """One image's padded (M, 5) target as {"boxes", "labels"}."""
    target = np.asarray(target)
    keep = target[:, 4] >= 0
    return {"boxes": target[keep, :4].astype(np.float32), "labels": target[keep, 4].astype(np.int64)}


def count_tag(n: int) -> str:
    """The box-count bin of an image, as a fold stratification tag ("boxes:3-5")."""
    k = int(np.searchsorted(COUNT_BINS, n, side="right")) - 1
    high = COUNT_BINS[k + 1] - 1 if k + 1 < len(COUNT_BINS) else None
    low = COUNT_BINS[k]
    return f"boxes:{low}" if high == low else f"boxes:{low}-{high}" if high is not None else f"boxes:{low}+"


def clip_boxes(boxes: dict[str, np.ndarray], height: int, width: int) -> tuple[dict[str, np.ndarray], int]:
    """Boxes clipped to the image; those left without area (outside it, or degenerate) dropped: (boxes, dropped)."""
    b = boxes["boxes"].copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return {"boxes": b[keep], "labels": boxes["labels"][keep]}, int((~keep).sum())


def find_box_table(survey: Survey) -> tuple[str, str, str, str] | None:
    """(the table, what it holds, its id column, the image folder its ids name) of the first training CSV with box
    columns (x_min..y_max, x, y, w, h or bbox) whose ids are images of a folder; else a COCO JSON's."""
    for name, frame in sorted(survey.training_tables(), key=lambda item: item[0].count("/")):  # the folder's own first
        id_col = find_column(list(frame.columns), ID_NAMES)
        try:
            cols, kind = find_box_columns(Path(name), list(frame.columns), None, "auto")
        except DataError:
            continue
        matched = survey.match(frame[id_col]) if id_col else None
        if matched is not None:
            return name, f"{kind} box columns {', '.join(cols)}", id_col, matched[0]
    for path in (p for p in survey.files if p.suffix.lower() == ".json"):
        try:
            table = read_coco(path)
        except DataError:
            continue
        matched = survey.match(pd.Series(table.image_ids).map(lambda i: Path(i).name))
        if matched is not None:
            return survey.rel(path), "COCO JSON boxes", "", matched[0]
    return None


class DetectionDataset(Dataset):
    """Samples `{"image", "target"?, "size", "id", "index"}`: target (M, 5) in the model's pixels (see module doc).

    `targets` (N, M, 5) are in the pixels of what `reader` returns scaled by `scales` ((sx, sy) per image: 1 when
    the pipeline resizes, the resize's factors when a cache already did); `sizes` are the originals' (H, W).
    """

    def __init__(self, items: Sequence[Any], targets: np.ndarray | None, transform: Callable[..., dict[str, Any]],
                 sizes: Sequence[tuple[int, int]], ids: Sequence[str], reader: Callable[[Any], np.ndarray],
                 scales: np.ndarray | None = None):
        self.items = list(items)
        self.targets = targets
        self.transform = transform
        self.sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
        self.ids = list(ids)
        self.reader = reader
        self.scales = scales

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.reader(self.items[index])
        sample: dict[str, Any] = {"id": self.ids[index], "index": index, "size": torch.from_numpy(self.sizes[index])}
        if self.targets is None:
            sample["image"] = self.transform(image=image, bboxes=np.zeros((0, 4), np.float32), labels=[])["image"]
            return sample
        boxes = unpadded(self.targets[index])
        if self.scales is not None:
            boxes["boxes"] = boxes["boxes"] * np.tile(self.scales[index], 2).astype(np.float32)
        out = self.transform(image=image, bboxes=boxes["boxes"], labels=boxes["labels"].tolist())
        sample["image"] = out["image"]
        found = {"boxes": np.asarray(out["bboxes"], np.float32).reshape(-1, 4), "labels": np.asarray(out["labels"], np.int64)}
        sample["target"] = torch.from_numpy(padded_targets([found], self.targets.shape[1])[0])
        return sample


class DetectionDataModule(CVDataModule):
    """Images under `data_dir/<image_dir>/` and their boxes in `data_dir/<boxes>` (see the module doc).

    Args:
        boxes: the box table, relative to data_dir: a CSV, a COCO JSON (.json), or a folder of YOLO .txt files.
        image_dir: the training images; every image there is a training row, with or without boxes.
        id_col: the table's image id column (default: found by name: image_id, image, file_name ...).
        class_col: its class column (default: class_id, class_name, label ...; none: one class).
        reader_col: its reader column (default: rad_id, reader ...), for --data.readers.
        box_cols: its coordinate columns (four, or one `bbox` column); default: found by name.
        box_format: "xyxy" or "xywh" when the names of `box_cols` do not say; "auto" otherwise.
        readers: several readers' boxes of an image: "wbf" fuses each object's boxes into one (weighted boxes
            fusion at `reader_iou`), "keep" trains on every reader's box.
        reader_iou: the IoU above which two readers' boxes of a class are one object.
        classes: the foreground classes in order (default: read from the table; saved with the checkpoint).
        no_finding: the class the table gives images without a box (VinBigData's 14; default: read from the
            table); submissions of the class_conf_xyxy style write it for an image without a predicted box.
        box_style: the submission's prediction strings: "conf_xywh" (Global Wheat: conf x y w h ...) or
            "class_conf_xyxy" (VinBigData: class conf x_min y_min x_max y_max ...); default: class_conf_xyxy for
            tables with classes or a no-finding class, else conf_xywh.
        box_decimals: decimals of the submission's box corners (0: whole pixels, as most kernels write them; a
            rounded corner moves up to half a pixel, which a small box feels at IoU 0.75).
        min_visibility: an augmented box keeping less than this share of its area is dropped.
        min_box_size: an augmented box narrower or lower than this (model pixels) is dropped.
        cache: resize every image once into `--data.cache_dir` ("memmap", "npz") or not ("none").
    """

    multilabel = True  # folds: iterative stratification over box-count and class tags (`fold_table`)

    def __init__(
        self,
        data_dir: str = "data/detection",
        boxes: str = "train.csv",
        image_dir: str = "train",
        id_col: str | None = None,
        class_col: str | None = None,
        reader_col: str | None = None,
        box_cols: list[str] | None = None,
        box_format: Literal["auto", "xyxy", "xywh"] = "auto",
        readers: Literal["wbf", "keep"] = "wbf",
        reader_iou: float = 0.5,
        classes: list[str] | None = None,
        no_finding: str | None = None,
        box_style: BoxStyle | None = None,
        box_decimals: int = 1,
        min_visibility: float = 0.3,
        min_box_size: float = 2.0,
        cache: CacheMode = "none",
        **kwargs: Any,
    ):
        super().__init__(data_dir=data_dir, cache=cache, **kwargs)
        if readers not in ("wbf", "keep"):
            raise UserInputError(f"--data.readers {readers!r}: choose wbf or keep")
        if box_style not in (None, "conf_xywh", "class_conf_xyxy"):
            raise UserInputError(f"--data.box_style {box_style!r}: choose conf_xywh or class_conf_xyxy")
        if not 0 <= box_decimals <= 6:
            raise UserInputError(f"--data.box_decimals {box_decimals}: choose 0 (whole pixels) to 6")
        self.boxes = self.data_dir / boxes
        self.image_dir = self.data_dir / image_dir
        self.id_col, self.class_col, self.reader_col = id_col, class_col, reader_col
        self.box_cols, self.box_format = box_cols, box_format
        self.readers, self.reader_iou = readers, reader_iou
        self._classes, self._no_finding, self._box_style = classes, no_finding, box_style
        self.box_decimals = box_decimals
        self.min_visibility, self.min_box_size = min_visibility, min_box_size

    @classmethod
    def recognize(cls, survey: Survey) -> Reading | None:
        """A table of boxes (a row per box, images without a row allowed) or a COCO JSON naming a folder's images."""
        found = survey.once("box-table", lambda: find_box_table(survey))
        if found is None:
            return None
        name, what, id_col, folder = found
        # Surer than a label reading of the same table (its class column reads as labels at 0.85 at most).
        reading = Reading(cls.task_name, 0.97)
        reading.evidence.append(("task", cls.task_name, name, f"{what}: boxes of the images in {folder}/"))
        if name != "train.csv":
            reading.set("boxes", name, name, what)
        frame = survey.tables.get(name)
        if id_col and frame is not None and id_col not in ("image_id", "image", "file_name", "id"):
            reading.set("id_col", id_col, name, "the image id column")
        shared_layout(reading, survey, folder)
        table = read_box_table(survey.root / name) if frame is not None else read_coco(survey.root / name)
        if "reader" in table.frame.columns:
            reading.evidence.append(("data.readers", "wbf", name, "several readers per image: their boxes fused by WBF"))
        if len(table.classes) > 1 or table.no_finding is not None:
            reading.set("model.metric", "voc_map", name, f"{len(table.classes)} classes"
                        + (f" and a no-finding class {table.no_finding}" if table.no_finding is not None else "")
                        + ": VinBigData's PASCAL VOC mAP (check the competition's metric)")
        else:
            reading.set("model.metric", "wheat", name, "one class: Global Wheat's score (RSNA Pneumonia's from IoU 0.4: "
                        "rsna_boxes; check the competition's metric)")
        return reading

    # -- what the table says ---------------------------------------------------------------------------
    @cached_property
    def image_paths(self) -> list[Path]:
        return list_images(self.image_dir, option="--data.image_dir")

    @cached_property
    def table(self) -> BoxTable:
        """The box table as read (CSV, COCO JSON or YOLO folder), with the images it names checked."""
        if not self.data_dir.is_dir():
            raise DataError(f"{self.data_dir}: data directory not found. Create the demo with `lightning-cv demo --task "
                            f"detection --out {self.data_dir}` or point --data.data_dir at a competition folder")
        if self.boxes.is_dir():
            sizes = {p.name: self.decoder.check(p) for p in self.image_paths}
            table = read_yolo(self.boxes, sizes, self._classes)
        elif self.boxes.suffix.lower() == ".json":
            table = read_coco(self.boxes)
        else:
            table = read_box_table(self.boxes, self.id_col, self.class_col, self.reader_col, self.box_cols, self.box_format)
        known = {image_key(p.name) for p in self.image_paths} | {p.name for p in self.image_paths}
        missing = [i for i in table.image_ids if str(i) not in known and image_key(str(i)) not in known]
        if missing:
            raise DataError(f"{self.boxes}: {len(missing)} image id(s) have no image in {self.image_dir} (e.g. "
                            f"{missing[0]!r}): point --data.image_dir at the training images")
        rank_zero_info(f"boxes: {self.boxes.name}: {table.format}; {len(table.image_ids)} images listed, "
                       f"{len(self.image_paths)} in {self.image_dir.name}/")
        return table

    @property
    def class_names(self) -> list[str]:
        return list(self._classes) if self._classes else list(self.table.classes)

    @property
    def no_finding(self) -> str | None:
        return self._no_finding if self._no_finding is not None or self._classes else self.table.no_finding

    @property
    def box_style(self) -> BoxStyle:
        if self._box_style is not None:
            return self._box_style
        return "class_conf_xyxy" if len(self.class_names) > 1 or self.no_finding is not None else "conf_xywh"

    def recipe_facts(self) -> dict[str, Any]:
        """The classes, the no-finding class and the submission style read from the table: predicting with the
        checkpoint needs neither the table nor these options again."""
        return {"classes": self.class_names, "no_finding": self.no_finding, "box_style": self.box_style}

    def frame(self, sizes: dict[str, tuple[int, int]]) -> pd.DataFrame:
        """The table's boxes (label >= 0 rows), readers fused by WBF unless --data.readers keep."""
        frame = self.table.frame
        if self._classes and list(self._classes) != list(self.table.classes):
            raise DataError(f"{self.boxes}: classes {self.table.classes} differ from --data.classes {self._classes}")
        if self.readers == "wbf" and "reader" in frame.columns and frame["reader"].nunique() > 1:
            by_id = {i: sizes.get(str(i), sizes.get(image_key(str(i)))) for i in self.table.image_ids}
            fused = fuse_readers(frame, by_id, iou_thr=self.reader_iou)
            rank_zero_info(f"boxes: {int((frame['label'] >= 0).sum())} boxes of {frame['reader'].nunique()} readers fused "
                           f"into {int((fused['label'] >= 0).sum())} by WBF at IoU {self.reader_iou}")
            frame = fused
        return frame[frame["label"].to_numpy() >= 0]

    # -- the setup hooks -----------------------------------------------------------------------------------
    def labelled_rows(self) -> Rows:
        """Every image of the folder with its boxes (original pixels, clipped to the image), padded to one shape."""
        paths = self.image_paths
        sizes = [self.decoder.check(p) for p in paths]
        by_key = {image_key(p.name): s for p, s in zip(paths, sizes)}
        frame = self.frame(by_key)
        groups = frame.groupby(frame["image_id"].astype(str).map(image_key), sort=False).indices
        boxes, dropped = [], 0
        for path, (height, width) in zip(paths, sizes):
            rows = frame.iloc[groups.get(image_key(path.name), [])]
            found, lost = clip_boxes({"boxes": rows[BOX_COLUMNS].to_numpy(np.float32).reshape(-1, 4),
                                      "labels": rows["label"].to_numpy(np.int64)}, height, width)
            boxes.append(found)
            dropped += lost
        if dropped:
            rank_zero_warn(f"{self.boxes}: {dropped} box(es) without area inside their image were dropped")
        return Rows([p.name for p in paths], paths, padded_targets(boxes), {"size": sizes})

    def test_rows(self) -> Rows:
        """`test` evaluates the held-out rows (a competition's test images carry no boxes)."""
        rows = self.labelled_rows()
        return rows.take(self.split_rows(rows)[1])

    def stratify(self, rows: Rows) -> np.ndarray:
        """The hold-out is stratified by box count (`count_tag`; bins of a single image join the largest)."""
        tags = pd.Series([count_tag(int((t[:, 4] >= 0).sum())) for t in rows.targets])
        counts = tags.value_counts()
        tags = tags.where(tags.map(counts) >= 2, counts.index[0])
        return pd.factorize(tags)[0]

    def fold_table(self) -> tuple[pd.DataFrame, str, str | None]:
        """Images with their stratification tags: box-count bin and each class present (tags on fewer than 10
        images left out, so any number of folds up to 10 can hold them)."""
        rows = self.labelled_rows()
        tags = []
        for target in rows.targets:
            labels = target[target[:, 4] >= 0, 4].astype(int)
            tags.append([count_tag(len(labels)), *(f"class:{self.class_names[k]}" for k in sorted(set(labels)))])
        counts = pd.Series([t for image in tags for t in image]).value_counts()
        kept = [" ".join(t for t in image if counts[t] >= 10) for image in tags]
        return pd.DataFrame({"image": rows.ids, "strata": kept}), "image", "strata"

    def build_dataset(self, rows: Rows, augment: AugmentSpec | None) -> DetectionDataset:
        """Resized in the pipeline, or once into the cache (boxes then scaled here)."""
        height, width = self.image_hw
        pre = [resize(height, width)]
        reader = self.image_reader(pre)
        pipeline = build_box_pipeline(augment, pre=[] if reader else pre, seed=self.seed,
                                      min_visibility=self.min_visibility, min_size=self.min_box_size)
        sizes = rows.extra["size"]
        scales = None
        if reader is not None:
            scales = np.array([(width / w, height / h) for h, w in sizes], np.float32)
        targets = None if rows.targets is None else np.asarray(rows.targets)
        return DetectionDataset(rows.items, targets, pipeline, sizes, rows.ids, reader or self.decoder, scales)
