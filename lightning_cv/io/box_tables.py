"""Box tables: a competition's boxes (CSV, COCO JSON, YOLO txt) as one long frame in original pixels.

Columns are found by name (case-insensitive): Global Wheat's `bbox` strings, VinBigData's x_min..y_max with a
reader per row and "No finding" rows, RSNA's x, y, width, height read without options. A row without coordinates
(all four empty) lists an image that has no box; it stays in the frame with label -1, so the image is known.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_cv.errors import DataError
from lightning_cv.io.images import IMAGE_EXTENSIONS

BOX_COLUMNS = ["x_min", "y_min", "x_max", "y_max"]
XYXY_NAMES = (("x_min", "y_min", "x_max", "y_max"), ("xmin", "ymin", "xmax", "ymax"), ("x1", "y1", "x2", "y2"))
# w/h before width/height: Global Wheat's `width, height` are the image's size, not the box's.
XYWH_NAMES = (("x", "y", "w", "h"), ("x_min", "y_min", "w", "h"), ("xmin", "ymin", "w", "h"),
              ("x", "y", "width", "height"), ("x_min", "y_min", "width", "height"), ("xmin", "ymin", "width", "height"))
BBOX_NAMES = ("bbox", "box")
# A list of boxes per image: the Great Barrier Reef's "[{'x': 559, 'y': 213, 'width': 50, 'height': 32}]".
ANNOTATION_NAMES = ("annotations",)
ANNOTATION_KEYS = ("x", "y", "width", "height")
ID_NAMES = ("image_id", "imageid", "image", "image_name", "file_name", "filename", "patientid", "patient_id", "id")
CLASS_NAMES = ("class_id", "category_id", "class_name", "class", "label", "category", "category_name")
READER_NAMES = ("rad_id", "reader", "reader_id", "annotator", "annotator_id", "rater_id")
EMPTY_TEXT = ("", "nan", "none", "null")
# The one class of a table without a class column (Global Wheat, RSNA).
DEFAULT_CLASS = "object"
NO_BOX = -1


def image_key(name: str) -> str:
    """An image's id for matching: the stem of a file name with an image extension, else the name as it is
    ("abc.jpg" -> "abc"; DICOM UIDs such as "1.2.840.113" keep their dots)."""
    path = Path(str(name))
    return path.stem if path.suffix.lower() in IMAGE_EXTENSIONS else str(name)


def empty_boxes(scores: bool = False) -> dict[str, np.ndarray]:
    """An image without a box, as truths ({"boxes", "labels"}) or, with `scores`, as a prediction."""
    out = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}
    return {**out, "scores": np.zeros(0, np.float32)} if scores else out


def box_arrays(boxes: dict[str, Any]) -> dict[str, np.ndarray]:
    """One image's boxes (numpy arrays, torch tensors or lists) as numpy: boxes float32 (N, 4) x_min, y_min, x_max,
    y_max, labels int64 (N,), scores float32 (N,), 1 for truths without scores."""
    def arr(value: Any) -> np.ndarray:
        return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)

    xyxy = arr(boxes["boxes"]).astype(np.float32).reshape(-1, 4)
    labels = arr(boxes["labels"]).astype(np.int64).reshape(-1)
    scores = arr(boxes["scores"]).astype(np.float32).reshape(-1) if "scores" in boxes else np.ones(len(xyxy), np.float32)
    return {"boxes": xyxy, "labels": labels, "scores": scores}


@dataclass
class BoxTable:
    """Boxes of a table, one row per box: `frame` has image_id, x_min, y_min, x_max, y_max (original pixels),
    label (index into `classes`, or -1 for a row that lists an image without a box) and `reader` when the table
    names one. `format` says in one line what was read; `no_finding` is the class of the rows without a box."""

    frame: pd.DataFrame
    classes: list[str]
    format: str
    no_finding: str | None = None
    _groups: dict[str, np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)
    _keys: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def image_ids(self) -> list[str]:
        """Every image the table lists, boxed or not, in order of first appearance."""
        return list(pd.unique(self.frame["image_id"]))

    def boxes_of(self, image_id: str) -> dict[str, np.ndarray]:
        """The image's boxes as {"boxes": float32 (N, 4) xyxy, "labels": int64 (N,)}; an image the table does
        not list (or lists without a box) has none. `image_id` may also be a file name of the id's stem."""
        if self._groups is None:
            self._groups = self.frame.groupby("image_id", sort=False).indices
            self._keys = {image_key(i): i for i in self._groups}
        assert self._keys is not None
        rows = self._groups.get(str(image_id))
        if rows is None:
            rows = self._groups.get(self._keys.get(image_key(image_id), ""))
        if rows is None:
            return empty_boxes()
        part = self.frame.iloc[rows]
        part = part[part["label"].to_numpy() >= 0]
        return {"boxes": part[BOX_COLUMNS].to_numpy(np.float32).reshape(-1, 4),
                "labels": part["label"].to_numpy(np.int64)}


