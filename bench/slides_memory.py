"""Peak memory and time of `lightning-cv predict` on one large TIFF, against the image's area and its tissue's.

    python bench/slides_memory.py CHECKPOINT [--sides 2048 8192 16384] [--out /tmp/slides-bench]

For each side, a tiled TIFF of that size holding a disc of tissue of a fixed area (2048 x 2048 px) is written
tile by tile (never held whole); the largest side is also written with four times the tissue. Each is
predicted in a fresh process by the checkpoint alone, under /usr/bin/time: peak RSS and wall time. Prints a
Markdown table (bench/results.md, "Large images").
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

from lightning_cv.data.slides import SlideImage

TILE = 256


def _tiles(side: int, radius: float, rng: np.random.Generator):
    """The TILE-px tiles, row by row, of a side x side image of glass with a central disc of tissue."""
    center = side / 2
    for ty in range(0, side, TILE):
        for tx in range(0, side, TILE):
            yy, xx = np.mgrid[ty : ty + TILE, tx : tx + TILE]
            tile = np.full((TILE, TILE, 3), 242, np.uint8)
            tile[(yy - center) ** 2 + (xx - center) ** 2 < radius**2] = (226, 160, 196)
            yield np.clip(tile + rng.normal(0, 6, (TILE, TILE, 1)), 0, 255).astype(np.uint8)


def write_tissue_tiff(path: Path, side: int, tissue_side: int, seed: int = 0) -> None:
    """A pyramidal side x side RGB TIFF (levels 1, 1/4, 1/16, as scanners write them) of glass with a central
    disc of tissue whose area is tissue_side ** 2, written tile by tile."""
    radius = tissue_side / math.sqrt(math.pi)
    rng = np.random.default_rng(seed)
    levels = [side // f for f in (1, 4, 16) if side // f >= TILE]
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"dtype": np.uint8, "tile": (TILE, TILE), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path, bigtiff=side * side * 3 > 2**31) as tif:
        for k, level in enumerate(levels):
            extra = {"subifds": len(levels) - 1} if k == 0 else {"subfiletype": 1}
            tif.write(_tiles(level, radius * level / side, rng), shape=(level, level, 3), **options, **extra)


def predict(checkpoint: str, folder: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of a predict process."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "lightning_cv", "predict", "--ckpt_path", checkpoint,
               "--data.predict_dir", str(folder), "--data.sample_submission", "null", "--trainer.logger", "false",
               "--trainer.default_root_dir", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"predict failed:\n{done.stderr[-3000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return peak / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--sides", type=int, nargs="+", default=[2048, 8192, 16384])
    parser.add_argument("--tissue", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=Path("/tmp/slides-bench"))
    args = parser.parse_args()
    cases = [(side, args.tissue) for side in args.sides] + [(max(args.sides), 2 * args.tissue)]
    print("| image | image area (Mpx) | tissue area (Mpx) | tissue tiles (512 px) | peak RSS (MiB) | predict wall (s) |")
    print("|---|---|---|---|---|---|")
    for side, tissue in cases:
        folder = args.out / f"{side}-{tissue}"
        if not folder.is_dir():
            write_tissue_tiff(folder / f"slide{side}.tiff", side, tissue)
        peak, wall = predict(args.checkpoint, folder, args.out / f"run-{side}-{tissue}")
        tiles = len(SlideImage(folder / f"slide{side}.tiff").tiles(512, 128))  # the shipped config's predict grid
        print(f"| {side}x{side} | {side * side / 1e6:.0f} | {tissue * tissue / 1e6:.1f} | {tiles} | {peak:.0f} | {wall:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
