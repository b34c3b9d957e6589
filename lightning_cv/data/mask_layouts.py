"""How a competition folder gives its masks, found for `lightning-cv init`: mask files beside the images
(`train_masks/<id>_mask.gif`, `train/masks/<id>.png`), or run-length encoded tables (one mask per image, a row
per instance, a row per image and class, composite `<image>_<class>` keys), and their pixel order."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lightning_cv.data.survey import SAMPLE, Reading, Survey, is_rle_column, rle_order, values
from lightning_cv.io.images import image_size, read_mask
from lightning_cv.io.masks import is_empty_rle


@dataclass
class MaskFiles:
    images: str  # folder of the training images
    masks: str  # folder of their masks
    suffix: str  # mask stem = image stem + suffix
    files: dict[str, Path]  # mask file by image stem


@dataclass
class RLETable:
    name: str
    frame: pd.DataFrame
    id_col: str
    rle_col: str
    images: str  # folder of the images its ids name
    class_col: str | None = None  # a class column (Severstal's ClassId)
    key_sep: str | None = None  # composite keys `<image><sep><class>` (Clouds' Image_Label)

    def image_ids(self) -> pd.Series:
        keys = self.frame[self.id_col].astype(str)
        return keys.str.rsplit(self.key_sep, n=1).str[0] if self.key_sep else keys


def mask_suffix(image_stems: set[str], mask_stems: list[str]) -> str | None:
    """The suffix that turns most image stems into mask stems (`_mask`, or '' for the same name)."""
    found = Counter()
    for stem in mask_stems[:: max(1, len(mask_stems) // 64)][:64]:
        if stem in image_stems:
            found[""] += 1
            continue
        head = next((k for k in range(len(stem) - 1, 0, -1) if stem[:k] in image_stems), None)
        if head is not None:
            found[stem[head:]] += 1
    if not found:
        return None
    suffix, count = found.most_common(1)[0]
    return suffix if count >= 0.8 * sum(found.values()) else None


def find_mask_files(survey: Survey) -> MaskFiles | None:
    """A folder whose path names masks, and the image folder whose stems its files extend."""
    for masks in (f for f in survey.folders if "mask" in f.lower()):
        mask_paths = survey.folders[masks]
        for images in survey.image_folders():
            stems = {p.stem for p in survey.folders[images]}
            suffix = mask_suffix(stems, [p.stem for p in mask_paths])
            if suffix is not None:
                files = {p.stem[: len(p.stem) - len(suffix)] if suffix else p.stem: p for p in mask_paths}
                return MaskFiles(images, masks, suffix, files)
    return None


def find_rle_tables(survey: Survey) -> list[RLETable]:
    """Every training table with an RLE column and a column naming the images (plain or composite keys)."""
    return survey.once("rle tables", lambda: _find_rle_tables(survey))


def _find_rle_tables(survey: Survey) -> list[RLETable]:
    found = []
    for name, frame in survey.training_tables():
        rle_cols = [c for c in frame.columns if is_rle_column(frame[c])]
        if not rle_cols:
            continue
        others = [c for c in frame.columns if c not in rle_cols]
        for id_col in others:
            match = survey.match(frame[id_col])
            if match is not None:
                classes = [c for c in others if c != id_col and 2 <= values(frame[c]).nunique() <= 50
                           and values(frame[c]).nunique() < 0.5 * len(frame)]
                found.append(RLETable(name, frame, id_col, rle_cols[0], match[0], classes[0] if classes else None))
                break
            for sep in ("_",):  # composite keys: `<image>_<class>` (Severstal's first table, Clouds)
                heads = frame[id_col].astype(str).str.rsplit(sep, n=1).str[0]
                match = survey.match(heads)
                if match is not None and "_" in str(frame[id_col].iloc[0]):
                    found.append(RLETable(name, frame, id_col, rle_cols[0], match[0], None, sep))
                    break
            else:
                continue
            break
    return found


def decide_order(reading: Reading, survey: Survey, table: RLETable, masks: MaskFiles | None) -> None:
    """--data.rle_order from a table: by agreement with the mask files when there are some, else by the
    compactness of both decodings; a question when neither tells."""
    frame = table.frame[[not is_empty_rle(r) for r in table.frame[table.rle_col]]]
    ids = (frame[table.id_col].astype(str) if not table.key_sep else
           frame[table.id_col].astype(str).str.rsplit(table.key_sep, n=1).str[0])
    paths = {p.name: p for p in survey.folders[table.images]} | {p.stem: p for p in survey.folders[table.images]}
    rows = [(r, paths[i]) for r, i in zip(frame[table.rle_col], ids) if i in paths][:SAMPLE]
    if not rows:
        return
    shapes = [image_size(p) for _, p in rows]
    stems = [Path(p).stem for _, p in rows]
    mask_arrays = ([read_mask(masks.files[s]) for s in stems] if masks is not None and all(s in masks.files for s in stems)
                   else None)
    order, why = rle_order([r for r, _ in rows], shapes, mask_arrays, [p for _, p in rows])
    if order is None:
        reading.ask("rle_order", f"the pixel order of {table.name}'s {table.rle_col} cannot be told ({why}): "
                                 "pass --data.rle_order C (row-major, Carvana) or F (column-major, TGS, Airbus)")
    else:
        reading.set("rle_order", order, table.name, why)


def mask_values(paths: list[Path]) -> set[int]:
    """The pixel values of a sample of mask files."""
    found: set[int] = set()
    for path in paths[:: max(1, len(paths) // 8)][:8]:
        found |= set(np.unique(read_mask(path)).tolist())
    return found
