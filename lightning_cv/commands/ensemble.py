"""`lightning-cv ensemble`: combine saved predictions of folds, runs and models without running a model,
or predict with checkpoints first.

    lightning-cv ensemble runs/cls/cv-*/ runs/cls/<run>/predict-* --method mean --out submission.csv \\
        --sample_submission data/cls/sample_submission.csv
    lightning-cv ensemble runs/cls/a/checkpoints/last.ckpt runs/cls/b/checkpoints/last.ckpt --config configs/cls.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from lightning_cv.errors import DataError, MissingFileError, UserInputError
from lightning_cv.io import atomic_path, write_csv
from lightning_cv.submission import submission_frame
from lightning_cv.tta import TTAMode


@dataclass
class Predictions:
    """One model's saved predictions: ids, probabilities (N, C) or (N, C, h, w), original sizes for masks;
    multilabel: independent sigmoid probabilities per tag (decided by thresholds, not argmax)."""

    source: Path
    ids: np.ndarray
    probs: np.ndarray
    class_names: list[str]
    sizes: np.ndarray | None = None
    multilabel: bool = False


def load_predictions(path: Path) -> Predictions:
    """A `predictions.npz` (cv's fold predictions, oof.npz) or a classification `predictions.csv`
    (multi-label: its `tags` column)."""
    if path.suffix == ".npz":
        with np.load(path) as saved:
            if "probs" not in saved.files:
                raise DataError(f"{path}: no probabilities saved (only classification and segmentation can be ensembled)")
            return Predictions(path, saved["ids"].astype(str), saved["probs"].astype(np.float32),
                               saved["class_names"].astype(str).tolist(), saved["size"] if "size" in saved.files else None,
                               multilabel="task" in saved.files and str(saved["task"]) == "multilabel")
    frame = pd.read_csv(path, dtype={0: str}, keep_default_na=False)
    prob_cols = [c for c in frame.columns if c.startswith("prob_")]
    if not prob_cols:
        raise DataError(f"{path}: no prob_<class> columns; ensembles need probabilities (predictions.csv or .npz)")
    return Predictions(path, frame.iloc[:, 0].astype(str).to_numpy(), frame[prob_cols].to_numpy(np.float32),
                       [c[len("prob_"):] for c in prob_cols], multilabel="tags" in frame.columns)


def find_predictions(path: Path, split: Literal["test", "oof"] = "test") -> list[Path]:
    """Prediction files under a path: a file itself; a CV run (every fold's test predictions, or its
    oof.npz); a fold or run dir (test/, its newest predict-*/); a predict dir."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MissingFileError(f"{path}: no such file or directory")
    if (path / "folds.csv").is_file():
        if split == "oof":
            return [path / "oof.npz"] if (path / "oof.npz").is_file() else []
        return [p for fold in sorted(path.glob("fold[0-9]*")) if "-replaced-" not in fold.name
                for p in find_predictions(fold, split)[:1]]
    for candidate in (path / "test" / "predictions.npz", path / "predictions.npz", path / "test" / "predictions.csv",
                      path / "predictions.csv"):
        if candidate.is_file():
            return [candidate]
    runs = sorted(path.glob("predict-*"), key=lambda p: p.stat().st_mtime)
    return find_predictions(runs[-1], split) if runs else []


def combine(predictions: list[Predictions], method: Literal["mean", "vote"] = "mean",
            weights: list[float] | None = None, thresholds: np.ndarray | float | None = None) -> np.ndarray:
    """Weighted mean of probabilities, or a weighted majority vote (shares of the votes per class;
    for masks per pixel; with multi-label `thresholds`, per tag: the share of models above its
    threshold). Rows must already be aligned."""
    if weights is None:
        weights = [1.0] * len(predictions)
    if len(weights) != len(predictions):
        raise UserInputError(f"{len(weights)} weights for {len(predictions)} predictions")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise UserInputError(f"weights must be non-negative with a positive sum, got {weights}")
    w = w / w.sum()
    stack = np.stack([p.probs for p in predictions]).astype(np.float64)
    if method == "mean":
        return np.tensordot(w, stack, axes=1).astype(np.float32)
    if thresholds is not None:
        return np.tensordot(w, (stack > np.asarray(thresholds)).astype(np.float64), axes=1).astype(np.float32)
    if stack.shape[2] == 1:  # binary masks (one sigmoid channel): foreground share of the votes
        return np.tensordot(w, (stack > 0.5).astype(np.float64), axes=1).astype(np.float32)
    classes = np.arange(stack.shape[2]).reshape(1, -1, *[1] * (stack.ndim - 3))
    votes = np.zeros(stack.shape[1:], dtype=np.float64)
    for weight, probs in zip(w, stack):
        votes += weight * (probs.argmax(axis=1)[:, None] == classes)
    return votes.astype(np.float32)


def align(predictions: list[Predictions]) -> list[Predictions]:
    """Reorder every prediction set to the first one's ids; all must cover the same ids and classes."""
    first = predictions[0]
    order = {i: r for r, i in enumerate(first.ids)}
    aligned = [first]
    for p in predictions[1:]:
        if p.class_names != first.class_names:
            raise DataError(f"{p.source}: classes {p.class_names} differ from {first.source}'s {first.class_names}")
        if set(p.ids) != set(order) or len(p.ids) != len(order):
            raise DataError(f"{p.source}: its {len(p.ids)} ids are not the {len(order)} of {first.source}")
        index = np.argsort([order[i] for i in p.ids])
        aligned.append(replace(p, ids=p.ids[index], probs=p.probs[index], sizes=None if p.sizes is None else p.sizes[index]))
    return aligned


def ensemble(
    paths: list[Path],
    method: Literal["mean", "vote"] = "mean",
    weights: list[float] | None = None,
    out: Path = Path("submission.csv"),
    sample_submission: Path | None = None,
    split: Literal["test", "oof"] = "test",
    rle_order: Literal["C", "F"] = "C",
    threshold: float = 0.5,
    thresholds: str | None = None,
    config: Path | None = None,
    tta: TTAMode = "none",
    overrides: list[str] | None = None,
) -> Path:
    """Combine saved predictions (folds of a CV run, runs, different models) into one submission.

    Args:
        paths: CV run dirs (all their folds), fold or run dirs, predict dirs, or predictions.npz/.csv files.
        method: mean (of probabilities) or vote (majority of predicted labels / mask pixels).
        weights: one weight per prediction file found, in order (default: equal).
        out: the submission CSV (written atomically); its probabilities go to the same name with .npz.
        sample_submission: the competition's sample submission: same ids, order and columns.
        split: "test" predictions, or a CV run's "oof" ones (to score an ensemble on CV).
        rle_order: RLE pixel order of mask submissions: C row-major (Carvana), F column-major.
        threshold: foreground probability (or vote share) threshold for binary masks.
        thresholds: multi-label tag thresholds: a thresholds.json (as `cv` writes) or one number.
            Default for multi-label predictions: the thresholds.json of a CV run among `paths`, else 0.5.
        config: the training config, to predict with the `.ckpt` files among `paths` first (any further
            option, e.g. --data.predict_dir DIR, is passed on to those predictions).
        tta: test-time augmentation for those checkpoint predictions: none, hflip, flip, d4.
    """
    files = [f for p in paths for f in (
        [predict_with_checkpoint(Path(p), config, tta, overrides or [])] if Path(p).suffix == ".ckpt"
        else find_predictions(Path(p), split))]
    if not files:
        raise DataError(f"no predictions found under {[str(p) for p in paths]} (predictions.npz / predictions.csv)")
    predictions = align([load_predictions(f) for f in files])
    first = predictions[0]
    tag_thresholds = None
    if thresholds is not None or first.multilabel:
        tag_thresholds = tag_thresholds_for(thresholds, paths, first.class_names)
    probs = combine(predictions, method, weights, tag_thresholds if method == "vote" else None)
    # A vote's output is the share of models for each tag: a majority keeps it.
    decision = 0.5 if method == "vote" and tag_thresholds is not None else tag_thresholds
    sample = pd.read_csv(sample_submission, dtype=str, keep_default_na=False) if sample_submission else None
    frame = submission_frame(first.ids, probs, first.class_names, first.sizes, sample, rle_order, threshold,
                             thresholds=decision)
    out = Path(out)
    write_csv(frame, out)
    with atomic_path(out.with_suffix(".npz")) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, ids=first.ids, probs=probs, class_names=np.array(first.class_names, dtype=str),
                            **({"size": first.sizes} if first.sizes is not None else {}),
                            **({"task": np.array("multilabel")} if first.multilabel else {}))
    print(f"{method} of {len(files)} prediction sets ({', '.join(str(f) for f in files)}) -> {out} ({len(frame)} rows)")
    return out