def find_column(columns: Sequence[str], names: Sequence[str]) -> str | None:
    """The first of `names` among `columns`, compared case-insensitively; the column's own spelling."""
    lower = {c.lower(): c for c in columns}
    return next((lower[n] for n in names if n in lower), None)


def find_box_columns(path: Path, columns: Sequence[str], box_cols: Sequence[str] | None,
                     box_format: str) -> tuple[list[str], str]:
    """(the coordinate columns, "xyxy" | "xywh" | "bbox") of a table, found by name unless `box_cols` says."""
    if box_cols is not None:
        cols = [box_cols] if isinstance(box_cols, str) else list(box_cols)
        missing = [c for c in cols if c not in columns]
        if missing:
            raise DataError(f"{path}: missing box column(s) {missing}; columns are {list(columns)}")
        if len(cols) == 1:
            return cols, "bbox"
        if len(cols) != 4:
            raise DataError(f"{path}: box_cols needs 4 columns (or one bbox column), got {cols}")
        if box_format == "auto":
            names = tuple(c.lower() for c in cols)
            box_format = "xyxy" if names in XYXY_NAMES else "xywh" if names in XYWH_NAMES else ""
        if box_format not in ("xyxy", "xywh"):
            raise DataError(f"{path}: cannot tell whether {cols} are x_min, y_min, x_max, y_max or x, y, w, h; "
                            "pass box_format='xyxy' or 'xywh'")
        return cols, box_format
    for kind, sets in (("xyxy", XYXY_NAMES), ("xywh", XYWH_NAMES)):
        for names in sets:
            found = [find_column(columns, [n]) for n in names]
            if all(found):
                return [str(c) for c in found], kind
    bbox = find_column(columns, BBOX_NAMES)
    if bbox is not None:
        return [bbox], "bbox"
    listed = find_column(columns, ANNOTATION_NAMES)
    if listed is not None:
        return [listed], "annotations"
    raise DataError(f"{path}: no box columns (x_min, y_min, x_max, y_max; x, y, w, h; bbox; or annotations) among "
                    f"{list(columns)}; pass box_cols")


