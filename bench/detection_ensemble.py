"""Does the fold ensemble beat its folds? Each fold's test submission and the WBF ensemble of the folds, written by
`lightning-cv ensemble` with the decisions `cv` tuned out of fold (postprocess.json), scored by Global Wheat's
per-image formula against the demo's solution, with paired bootstrap intervals of the ensemble's gain over each
fold (the same resampled test images for both sides).

    PYTHONPATH=. .venv/bin/python bench/detection_ensemble.py runs/detection/cv-<time> [--data data/detection]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lightning_cv.cli.commands.ensemble import ensemble  # noqa: E402
from lightning_cv.cli.commands.score import score_frames  # noqa: E402
from lightning_cv.models.box_metrics import wheat_per_image  # noqa: E402
from lightning_cv.predictions.box_strings import decode  # noqa: E402


def per_image_wheat(submission: pd.DataFrame, solution: pd.DataFrame) -> np.ndarray:
    """Global Wheat's score of each solution image (NaN for an image with neither truth nor prediction, which the
    metric leaves out of its mean)."""
    predicted = submission.set_index("image_id")["PredictionString"].reindex(solution["image_id"]).fillna("")
    return wheat_per_image([decode(t, "conf_xywh") for t in predicted],
                           [decode(t, "conf_xywh") for t in solution["PredictionString"].fillna("")])


def gain_interval(ours: np.ndarray, theirs: np.ndarray, draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """The mean gain of `ours` over `theirs` (per-image scores) and its 95% paired bootstrap interval."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(ours), size=(draws, len(ours)))
    gains = np.nanmean(ours[index], axis=1) - np.nanmean(theirs[index], axis=1)
    return float(np.nanmean(ours) - np.nanmean(theirs)), *np.percentile(gains, [2.5, 97.5]).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dir", type=Path)
    parser.add_argument("--data", type=Path, default=Path("data/detection"))
    args = parser.parse_args()
    solution = pd.read_csv(args.data / "solution.csv", dtype=str, keep_default_na=False)
    sample = args.data / "sample_submission.csv"
    folds = sorted(p for p in args.cv_dir.glob("fold[0-9]*") if (p / "test").is_dir())
    with tempfile.TemporaryDirectory() as tmp:
        rows = {f"fold {p.name[4:]}": ensemble([p / "test"], postprocess=args.cv_dir / "postprocess.json",
                                               sample_submission=sample, out=Path(tmp, f"{p.name}.csv")) for p in folds}
        rows["WBF ensemble of the folds"] = ensemble([args.cv_dir], sample_submission=sample, out=Path(tmp, "ensemble.csv"))
        frames = {name: pd.read_csv(path, dtype=str, keep_default_na=False) for name, path in rows.items()}
    scores = {name: per_image_wheat(frame, solution) for name, frame in frames.items()}
    fused = scores["WBF ensemble of the folds"]
    print(f"\n{len(solution)} test images ({args.data}), decisions of {args.cv_dir / 'postprocess.json'}\n")
    print("| submission | Global Wheat score | COCO mAP | ensemble's gain (95% paired bootstrap) |\n|---|---|---|---|")
    for name, frame in frames.items():
        gain = "" if scores[name] is fused else "{:+.4f} [{:+.4f}, {:+.4f}]".format(*gain_interval(fused, scores[name]))
        print(f"| {name} | {score_frames(frame, solution, 'wheat'):.4f} | {score_frames(frame, solution, 'map'):.4f} | {gain} |")


if __name__ == "__main__":
    main()
