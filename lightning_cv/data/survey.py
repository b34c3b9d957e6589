"""What a competition folder holds, read once for `lightning-cv init`: its tables, image folders and sample
submission, with the column and file tests every task's recognizer shares; and the `Reading` a recognizer
returns (a task, its options, the evidence for each, the questions left).

Nothing is written, and images are read by header (sizes) or a few at a time (mask values, RLE order).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from lightning_cv.errors import DataError
from lightning_cv.io.images import IMAGE_EXTENSIONS, image_size
from lightning_cv.io.masks import is_empty_rle, rle_decode

RLE = re.compile(r"^\s*\d+ \d+( \d+ \d+)*\s*$")
MAX_DEPTH = 3  # image folders are found this deep (TGS: train/images)
SAMPLE = 24  # images or rows read to measure something


@dataclass
class Reading:
    """One task's reading of a folder: how sure it is (0-1), the data and model options it would set, each
    decision's evidence (option, value, file, why) and the questions it leaves ({option: the question})."""

    task: str
    score: float
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    evidence: list[tuple[str, str, str, str]] = field(default_factory=list)
    questions: dict[str, str] = field(default_factory=dict)

    def set(self, option: str, value: Any, source: str, why: str) -> None:
        """Decide `--data.<option>` (or `--model.<option>` when written `model.<option>`), with its evidence."""
        target, name = (self.model, option[6:]) if option.startswith("model.") else (self.data, option)
        target[name] = value
        shown = option if option.startswith("model.") else f"data.{option}"
        self.evidence.append((shown, _shown(value), source, why))

    def ask(self, option: str, question: str) -> None:
        self.questions[option] = question


def _shown(value: Any) -> str:
    return "null" if value is None else "''" if value == "" else str(value)


# -- columns -----------------------------------------------------------------------------------------
def values(column: pd.Series) -> pd.Series:
    """The non-empty cells of a column, as stripped strings."""
    cells = column.astype(str).str.strip()
    return cells[(cells != "") & (cells.str.lower() != "nan")]


def is_rle_column(column: pd.Series) -> bool:
    """Run-length encoded masks: most non-empty cells are `start length` pairs (-1 and empties allowed)."""
    cells = values(column)
    cells = cells[cells != "-1"]
    return len(cells) > 0 and cells.str.match(RLE).mean() > 0.9


def is_binary_column(column: pd.Series) -> bool:
    cells = values(column)
    return len(cells) > 0 and set(cells.unique()) <= {"0", "1", "0.0", "1.0"}


def numbers(column: pd.Series) -> pd.Series | None:
    """The column as floats, when every non-empty cell is a number."""
    cells = values(column)
    parsed = pd.to_numeric(cells, errors="coerce")
    return parsed if len(cells) and parsed.notna().all() else None


def is_tag_column(column: pd.Series) -> bool:
    """Space-separated tags (Planet's `clear primary`, HPA's `16 0`): a good share of cells hold several."""
    cells = values(column)
    return len(cells) > 0 and not is_rle_column(column) and cells.str.contains(" ").mean() > 0.1


def measured(column: pd.Series) -> bool:
    """A measurement rather than a label: fractional numbers, or integers over a wide range (> 20 values)."""
    parsed = numbers(column)
    if parsed is None:
        return False
    return bool((parsed != parsed.round()).any()) or parsed.nunique() > 20 or parsed.max() - parsed.min() > 20


def grades(column: pd.Series) -> list[int] | None:
    """The grades of an ordinal integer column (0-4 APTOS, 0-5 ISUP): 3 to 11 consecutive integers."""
    parsed = numbers(column)
    if parsed is None or not (parsed == parsed.round()).all():
        return None
    found = sorted(int(v) for v in parsed.unique())
    return found if 3 <= len(found) <= 11 and found == list(range(found[0], found[-1] + 1)) else None


