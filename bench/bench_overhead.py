"""Whole-process `lightning-cv fit` against a hand-written PyTorch loop process (`overhead_loop.py`).

Both are real processes timed from start to exit: the same 1,797 digits (scikit-learn's, upscaled to
64 px PNGs in the classification layout), resnet18 from scratch, fp32, batch 32, the same augmentation,
8 epochs, each with validation and a best-weights save. `fit` runs as a user's does without credentials
(W&B offline, checkpoints, pictures, the summary table); its epochs are clocked by `epoch_clock.EpochClock`.

Rows: the whole process (start-up, epochs, exit), and the steady-state epoch (median of epochs 2-8).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np
from common import Row

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EPOCHS, SIZE, BATCH = 8, 64, 32
AUGMENT = [{"HorizontalFlip": {"p": 0.5}}, {"VerticalFlip": {"p": 0.5}},
           {"RandomBrightnessContrast": {"brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5}}]


def write_digits(root: Path) -> Path:
    """scikit-learn's 1,797 8x8 digits as 64x64 RGB PNGs under root/train with root/train.csv (image, label)."""
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits()
    if (root / "train.csv").is_file() and len(list((root / "train").glob("*.png"))) == len(digits.images):
        return root
    (root / "train").mkdir(parents=True, exist_ok=True)
    lines = ["image,label"]
    for i, (digit, label) in enumerate(zip(digits.images, digits.target)):
        grey = cv2.resize((digit * (255.0 / 16.0)).astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(root / "train" / f"{i:04d}.png"), cv2.cvtColor(grey.clip(0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
        lines.append(f"{i:04d}.png,{label}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


def _env() -> dict[str, str]:
    threads = str(common.THREADS)
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "WANDB_MODE": "offline",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}


def _timed(command: list[str], work: Path) -> tuple[float, list[float]]:
    """(wall seconds from start to exit, epoch start times and the end of training)."""
    start = time.time()
    subprocess.run(command, env=_env(), cwd=work, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - start
    marks = json.loads((work / "epochs.json").read_text())
    return wall, [start, *marks, start + wall]


def fit_command(data: Path, work: Path) -> list[str]:
    return [sys.executable, "-m", "lightning_cv", "fit", "--model", "lightning_cv.tasks.ClassificationTask",
            "--model.backbone", "resnet18", "--model.pretrained", "false", "--data", "lightning_cv.data.ClassificationDataModule",
            "--data.data_dir", str(data), "--data.image_size", str(SIZE), "--data.batch_size", str(BATCH),
            "--data.num_workers", "0", "--data.train_augment", json.dumps(AUGMENT), "--trainer.max_epochs", str(EPOCHS),
            "--trainer.precision", "32-true", "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(work / "run"),
            "--trainer.callbacks+=epoch_clock.EpochClock", "--trainer.callbacks.out", str(work / "epochs.json")]


def loop_command(data: Path, work: Path) -> list[str]:
    return [sys.executable, str(HERE / "overhead_loop.py"), str(data), str(work), "--epochs", str(EPOCHS),
            "--size", str(SIZE), "--batch", str(BATCH), "--threads", str(common.THREADS)]


def run(quick: bool = False) -> list[Row]:
    data = write_digits(HERE / "work" / "digits64")
    timings: dict[str, tuple[float, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        for name, command in (("fit", fit_command), ("loop", loop_command)):
            work = Path(tmp) / name
            work.mkdir()
            timings[name] = _timed(command(data, work), work)
    wall = {name: t[0] for name, t in timings.items()}
    # marks: process start, each epoch's start, the end of training, process exit.
    epochs = {name: np.diff(t[1][1:-1]) for name, t in timings.items()}
    steady = {name: statistics.median(e[1:]) for name, e in epochs.items()}
    fixed = {name: wall[name] - float(e.sum()) for name, e in epochs.items()}
    before = {name: t[1][1] - t[1][0] for name, t in timings.items()}
    after = {name: t[1][-1] - t[1][-2] for name, t in timings.items()}
    setup = f"resnet18, {SIZE} px, 1,797 digits, batch {BATCH}, fp32, flips + brightness/contrast"
    return [
        Row(f"whole-process `lightning-cv fit` ÷ hand-written loop process ({setup}, {EPOCHS} epochs)",
            "fit", wall["fit"], "loop", wall["loop"], "s", ">=0.90", wall["loop"] / wall["fit"],
            f"not in an epoch: fit {fixed['fit']:.1f} s ({before['fit']:.1f} before the first, {after['fit']:.1f} after "
            f"the last), loop {fixed['loop']:.1f} s ({before['loop']:.1f}, {after['loop']:.1f}); W&B offline; one run each"),
        Row(f"steady-state epoch of `lightning-cv fit` ÷ of the loop (train, validate, save; {setup})",
            "fit", steady["fit"], "loop", steady["loop"], "s/epoch", ">=0.97", steady["loop"] / steady["fit"],
            f"median of epochs 2-{EPOCHS} of the same two processes; first epoch fit {epochs['fit'][0]:.1f} s, "
            f"loop {epochs['loop'][0]:.1f} s"),
    ]


if __name__ == "__main__":
    for row in run():
        row.show()
