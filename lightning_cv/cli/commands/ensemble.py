"""`lightning-cv ensemble`: combine saved predictions of folds, runs and models without running a model,
or predict with checkpoints first.

    lightning-cv ensemble runs/cls/cv-*/ runs/cls/<run>/predict-* --method mean --out submission.csv \\
        --sample_submission data/cls/sample_submission.csv
    lightning-cv ensemble runs/cls/a/checkpoints/last.ckpt runs/cls/b/checkpoints/last.ckpt --data.predict_dir data/cls/test

How predictions combine and become a submission is the task's (`CVTask.combine`, `CVTask.submission`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from lightning_cv.errors import DataError, MissingFileError, UserInputError
from lightning_cv.io.images import write_csv
from lightning_cv.models.tta import TTAMode
from lightning_cv.predictions.decisions import found_decisions, tuned_file
from lightning_cv.predictions.files import PREDICTIONS, align, find_predictions, load_predictions
from lightning_cv.predictions.stores import scratch_dir
from lightning_cv.predictions.thresholds import load_thresholds
from lightning_cv.tasks import get_task
from lightning_cv.tasks.checkpoints import checkpoint_recipe


def ensemble(
    paths: list[Path],
    method: str | None = None,
    weights: list[float] | None = None,
    out: Path = Path("submission.csv"),
    sample_submission: Path | None = None,
    split: Literal["test", "oof"] = "test",
    rle_order: Literal["C", "F"] | None = None,
    threshold: float | None = None,
    thresholds: str | None = None,
    postprocess: Path | None = None,
    config: Path | None = None,
    tta: TTAMode = "none",
    overrides: list[str] | None = None,
) -> Path:
    """Combine saved predictions (folds of a CV run, runs, different models) into one submission.

    Args:
        paths: CV run dirs (all their folds), fold or run dirs, predict dirs, or predictions.npz/.csv files.
        method: how the task combines them (default: its first way): mean (of probabilities, values ...), vote
            (majority of predicted labels / mask pixels, for tasks that vote), wbf, nms, soft_nms or nmw (boxes).
        weights: one weight per prediction file found, in order (default: equal).
        out: the submission CSV (written atomically); the combined predictions go to the same name with .npz.
        sample_submission: the competition's sample submission: same ids, order and columns.
        split: "test" predictions, or a CV run's "oof" ones (to score an ensemble on CV).
        rle_order: RLE pixel order of mask submissions: C row-major (Carvana), F column-major; default:
            the predictions' own (the data's --data.rle_order).
        threshold: foreground probability (or vote share) threshold for binary masks; default: the
            predictions' own (the model's --model.threshold).
        thresholds: per-class decision thresholds (multi-label tags): a thresholds.json (as `cv` writes)
            or one number. Default: the thresholds.json of a CV run among `paths`, else the predictions' own.
        postprocess: decisions `cv` tunes on out-of-fold predictions (postprocess.json: per-class mask
            threshold and minimum area, grade cut points). Default: the postprocess.json of a CV run among `paths`.
        config: a config for the `.ckpt` files among `paths`, which are predicted first; not needed for a
            checkpoint of `lightning-cv fit`, which holds its recipe (any further option, e.g. --data.predict_dir
            DIR, is passed on to those predictions and wins).
        tta: test-time augmentation for those checkpoint predictions: none, hflip, flip, d4.
    """
    files = [f for p in paths for f in (
        [predict_with_checkpoint(Path(p), config, tta, overrides or [], out)] if Path(p).suffix == ".ckpt"
        else find_predictions(Path(p), split))]
    if not files:
        raise DataError(f"no predictions found under {[str(p) for p in paths]} (predictions.npz / predictions.csv)")
    predictions = align([load_predictions(f) for f in files])
    first = predictions[0]
    decided = decision_thresholds(thresholds, paths, first.class_names)
    tuned = found_decisions(postprocess, paths)
    predictions = [p.with_meta(**tuned).with_meta(threshold=threshold, rle_order=rle_order, thresholds=decided)
                   for p in predictions]
    out = Path(out)
    module = get_task(first.task).module
    method = method or module.combine_methods[0]
    with scratch_dir(out.parent, f"{out.stem}-rows") as store:  # maps are combined here a chunk at a time
        combined = module.combine(predictions, method, weights, store)
        sample = pd.read_csv(sample_submission, dtype=str, keep_default_na=False) if sample_submission else None
        frame = get_task(first.task).module.submission(combined, sample, sample_submission or "sample submission")
        write_csv(frame, out)
        combined.save(out.with_suffix(".npz"))
    print(f"{method} of {len(files)} prediction sets ({', '.join(str(f) for f in files)}) -> {out} ({len(frame)} rows)")
    return out


def decision_thresholds(thresholds: str | None, paths: list[Path], class_names: list[str]) -> list[float] | float | None:
    """Per-class thresholds: a number, a thresholds.json, or (none given) the thresholds.json a CV run among
    `paths` tuned on its out-of-fold predictions, else None (the predictions' own)."""
    if thresholds is None:
        tuned = tuned_file(paths, "thresholds.json")
        if tuned is None:
            return None
        thresholds = str(tuned)
    try:
        value = float(thresholds)
    except ValueError:
        if not Path(thresholds).is_file():
            raise MissingFileError(f"{thresholds}: thresholds file not found (--thresholds takes a thresholds.json or a number)") from None
        print(f"thresholds: {thresholds}")
        return np.asarray(load_thresholds(thresholds, class_names)).tolist()
    if not 0.0 < value < 1.0:
        raise UserInputError(f"--thresholds {thresholds}: a probability threshold is between 0 and 1")
    return value


def predict_with_checkpoint(ckpt: Path, config: Path | None, tta: str, overrides: list[str], out: Path) -> Path:
    """Predict the test images with a checkpoint and return its predictions.npz: into its run's
    `predict-<timestamp>-<name>/` when it is a run's checkpoint (as `predict` would), else beside the
    submission `out` (a checkpoint's own folder, e.g. a read-only Kaggle input, is never written)."""
    from lightning_cv.cli.commands.cv import predict_checkpoint

    if not ckpt.is_file():
        raise MissingFileError(f"{ckpt}: checkpoint not found")
    if config is None and checkpoint_recipe(ckpt) is None:
        raise UserInputError(f"{ckpt} holds no data recipe (not written by `lightning-cv fit`): pass --config, the "
                             "config it was trained with")
    name = f"predict-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{ckpt.stem}"
    if ckpt.parent.name == "checkpoints":
        out_dir = ckpt.parent.parent / name
    else:
        out_dir = Path(out).parent / f"{Path(out).stem}-predictions" / f"{ckpt.parent.name}-{name}"
    predict_checkpoint(config, overrides, ckpt, out_dir, tta, [])
    return out_dir / PREDICTIONS