# -- the folder --------------------------------------------------------------------------------------
class Survey:
    """A competition folder as found: tables (every CSV, read as strings), image folders, the sample submission."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: not a folder (init reads a competition's files as they are unpacked)")
        self.tables: dict[str, pd.DataFrame] = {}
        self.folders: dict[str, list[Path]] = {}
        self.files: list[Path] = []
        self._found: dict[str, Any] = {}
        self._walk(self.root, 0)

    def once(self, key: str, find: Callable[[], Any]) -> Any:
        """`find()` once per folder: what several tasks' recognizers look for (label or RLE tables, image sizes)."""
        if key not in self._found:
            self._found[key] = find()
        return self._found[key]

    def _walk(self, folder: Path, depth: int) -> None:
        images = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir():
                if depth < MAX_DEPTH:
                    self._walk(path, depth + 1)
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(path)
            else:
                self.files.append(path)
                if path.suffix.lower() == ".csv" and depth <= 1:
                    self.tables[self.rel(path)] = pd.read_csv(path, dtype=str, keep_default_na=False)
        if images:
            self.folders[self.rel(folder)] = images

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() or "."

    # -- tables --------------------------------------------------------------------------------------
    @cached_property
    def sample(self) -> tuple[str, pd.DataFrame] | None:
        """The sample submission (a table named like `sample_submission.csv`), or None."""
        found = sorted((name for name in self.tables if "sample" in name.lower() and "sub" in name.lower()),
                       key=lambda name: name.count("/"))  # the folder's own before a subfolder's
        return (found[0], self.tables[found[0]]) if found else None

    def training_tables(self) -> list[tuple[str, pd.DataFrame]]:
        """Tables that may hold training labels: not the sample, a solution or a test list; `train*` first."""
        skip = ("sample", "solution", "submission", "test")
        found = [(n, t) for n, t in self.tables.items() if not any(s in Path(n).name.lower() for s in skip) and len(t)]
        return sorted(found, key=lambda item: (not Path(item[0]).name.lower().startswith("train"), item[0]))

    def sample_targets(self) -> list[str]:
        """The sample submission's columns after its id column (what a submission predicts)."""
        return list(self.sample[1].columns[1:]) if self.sample else []

    # -- image folders -------------------------------------------------------------------------------
    def image_folders(self, exclude: str = "mask") -> list[str]:
        """Folders of images whose path does not name `exclude` (masks), largest first."""
        found = [f for f in self.folders if exclude not in f.lower()]
        return sorted(found, key=lambda f: -len(self.folders[f]))

    def match(self, keys: pd.Series, exclude: str = "mask") -> tuple[str, str, float] | None:
        """(folder, suffix to append, share of keys found) of the image folder whose file names, or stems
        plus one suffix, the keys are; None when no folder holds half of them."""
        keys = values(keys).unique()
        best = None
        for folder in self.image_folders(exclude):
            names = {p.name for p in self.folders[folder]}
            stems = {p.stem for p in self.folders[folder]}
            suffix = Counter(p.suffix for p in self.folders[folder]).most_common(1)[0][0]
            by_name = np.mean([k in names for k in keys]) if len(keys) else 0.0
            by_stem = np.mean([k in stems for k in keys]) if len(keys) else 0.0
            share, append = (by_name, "") if by_name >= by_stem else (by_stem, suffix)
            if share >= 0.5 and (best is None or share > best[2]):
                best = (folder, append, float(share))
        return best

    def test_folder(self, train: str) -> str | None:
        """The test images' folder for training images in `train`: `test` in its place (train/images ->
        test/images, train_images -> test_images, train_v2 -> test_v2), else any folder named test*."""
        twin = train.replace("train", "test")
        if twin != train and twin in self.folders:
            return twin
        found = [f for f in self.image_folders() if "test" in f.lower()]
        return found[0] if found else None

    def sizes(self, folder: str) -> list[tuple[int, int]]:
        """(height, width) of a sample of a folder's images, from their headers (read once per folder)."""
        paths = self.folders[folder]
        return self.once(f"sizes {folder}", lambda: [image_size(p) for p in paths[:: max(1, len(paths) // SAMPLE)][:SAMPLE]])

    def grey(self, folder: str) -> bool:
        """A folder of single-channel images (TGS), from its first image."""
        path = self.folders[folder][0]
        if path.suffix.lower() in (".dcm", ".dicom"):
            return False
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        return image is not None and (image.ndim == 2 or image.shape[2] == 1)


# -- pixel order of run-length encodings ---------------------------------------------------------------
def rle_order(rles: list[str], shapes: list[tuple[int, int]], masks: list[np.ndarray] | None = None,
              images: list[Path] | None = None) -> tuple[str | None, str]:
    """("C" or "F", why) for RLE strings of images of `shapes`: by agreement with `masks` when given; else the
    order whose decoded masks form compact regions (fewer connected components; on square images a mask and
    its transpose are as compact); else the order whose regions stand out from the rest of their `images`;
    None when nothing tells."""
    pairs = [(r, s, i) for i, (r, s) in enumerate(zip(rles, shapes)) if not is_empty_rle(r)][:SAMPLE]
    if not pairs:
        return None, "every sampled RLE is empty"
    if masks is not None:
        agree = {order: np.mean([np.array_equal(rle_decode(r, s, order) > 0, masks[i] > 0) for r, s, i in pairs])
                 for order in "CF"}
        order = max(agree, key=agree.get)
        if agree[order] > 0.9 and agree[order] > agree["F" if order == "C" else "C"]:
            return order, f"{agree[order]:.0%} of {len(pairs)} decoded rows equal their mask files"
        return None, "neither order reproduces the mask files"
    parts = {order: sum(cv2.connectedComponents(rle_decode(r, s, order), connectivity=8)[0] - 1 for r, s, _ in pairs)
             for order in "CF"}
    order, other = ("C", "F") if parts["C"] < parts["F"] else ("F", "C")
    if parts[order] * 1.5 <= parts[other]:
        return order, f"decoded {order}: {parts[order]} regions in {len(pairs)} rows, {other}: {parts[other]}"
    if images is not None:
        contrast = {order: 0.0 for order in "CF"}
        for r, s, i in pairs:
            grey = cv2.imread(str(images[i]), cv2.IMREAD_GRAYSCALE)
            for order in "CF":
                inside = rle_decode(r, s, order) > 0
                if grey is not None and grey.shape == s and inside.any() and not inside.all():
                    contrast[order] += abs(float(grey[inside].mean()) - float(grey[~inside].mean()))
        order, other = ("C", "F") if contrast["C"] > contrast["F"] else ("F", "C")
        if contrast[order] >= 1.5 * contrast[other] and contrast[order] > 0:
            return order, (f"decoded {order}, the regions stand out from their images ({contrast[order] / len(pairs):.0f} "
                           f"grey levels against {contrast[other] / len(pairs):.0f})")
    return None, f"both orders give as compact masks ({parts['C']} and {parts['F']} regions in {len(pairs)} rows)"


def group_pattern(stems: list[str]) -> str | None:
    """`^([^_]+)_` when file stems are `<group>_<view>` with several views per group (Carvana's cars)."""
    heads = [s.split("_", 1)[0] for s in stems if "_" in s]
    if len(heads) < 0.9 * len(stems) or not heads:
        return None
    counts = Counter(heads)
    return r"^([^_]+)_" if len(counts) >= 5 and np.median(list(counts.values())) >= 2 else None


def suggested_size(sizes: list[tuple[int, int]], largest: int = 512) -> int | list[int]:
    """A training size from the images' sizes: the median, the long side at most `largest`, each side a
    multiple of 32; one side when square."""
    height, width = (int(np.median([s[i] for s in sizes])) for i in (0, 1))
    scale = min(1.0, largest / max(height, width))
    fit = [max(32, int(round(side * scale / 32)) * 32) for side in (height, width)]
    return fit[0] if fit[0] == fit[1] else fit


def shared_layout(reading: Reading, survey: Survey, train: str, default_dir: str = "train",
                  default_test: str = "test", image_dir: str | None = None) -> None:
    """What every image task reads the same way: the training and test folders, the sample submission
    (checked against the test images), the image size, grey images, name groups. `train` is the folder
    measured; `image_dir` the option's value when it differs (a folder per class: their parent)."""
    images = survey.folders[train]
    image_dir = image_dir or train
    if image_dir != default_dir:
        reading.set("image_dir", image_dir, f"{image_dir}/", f"{len(images)} training images" if image_dir == train else "")
    test = survey.test_folder(image_dir)
    if test is None and survey.sample is not None and sample_names(survey.sample[1], images):
        test = train  # Plant Pathology: Train_<n> and Test_<n> in one folder, the sample naming the test ones
    if test is not None and test != default_test:
        why = "the sample's ids are images here too" if test == train else f"{len(survey.folders[test])} test images"
        reading.set("predict_dir", (survey.root / test).as_posix(), f"{test}/", why)
    if survey.sample is not None:
        name, sample = survey.sample
        if test is not None:
            check_sample_ids(name, sample, survey.folders[test])
        reading.set("sample_submission", name, name, f"columns {', '.join(sample.columns)}; {len(sample)} rows")
    sizes = survey.sizes(train)
    size = suggested_size(sizes)
    shapes = Counter(sizes).most_common(2)
    reading.set("image_size", size, f"{train}/", f"images {' and '.join(f'{h}x{w}' for (h, w), _ in shapes)}"
                + (" (large: consider --data.crop and --model.tile_size)" if max(max(s) for s in sizes) > 2048 else ""))
    if survey.grey(train):
        reading.set("channels", 1, images[0].name, "single-channel (grey) images")
    stems = [p.stem for p in images]
    if reading.data.get("channel_suffixes"):  # `<id>_red.png`: the id is the image
        stems = sorted({s.rsplit("_", 1)[0] for s in stems})
    pattern = group_pattern(stems)
    if pattern is not None:
        groups = Counter(s.split("_", 1)[0] for s in stems)
        reading.set("group_pattern", pattern, f"{train}/", f"names <group>_<view>: {len(groups)} groups of about "
                    f"{int(np.median(list(groups.values())))} images kept in one fold (a group pattern, not a given column)")


def sample_names(sample: pd.DataFrame, images: list[Path]) -> bool:
    """Whether most of a sample submission's ids name `images` (by file name, stem, a composite key's image, or
    the id of per-channel files)."""
    ids = values(sample[sample.columns[0]]).unique()[:200]
    known = {p.name for p in images} | {p.stem for p in images} | {p.stem.rsplit("_", 1)[0] for p in images}
    found = [i for i in ids if i in known or i.rsplit("_", 1)[0] in known]
    return len(ids) > 0 and len(found) >= 0.5 * len(ids)


def check_sample_ids(name: str, sample: pd.DataFrame, test_images: list[Path]) -> None:
    """A sample submission's ids must name test images: else a one-line error naming the file."""
    ids = values(sample[sample.columns[0]]).unique()
    if len(ids) and not sample_names(sample, test_images):
        raise DataError(f"{name}: its ids match no test image (e.g. {ids[0]!r}; test images are like "
                        f"{test_images[0].name!r}): is it this competition's sample submission?")
