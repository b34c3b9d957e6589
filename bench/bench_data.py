"""Decode + augment libraries, and the preprocessing cache: loader epochs, fit epochs, peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np
import torch
from common import Row

SIDE = 128
WORK = Path(tempfile.gettempdir()) / "lightning-cv-bench"


# -- decode + augment: the same steps in each library ---------------------------------------------
def albumentations_pipeline(paths: list[Path]):
    import albumentations as A
    import cv2
    from albumentations.pytorch import ToTensorV2

    from lightning_cv.io.images import read_image

    tf = A.Compose([A.Resize(SIDE, SIDE, interpolation=cv2.INTER_AREA), A.HorizontalFlip(p=0.5),
                    A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.0, hue=0.0, p=1.0),
                    A.ToFloat(max_value=255.0), ToTensorV2()], seed=0)
    return lambda: [tf(image=read_image(p))["image"] for p in paths]


def torchvision_pipeline(paths: list[Path], reader: str):
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms import v2

    tf = v2.Compose([v2.Resize((SIDE, SIDE), antialias=True), v2.RandomHorizontalFlip(0.5),
                     v2.ColorJitter(brightness=0.2, contrast=0.2), v2.ToDtype(torch.float32, scale=True)])
    if reader == "tvio":
        return lambda: [tf(decode_image(str(p), mode=ImageReadMode.RGB)) for p in paths]

    def pil(p: Path):
        with Image.open(p) as im:
            return tf(v2.functional.pil_to_tensor(im.convert("RGB")))

    return lambda: [pil(p) for p in paths]


# -- the cache ------------------------------------------------------------------------------------
def class_data(name: str, n: int, height: int, width: int) -> Path:
    root = WORK / name
    paths = common.write_jpegs(root / "train", n, height, width)
    common.write_class_csv(root, paths)
    return root


def loader_epoch(root: Path, cache: str, image_size: int = 64, workers: int = 0) -> float:
    from lightning_cv.data.classification import ClassificationDataModule

    dm = ClassificationDataModule(str(root), image_size=image_size, batch_size=16, num_workers=workers,
                                  val_fraction=0.1, cache=cache, train_augment=[{"HorizontalFlip": {"p": 0.5}}])
    dm.setup("fit")
    start = time.perf_counter()
    for _ in dm.train_dataloader():
        pass
    return time.perf_counter() - start


def fit_epoch(root: Path, cache: str, workers: int = 0) -> float:
    from bench_fit import EpochTimer

    from lightning_cv.data.classification import ClassificationDataModule
    from lightning_cv.tasks.classification import ClassificationTask
    from lightning_cv.training.trainer import Trainer

    dm = ClassificationDataModule(str(root), image_size=64, batch_size=16, num_workers=workers, val_fraction=0.1,
                                  cache=cache, train_augment=[{"HorizontalFlip": {"p": 0.5}}])
    timer = EpochTimer()
    trainer = Trainer(max_epochs=1, precision="32-true", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      callbacks=[timer.callback], num_sanity_val_steps=0)
    trainer.fit(ClassificationTask(num_classes=2, backbone="small_cnn", image_size=64), datamodule=dm)
    return timer.seconds


MEMORY_SCRIPT = """
import json, resource, sys, time
sys.path.insert(0, {bench!r})
from bench_data import loader_epoch
from pathlib import Path
import common; common.set_threads()
seconds = loader_epoch(Path({root!r}), "memmap", image_size=32)
print(json.dumps({{"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "seconds": seconds}}))
"""


def peak_memory(root: Path) -> dict:
    """Peak RSS of a fresh process running one cached loader epoch (the cache already filled)."""
    script = MEMORY_SCRIPT.format(bench=str(Path(__file__).parent), root=str(root))
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(quick: bool = False) -> list[Row]:
    rows = []
    # 1. decode + augment, 32 JPEGs of 1024x768.
    paths = common.write_jpegs(WORK / "aug", 16, 768, 1024)
    t = common.side_by_side({"albu": albumentations_pipeline(paths), "tvio": torchvision_pipeline(paths, "tvio"),
                             "pil": torchvision_pipeline(paths, "pil")}, repeats=5)
    ips = {k: len(paths) / v for k, v in t.items()}
    note = f"PIL + v2: {ips['pil']:.1f} images/s, OpenCV+Albumentations ÷ PIL + v2 = {ips['albu'] / ips['pil']:.2f}"
    rows.append(Row(f"OpenCV + Albumentations ÷ torchvision.io + v2: decode 1024x768 JPEG, resize {SIDE}, flip, "
                    "brightness/contrast, float tensor", "albumentations", ips["albu"], "torchvision", ips["tvio"],
                    "images/s", ">=1.0", ips["albu"] / ips["tvio"], note))

    # 2. loader epoch and 3. fit epoch, large JPEGs (2048x1536), cached vs decoding.
    big = class_data("big", 24, 1200, 1600)
    loader_epoch(big, "memmap")  # fill the cache
    t = common.side_by_side({"cached": lambda: loader_epoch(big, "memmap"), "decode": lambda: loader_epoch(big, "none")},
                            repeats=3, warmup=False)
    n = len(list((big / "train").iterdir())) * 0.9
    rows.append(Row("data-loading epoch (DataLoader alone, 1600x1200 JPEGs -> 64 px) cached ÷ decoding",
                    "cached", n / t["cached"], "decoding", n / t["decode"], "images/s", ">=3",
                    t["decode"] / t["cached"], "memmap cache, num_workers=0"))
    t = common.side_by_side({"cached": lambda: fit_epoch(big, "memmap"), "decode": lambda: fit_epoch(big, "none"),
                             "decode_w2": lambda: fit_epoch(big, "none", workers=2)}, repeats=2, warmup=False)
    rows.append(Row("whole fit epoch with cache ÷ without (1600x1200 JPEGs, small_cnn at 64 px)", "cached",
                    t["cached"], "decoding", t["decode"], "s/epoch", "report", t["decode"] / t["cached"],
                    f"decoding with num_workers=2: {t['decode_w2']:.2f} s/epoch "
                    f"(vs {t['decode']:.2f} with 0: workers {'help' if t['decode_w2'] < t['decode'] else 'do not help'} here)"))

    # 4. peak memory: a cached run on 10,000 images vs 1,000 (32x32 JPEGs, cache filled first).
    small = class_data("mem10k", 10_000, 32, 32)
    first = class_data("mem1k", 1_000, 32, 32)
    for root in (first, small):
        loader_epoch(root, "memmap", image_size=32)
    mem = {"1k": [], "10k": []}
    for _ in range(2):
        mem["1k"].append(peak_memory(first)["maxrss_kb"])
        mem["10k"].append(peak_memory(small)["maxrss_kb"])
    a, b = float(np.median(mem["10k"])) / 1024, float(np.median(mem["1k"])) / 1024
    rows.append(Row("peak memory of a cached loader epoch on 10,000 images ÷ on 1,000", "10,000", a, "1,000", b,
                    "MiB", "<=1.3", a / b, "peak RSS of a fresh process (torch + lightning imported), memmap cache"))
    return rows


if __name__ == "__main__":
    for row in run():
        row.show()
