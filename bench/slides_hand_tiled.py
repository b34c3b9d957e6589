"""The hand-tiled workflow the slides task replaces, on the slides demo: cut tiles from the training slides
by hand (3 in 4 around a glomerulus, the rest anywhere), save them as PNG images and masks, train the `seg`
task on them, predict the test slides whole by tiles, and score the submission (mean Dice, HuBMAP's metric).

    python bench/slides_hand_tiled.py [--data data/slides] [--out /tmp/hand-tiled] [fit options ...]

Prints the test Dice; the README puts it beside the slides task's (`lightning-cv fit --config configs/slides.yaml`,
predict with the checkpoint alone, `lightning-cv score`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lightning_cv.io.images import write_image
from lightning_cv.io.masks import RLERuns
from lightning_cv.io.slides import Slide

TILE = 128


def cut_tiles(data: Path, out: Path, per_slide: int, seed: int = 0) -> None:
    """per_slide tiles of TILE px from every training slide: 3 in 4 centred near a mask pixel, the rest anywhere."""
    rng = np.random.default_rng(seed)
    table = pd.read_csv(data / "train.csv")
    for slide_id, rle in zip(table["id"], table["encoding"]):
        slide = Slide(data / "train" / f"{slide_id}.tiff")
        height, width = slide.size
        runs = RLERuns(rle, slide.size, "F")
        for k in range(per_slide):
            if k % 4 < 3 and runs.pixels:
                cy, cx = runs.sample(rng)
                y, x = cy - int(rng.integers(TILE)), cx - int(rng.integers(TILE))
            else:
                y, x = int(rng.integers(height - TILE)), int(rng.integers(width - TILE))
            y, x = int(np.clip(y, 0, height - TILE)), int(np.clip(x, 0, width - TILE))
            name = f"{slide_id}_{k:03d}"
            write_image(out / "train" / f"{name}.png", slide.read(y, x, TILE, TILE))
            write_image(out / "train_masks" / f"{name}_mask.png", runs.window(y, x, TILE, TILE) * 255)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/slides"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/hand-tiled"))
    parser.add_argument("--per-slide", type=int, default=96)
    args, fit_options = parser.parse_known_args()
    cut_tiles(args.data, args.out / "tiles", args.per_slide)
    run = args.out / "run"
    test_size = Slide(next((args.data / "test").glob("*.tiff"))).size
    cli = [sys.executable, "-m", "lightning_cv"]
    subprocess.run([*cli, "fit", "--config", "configs/seg.yaml", "--data.data_dir", str(args.out / "tiles"),
                    "--data.image_size", str(TILE), "--data.batch_size", "16", "--trainer.max_epochs", "8",
                    "--trainer.default_root_dir", str(run), *fit_options], check=True)
    checkpoint = next(run.rglob("best*.ckpt"))
    subprocess.run([*cli, "predict", "--ckpt_path", str(checkpoint), "--data.predict_dir", str(args.data / "test"),
                    "--data.image_size", f"[{test_size[0]}, {test_size[1]}]", "--model.tile_size", "512",
                    "--data.rle_order", "F", "--data.sample_submission", str(args.data / "sample_submission.csv"),
                    "--trainer.default_root_dir", str(args.out / "predict")], check=True)
    submission = next((args.out / "predict").rglob("submission.csv"))
    subprocess.run([*cli, "score", str(submission), str(args.data / "solution.csv"), "--metric", "dice"], check=True)


if __name__ == "__main__":
    main()
