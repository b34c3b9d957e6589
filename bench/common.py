"""Shared bench pieces: the machine's description, side-by-side timing (interleaved, median), rows."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# On a shared 2-core machine two torch threads ran 3-5x slower than one (oversubscription); both
# sides of every ratio run with the same thread count, set here (BENCH_THREADS to change it).
THREADS = int(os.environ.get("BENCH_THREADS", "1"))


def set_threads() -> None:
    import torch

    torch.set_num_threads(THREADS)


def machine() -> dict[str, str]:
    """CPU model, the bf16/AMX flags that decide precision, cores, load, torch version, GPU."""
    import torch

    set_threads()
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("?", ""):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": model,
        "flags": " ".join(f"{f}={'yes' if f in flags else 'no'}" for f in wanted),
        "cores": str(cpus),
        "load average (1, 5, 15 min)": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
    }


def side_by_side(runs: dict[str, Callable[[], float]], repeats: int = 3, warmup: bool = True) -> dict[str, float]:
    """Median seconds of each callable, repeats interleaved (a, b, a, b, ...) so load drifts hit both.

    A callable may return its own measured seconds (e.g. an epoch timed inside a fit) or None.
    """
    if warmup:
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            inner = fn()
            times[name].append(inner if isinstance(inner, float) else time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


@dataclass
class Row:
    name: str
    a_label: str
    a: float
    b_label: str
    b: float
    unit: str
    goal: str
    ratio: float
    note: str = ""

    @property
    def met(self) -> str:
        if self.goal.startswith(">="):
            return "yes" if self.ratio >= float(self.goal[2:]) else "NO"
        if self.goal.startswith("<="):
            return "yes" if self.ratio <= float(self.goal[2:]) else "NO"
        return "-"

    def line(self) -> str:
        return (f"| {self.name} | {self.a_label}: {self.a:.4g} {self.unit} | {self.b_label}: {self.b:.4g} {self.unit} "
                f"| **{self.ratio:.2f}** | {self.goal} | {self.met} | {self.note} |")

    def show(self) -> None:
        print(f"{self.name}: {self.a_label} {self.a:.4g} {self.unit}, {self.b_label} {self.b:.4g} {self.unit}, "
              f"ratio {self.ratio:.2f} (goal {self.goal}: {self.met}) {self.note}", flush=True)


def write_jpegs(folder: Path, n: int, height: int, width: int, seed: int = 0, quality: int = 90) -> list[Path]:
    """Photo-like JPEGs (smooth gradients plus noise, so they compress like photos), written once."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        a, b, c = rng.uniform(0.002, 0.02, 3)
        base = np.stack([np.sin(xx * a + i), np.cos(yy * b), np.sin((xx + yy) * c)], axis=2) * 100 + 128
        noise = rng.normal(0, 12, (height // 8, width // 8, 3)).astype(np.float32)
        image = base + cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return paths


def write_class_csv(root: Path, paths: list[Path], classes: int = 2) -> None:
    import pandas as pd

    rows = [(p.name, str(i % classes)) for i, p in enumerate(paths)]
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(root / "train.csv", index=False)
