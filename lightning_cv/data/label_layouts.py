"""How a competition folder gives its labels, found for `lightning-cv init`: a table naming the images (by file
name, or by id plus a suffix; per-channel files `<id>_red.png` too) with its target columns, a folder per
class, or labels in the file names (`cat.123.jpg`)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lightning_cv.data.survey import Reading, Survey, is_binary_column, is_rle_column, numbers, values

CHANNEL_ORDER = ("red", "green", "blue", "yellow")  # HPA's stains, in the order channels are stacked


@dataclass
class LabelTable:
    name: str
    frame: pd.DataFrame
    image_col: str
    images: str  # the folder of the images the table names
    suffix: str  # appended to image_col values to name a file ('' when they are file names)
    channel_suffixes: list[str] | None = None  # one grey file per channel: `<id><suffix>`

    def targets(self, survey: Survey) -> tuple[list[str], str]:
        """(the target columns, why): the sample submission's columns found in the table, else every column
        that is not the image's and not a per-row id."""
        given = [c for c in survey.sample_targets() if c in self.frame.columns]
        if given:
            return given, f"the sample submission predicts {', '.join(given)}"
        found = [c for c in self.frame.columns if c != self.image_col and not _unique_text(self.frame[c])]
        return found, "columns beside the image column"


def _unique_text(column: pd.Series) -> bool:
    return numbers(column) is None and values(column).nunique() >= 0.9 * len(column)


def channel_files(survey: Survey, keys: pd.Series) -> tuple[str, list[str]] | None:
    """(folder, suffixes) where each key has one file per channel, `<key>_<channel>.<ext>` (HPA)."""
    wanted = set(values(keys).unique()[:500])
    for folder in survey.image_folders():
        paths = survey.folders[folder]
        tails = Counter(p.stem.rsplit("_", 1)[1] for p in paths if "_" in p.stem)
        common = [t for t, n in tails.items() if n >= 0.2 * len(paths)]
        ids = {p.stem.rsplit("_", 1)[0] for p in paths if "_" in p.stem}
        if 2 <= len(common) <= 6 and wanted and len(wanted & ids) >= 0.5 * len(wanted):
            extension = Counter(p.suffix for p in paths).most_common(1)[0][0]
            ordered = sorted(common, key=lambda t: (CHANNEL_ORDER.index(t) if t in CHANNEL_ORDER else 99, t))
            return folder, [f"_{t}{extension}" for t in ordered]
    return None


def find_label_table(survey: Survey) -> LabelTable | None:
    """The first training table (no masks in it) with a column naming the images of a folder."""
    return survey.once("label table", lambda: _find_label_table(survey))


def _find_label_table(survey: Survey) -> LabelTable | None:
    for name, frame in survey.training_tables():
        if any(is_rle_column(frame[c]) for c in frame.columns):
            continue
        for column in frame.columns:
            match = survey.match(frame[column])
            if match is not None:
                return LabelTable(name, frame, column, match[0], match[1])
            channels = channel_files(survey, frame[column])
            if channels is not None:
                return LabelTable(name, frame, column, channels[0], "", channels[1])
    return None


def one_hot(frame: pd.DataFrame, columns: list[str]) -> bool | None:
    """True for one-hot columns (0/1, one 1 a row), False for multi-hot, None when not all 0/1."""
    if len(columns) < 2 or not all(is_binary_column(frame[c]) for c in columns):
        return None
    sums = sum(pd.to_numeric(frame[c], errors="coerce").fillna(0) for c in columns)
    return bool((sums == 1).all())


def table_options(reading: Reading, table: LabelTable, label: str | None, defaults: dict[str, str]) -> None:
    """The table's options where they differ from the DataModule's `defaults` (csv, image_col, label_col)."""
    if table.name != defaults["csv"]:
        reading.set("csv", table.name, table.name, "the training table")
    if table.image_col != defaults["image_col"]:
        reading.set("image_col", table.image_col, table.name, f"its values name the images of {table.images}/")
    if table.suffix:
        reading.set("image_suffix", table.suffix, f"{table.images}/", f"{table.image_col} holds ids: files are <id>{table.suffix}")
    if table.channel_suffixes:
        reading.set("channel_suffixes", table.channel_suffixes, f"{table.images}/", "one grey file per channel, stacked in this order")
    if label is not None and label != defaults["label_col"]:
        reading.set("label_col", label, table.name, "the target column")


def class_folders(survey: Survey) -> tuple[str, list[str]] | None:
    """(folder, classes) of an ImageFolder layout: `<folder>/<class>/*.jpg`, two classes or more."""
    parents = Counter(str(Path(f).parent) for f in survey.folders if Path(f).parent != Path("."))
    masked = {str(Path(f).parent) for f in survey.folders if "mask" in Path(f).name.lower()}
    for parent, n in parents.most_common():
        if n >= 2 and "test" not in parent.lower() and parent not in masked:  # not TGS's images/ + masks/
            return parent, sorted(Path(f).name for f in survey.folders if str(Path(f).parent) == parent)
    return None


def name_labels(survey: Survey, folder: str) -> tuple[str, list[str]] | None:
    """(pattern, labels) when the file names of `folder` start with their label (`cat.123.jpg`, `dog_45.png`)."""
    pattern = r"^([A-Za-z]+)[._-]\d+"
    names = [p.name for p in survey.folders[folder]]
    found = [re.match(pattern, n) for n in names]
    labels = sorted({m.group(1) for m in found if m})
    if all(found) and 2 <= len(labels) <= 50:
        return pattern, labels
    return None