def tag_thresholds_for(thresholds: str | None, paths: list[Path], class_names: list[str]) -> np.ndarray | float:
    """Multi-label thresholds: a number, a thresholds.json, or (none given) the thresholds.json a CV run
    among `paths` tuned on its out-of-fold predictions, else 0.5."""
    from lightning_cv.thresholds import load_thresholds

    if thresholds is None:
        tuned = [Path(p) / "thresholds.json" for p in paths if (Path(p) / "thresholds.json").is_file()]
        if not tuned:
            print("tag thresholds: 0.5 (no thresholds.json among the inputs; pass --thresholds)")
            return 0.5
        thresholds = str(tuned[0])
    try:
        value = float(thresholds)
    except ValueError:
        if not Path(thresholds).is_file():
            raise MissingFileError(f"{thresholds}: thresholds file not found (--thresholds takes a thresholds.json or a number)") from None
        print(f"tag thresholds: {thresholds}")
        return load_thresholds(thresholds, class_names)
    if not 0.0 < value < 1.0:
        raise UserInputError(f"--thresholds {thresholds}: a probability threshold is between 0 and 1")
    return value


def predict_with_checkpoint(ckpt: Path, config: Path | None, tta: str, overrides: list[str]) -> Path:
    """Predict the test images with a checkpoint (into `<run>/predict-<timestamp>-<name>/`, as `predict`
    would) and return its predictions.npz."""
    from lightning_cv.commands.cv import PREDICTIONS, predict_checkpoint

    if not ckpt.is_file():
        raise MissingFileError(f"{ckpt}: checkpoint not found")
    if config is None:
        raise UserInputError(f"{ckpt}: predicting with a checkpoint needs --config (the config it was trained with)")
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    out_dir = run_dir / f"predict-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{ckpt.stem}"
    predict_checkpoint(Path(config), overrides, ckpt, out_dir, tta, [])
    return out_dir / PREDICTIONS
