"""Memory that segmentation `predict` keeps per test image: peak RSS of a whole `lightning-cv predict`
process over 1,600 and over 200 test images of 512x512 predicted at 256 px, the same checkpoint.

    (peak(1,600) - peak(200)) / 1,400 = what each further test image adds; goal <= 16 KiB, so that
    100,000 images fit in under 1.6 GiB. A float16 probability map at 256 px is 128 KiB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import common
from common import Row

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(tempfile.gettempdir()) / "lightning-cv-bench" / "predict"
SIZES = (200, 1600)
# A small encoder keeps the run short on 2 cores; the writer's memory does not depend on the network.
COMMON = ["--config", str(ROOT / "configs/seg.yaml"), "--model.encoder", "tu-resnet10t", "--data.image_size", "256",
          "--data.batch_size", "16", "--data.num_workers", "0", "--trainer.precision", "32-true",
          "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _data() -> Path:
    """train/ (16 shapes with masks, for a one-step checkpoint) and test folders of 200 and 1,600 images
    of 512x512, written once."""
    from lightning_cv.data.demos import make_shapes

    root = WORK / "data"
    if not (root / "train.csv").is_file():
        make_shapes(root, n_train=16, n_test=max(SIZES), size=(512, 512), seed=0)
    for n in SIZES:
        folder = WORK / f"test{n}"
        if not folder.is_dir():
            folder.mkdir(parents=True)
            for path in sorted((root / "test").iterdir())[:n]:
                os.link(path, folder / path.name)
    return root


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lightning_cv", *args]


def _env() -> dict[str, str]:
    # A fixed mmap threshold: glibc otherwise raises it as large buffers are freed, and the peak then moves
    # by tens of MiB from run to run (1,517-1,590 MiB over the same 200 images; 0.1 MiB with it fixed).
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(common.THREADS), "PYTHONPATH": str(ROOT)}


def _checkpoint(root: Path) -> Path:
    run = WORK / "fit"
    ckpt = run / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        shutil.rmtree(run, ignore_errors=True)
        subprocess.run(_cli("fit", *COMMON, "--data.data_dir", str(root), "--trainer.default_root_dir", str(run),
                            "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.logger", "false"),
                       check=True, env=_env(), capture_output=True)
    return ckpt


def peak_rss(root: Path, ckpt: Path, n: int) -> float:
    """Peak RSS (MiB) of one `predict` process over the first n test images; checks what it wrote."""
    out = WORK / f"predict{n}"
    shutil.rmtree(out, ignore_errors=True)
    process = subprocess.Popen(_cli("predict", *COMMON, "--data.data_dir", str(root), "--data.predict_dir",
                                    str(WORK / f"test{n}"), "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(out)),
                               env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"predict over {n} images failed:\n{process.stderr.read().decode()[-2000:]}")
    process.stderr.close()
    masks = list(out.rglob("masks/*.png"))
    if len(masks) != n:
        raise RuntimeError(f"predict over {n} images wrote {len(masks)} masks")
    return usage.ru_maxrss / 1024  # Linux: KiB


def run(quick: bool = False) -> list[Row]:
    root = _data()
    ckpt = _checkpoint(root)
    small, large = (peak_rss(root, ckpt, n) for n in SIZES)
    per_image = (large - small) * 1024 / (SIZES[1] - SIZES[0])
    return [Row(f"memory segmentation `predict` keeps per test image: (peak RSS over {SIZES[1]:,} - over {SIZES[0]:,}) "
                f"/ {SIZES[1] - SIZES[0]:,}, 512x512 images at 256 px (KiB per image)", f"{SIZES[1]:,} images", large,
                f"{SIZES[0]:,} images", small, "MiB", "<=16", per_image,
                "whole predict processes (Unet tu-resnet10t, masks and RLEs written), glibc's mmap threshold fixed; "
                "a float16 map at 256 px is 128 KiB")]