def parse_bbox_column(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column of "[x, y, w, h]" strings (Global Wheat) -> float (N, 4); an empty cell gives NaNs."""
    values = np.full((len(frame), 4), np.nan)
    for i, text in enumerate(frame[column]):
        text = str(text).strip()
        if text.lower() in EMPTY_TEXT:
            continue
        try:
            numbers = [float(v) for v in text.strip("[]()").replace(",", " ").split()]
        except ValueError:
            numbers = []
        if len(numbers) != 4:
            raise DataError(f"{path}: row {i + 2}: {column} {text!r} is not four numbers [x, y, w, h]")
        values[i] = numbers
    return values


def expand_annotations(path: Path, frame: pd.DataFrame, column: str) -> tuple[pd.DataFrame, np.ndarray]:
    """A column of box lists per image (the Great Barrier Reef's) -> a row per box, with its x, y, w, h; an image
    with "[]" keeps one row without a box."""
    rows: list[int] = []
    values: list[list[float]] = []
    for i, text in enumerate(frame[column].astype(str)):
        try:
            found = [[float(b[k]) for k in ANNOTATION_KEYS] for b in ast.literal_eval(text.strip() or "[]")]
        except (ValueError, SyntaxError, TypeError, KeyError):
            raise DataError(f"{path}: row {i + 2}: {column} {text[:60]!r} is not a list of "
                            "{'x': .., 'y': .., 'width': .., 'height': ..}") from None
        if any(v[2] < 0 or v[3] < 0 for v in found):
            raise DataError(f"{path}: row {i + 2}: {column} has a box of negative width or height")
        rows += [i] * max(len(found), 1)
        values += found or [[math.nan] * 4]
    return frame.iloc[rows].reset_index(drop=True), np.array(values, np.float64).reshape(-1, 4)


def parse_numbers(path: Path, frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Coordinate columns -> float (N, 4) with NaN for empty cells; text that is not a number is an error."""
    values = np.full((len(frame), len(columns)), np.nan)
    for j, column in enumerate(columns):
        text = frame[column].astype(str).str.strip()
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(np.isnan(numbers) & ~text.str.lower().isin(EMPTY_TEXT).to_numpy())
        if len(bad):
            raise DataError(f"{path}: row {bad[0] + 2}: {column} {text.iloc[bad[0]]!r} is not a number")
        values[:, j] = numbers
    return values


def to_xyxy(path: Path, values: np.ndarray, columns: Sequence[str], kind: str) -> np.ndarray:
    """Checked coordinates -> x_min, y_min, x_max, y_max: all four or none per row, sides not negative."""
    empty = np.isnan(values)
    partial = np.flatnonzero(empty.any(1) & ~empty.all(1))
    if len(partial):
        row = partial[0]
        gone = [c for c, e in zip(columns, empty[row]) if e]
        raise DataError(f"{path}: row {row + 2}: {', '.join(gone)} empty but not the other coordinates; "
                        "a box needs all four (or none, for an image without a box)")
    if kind != "xyxy":
        sides = values[:, 2:]
        bad = np.flatnonzero((sides < 0).any(1))
        if len(bad):
            row = bad[0]
            name, side = ((columns[-2], sides[row, 0]) if sides[row, 0] < 0 else (columns[-1], sides[row, 1]))
            raise DataError(f"{path}: row {row + 2}: {name} {side:g} < 0")
        values = np.concatenate([values[:, :2], values[:, :2] + sides], axis=1)
        return values
    for lo, hi in ((0, 2), (1, 3)):
        bad = np.flatnonzero(values[:, hi] < values[:, lo])
        if len(bad):
            row = bad[0]
            raise DataError(f"{path}: row {row + 2}: {columns[hi]} {values[row, hi]:g} < {columns[lo]} {values[row, lo]:g}")
    return values


def sort_classes(names: Sequence[str]) -> list[str]:
    """Class names in index order: numerically when every name is an integer (VinBigData's class_id), else
    alphabetically."""
    unique = sorted(set(names))
    if unique and all(n.lstrip("-").isdigit() for n in unique):
        return sorted(unique, key=int)
    return unique


def encode_classes(path: Path, frame: pd.DataFrame, class_col: str | None,
                   empty: np.ndarray) -> tuple[np.ndarray, list[str], str | None]:
    """(labels, classes, no-finding class): rows without a box get -1 and name the no-finding class."""
    if class_col is None:
        return np.where(empty, NO_BOX, 0), [DEFAULT_CLASS], None
    names = frame[class_col].astype(str).str.strip().to_numpy()
    unnamed = np.flatnonzero(pd.Series(names).str.lower().isin(EMPTY_TEXT).to_numpy() & ~empty)
    if len(unnamed):
        raise DataError(f"{path}: row {unnamed[0] + 2}: a box without a class in {class_col}")
    no_finding = sorted(set(names[empty]) - {n for n in names[empty] if n.lower() in EMPTY_TEXT})
    if len(no_finding) > 1:
        raise DataError(f"{path}: the rows without a box have classes {no_finding} in {class_col}; "
                        "expected one 'no finding' class")
    nf = no_finding[0] if no_finding else None
    boxed = np.flatnonzero((names == nf) & ~empty) if nf is not None else np.zeros(0, int)
    if len(boxed):
        raise DataError(f"{path}: row {boxed[0] + 2}: class {nf} (the class of rows without a box) has a box")
    classes = sort_classes(names[~empty])
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([NO_BOX if e else index[n] for n, e in zip(names, empty)], np.int64)
    return labels, classes, nf


def read_box_table(path: str | Path, id_col: str | None = None, class_col: str | None = None,
                   reader_col: str | None = None, box_cols: Sequence[str] | str | None = None,
                   box_format: str = "auto") -> BoxTable:
    """Read a CSV of one row per box; columns the arguments leave out are found by name.

    Boxes: x_min, y_min, x_max, y_max (or xmin..ymax, x1..y2), x, y, w, h (or width, height), a `bbox` column
    of "[x, y, w, h]" strings, or an `annotations` column of box lists, one row per image (the Great Barrier Reef);
    `box_cols` names them (`box_format` "xyxy" or "xywh" when the names do not say).
    Classes: class_id, class_name, ... (one class "object" when there is none). Readers: rad_id, reader, ...
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CSV not found")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    columns = list(frame.columns)
    id_col = id_col or find_column(columns, ID_NAMES)
    class_col = class_col or find_column(columns, CLASS_NAMES)
    reader_col = reader_col or find_column(columns, READER_NAMES)
    for role, col in (("image id", id_col), ("class", class_col), ("reader", reader_col)):
        if col is not None and col not in columns:
            raise DataError(f"{path}: no {role} column {col!r}; columns are {columns}")
    if id_col is None:
        raise DataError(f"{path}: no image id column (image_id, image, file_name, ...) among {columns}; pass id_col")
    cols, kind = find_box_columns(path, columns, box_cols, box_format)
    if kind == "annotations":
        frame, values = expand_annotations(path, frame, cols[0])
    else:
        values = parse_bbox_column(path, frame, cols[0]) if kind == "bbox" else parse_numbers(path, frame, cols)
    listed = kind in ("bbox", "annotations")
    boxes = to_xyxy(path, values, [f"{cols[0]} {n}" for n in "xywh"] if listed else cols, kind)
    empty = np.isnan(boxes).all(1)
    labels, classes, no_finding = encode_classes(path, frame, class_col, empty)
    out = pd.DataFrame({"image_id": frame[id_col].astype(str).to_numpy()})
    out[BOX_COLUMNS] = boxes
    out["label"] = labels
    if reader_col is not None:
        out["reader"] = frame[reader_col].astype(str).to_numpy()
    described = {"bbox": f"{cols[0]} column [x, y, w, h]", "annotations": f"{cols[0]} column of x, y, width, height lists",
                 "xyxy": f"{cols[0]}..{cols[-1]} columns"}.get(kind, f"{', '.join(cols)} columns")
    parts = [described, f"class column {class_col}" if class_col else "one class",
             *([f"reader column {reader_col}"] if reader_col else []),
             *([f"no-finding class {no_finding}"] if no_finding is not None else [])]
    return BoxTable(out, classes, ", ".join(parts), no_finding)


def read_coco(path: str | Path) -> BoxTable:
    """COCO JSON (images, annotations with bbox [x, y, w, h], categories): image_id is the image's file_name,
    classes are the category names in the order of their ids; an image without annotations gets a -1 row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: COCO JSON not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {img["id"]: str(img["file_name"]) for img in data["images"]}
        categories = sorted(data["categories"], key=lambda c: c["id"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not COCO JSON with images (id, file_name) and categories (id, name): {err}") from None
    index = {c["id"]: i for i, c in enumerate(categories)}
    rows: list[tuple] = []
    boxed = set()
    for k, ann in enumerate(data.get("annotations", [])):
        where = f"{path}: annotations[{k}]"
        if ann.get("image_id") not in names:
            raise DataError(f"{where}: image_id {ann.get('image_id')!r} is not among the images")
        if ann.get("category_id") not in index:
            raise DataError(f"{where}: category_id {ann.get('category_id')!r} is not among the categories")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or min(bbox[2:]) < 0:
            raise DataError(f"{where}: bbox {bbox!r} is not [x, y, w, h] with w, h >= 0")
        x, y, w, h = (float(v) for v in bbox)
        rows.append((names[ann["image_id"]], x, y, x + w, y + h, index[ann["category_id"]]))
        boxed.add(ann["image_id"])
    rows += [(name, math.nan, math.nan, math.nan, math.nan, NO_BOX) for i, name in names.items() if i not in boxed]
    frame = pd.DataFrame(rows, columns=["image_id", *BOX_COLUMNS, "label"]).astype({"label": np.int64})
    return BoxTable(frame, [str(c["name"]) for c in categories], "COCO JSON, bbox [x, y, w, h]")


def read_yolo_file(path: Path, name: str, size: tuple[int, int]) -> list[tuple]:
    """One YOLO label file's rows (image id, x_min, y_min, x_max, y_max, class) in pixels of (height, width)."""
    height, width = size
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            label, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:])
        except ValueError:
            raise DataError(f"{path}: line {line_no}: expected 'class cx cy w h', got {line.strip()!r}") from None
        if w < 0 or h < 0 or label < 0:
            raise DataError(f"{path}: line {line_no}: negative class or size in {line.strip()!r}")
        rows.append((name, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height, label))
    return rows


def read_yolo(label_dir: str | Path, image_sizes: dict[str, tuple[int, int]],
              classes: list[str] | None = None) -> BoxTable:
    """YOLO txt labels ("class cx cy w h" normalised, one file per image stem) for the images of `image_sizes`
    ({id: (height, width)}); a missing file is an image without a box. Classes default to the ids as strings."""
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise DataError(f"{label_dir}: YOLO label folder not found")
    rows: list[tuple] = []
    for name, size in image_sizes.items():
        file = label_dir / f"{image_key(name)}.txt"
        found = read_yolo_file(file, name, size) if file.is_file() else []
        rows += found or [(name, math.nan, math.nan, math.nan, math.nan, NO_BOX)]
    frame = pd.DataFrame(rows, columns=["image_id", *BOX_COLUMNS, "label"]).astype({"label": np.int64})
    top = int(frame["label"].max()) if len(frame) else -1
    if classes is None:
        classes = [str(i) for i in range(top + 1)]
    elif top >= len(classes):
        raise DataError(f"{label_dir}: class {top} in the labels but only {len(classes)} classes {classes}")
    return BoxTable(frame, list(classes), "YOLO txt, class cx cy w h normalised")
