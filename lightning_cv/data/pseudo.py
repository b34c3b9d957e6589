"""Pseudo-labels: a run's confident test predictions, added to the next run's training images."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lightning_cv.errors import DataError, MissingFileError, UserInputError
from lightning_cv.predictions.files import load_predictions


@dataclass
class PseudoLabels:
    """Images with the class index their prediction gave them, and a readable account of it."""

    paths: list[Path]
    targets: np.ndarray
    ids: list[str]
    summary: str


def read_probabilities(path: Path, class_names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(ids, probabilities (N, C), the file's class names, where each row is) from `predict`'s
    predictions.csv (image, label, prob_<class>), a CSV with one probability column per class (a
    submission in a sample's shape), or a predictions / submission .npz."""
    if not path.is_file():
        raise MissingFileError(f"{path}: pseudo-label file not found (--data.pseudo_labels: predict's predictions.csv, "
                               "or an ensemble's submission.csv/.npz)")
    if path.suffix == ".npz":
        saved = load_predictions(path)
        probs = saved.arrays.get("probs")
        if probs is None or probs.ndim != 2:
            shape = "none" if probs is None else probs.shape
            raise DataError(f"{path}: probabilities of shape {shape} are not one row per image (classification)")
        return saved.ids, probs, saved.class_names, [f"entry {i}" for i in range(len(saved.ids))]
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    columns = [c for c in frame.columns if c.startswith("prob_")]
    names = [c[len("prob_"):] for c in columns]
    if not columns:
        columns = names = [c for c in frame.columns[1:] if c in class_names]
    if not columns:
        raise DataError(f"{path}: no probabilities (prob_<class> columns, or one column per class {class_names}); "
                        f"columns are {list(frame.columns)}")
    probs = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    return frame.iloc[:, 0].astype(str).to_numpy(), probs, names, [f"row {i}" for i in range(2, len(frame) + 2)]


def select_pseudo_labels(path: str | Path, class_names: list[str], threshold: float, image_dir: Path,
                  training_images: Iterable[Path], training_ids: Iterable[str]) -> PseudoLabels:
    """The rows of a predictions file whose highest probability is at least `threshold`, as images in
    `image_dir` labelled with that class. Every row is checked: known classes, a probability per class,
    an existing image that is not a training image, no id twice."""
    path = Path(path)
    if not 0.0 < threshold <= 1.0:
        raise UserInputError(f"--data.pseudo_threshold must be in (0, 1], got {threshold}")
    ids, probs, names, where = read_probabilities(path, class_names)
    unknown = [name for name in names if name not in class_names]
    if unknown:
        raise DataError(f"{path}: row 1: class {unknown[0]!r} is not a training class {class_names}: "
                        "pseudo labels need predictions of a model trained on these classes")
    bad = np.flatnonzero(~np.isfinite(probs).all(axis=1))
    if len(bad):
        raise DataError(f"{path}: {where[bad[0]]}: {ids[bad[0]]!r} has a missing or non-numeric probability")
    seen: set[str] = set()
    train_ids = set(map(str, training_ids))
    train_paths = {Path(p).resolve() for p in training_images}
    paths = []
    for id_, at in zip(ids, where):
        image = image_dir / id_
        if id_ in seen:
            raise DataError(f"{path}: {at}: duplicate image {id_!r}")
        seen.add(id_)
        if not image.is_file():
            raise DataError(f"{path}: {at}: image {id_!r} not found in {image_dir} (pseudo labels are read from "
                            "--data.predict_dir, data_dir/test by default)")
        if id_ in train_ids or image.resolve() in train_paths:
            raise DataError(f"{path}: {at}: {id_!r} is also a training image: pseudo labels are for unlabelled (test) images")
        paths.append(image)
    # In the file's precision: a probability written as 0.9 passes --data.pseudo_threshold 0.9.
    keep = np.flatnonzero(probs.max(axis=1) >= np.asarray(threshold, dtype=probs.dtype))
    index = np.array([class_names.index(name) for name in names], dtype=np.int64)
    targets = index[probs[keep].argmax(axis=1)] if len(keep) else np.zeros(0, np.int64)
    counts = np.bincount(targets, minlength=len(class_names))
    per_class = ", ".join(f"{name} {n}" for name, n in zip(class_names, counts.tolist()))
    summary = (f"pseudo labels: {len(keep)} of {len(ids)} images in {path} with probability >= {threshold} "
               f"added to training ({per_class})")
    return PseudoLabels([paths[i] for i in keep], targets, [str(ids[i]) for i in keep], summary)
