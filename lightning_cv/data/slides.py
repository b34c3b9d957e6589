"""Segmentation of large images (gigapixel slides, satellite scenes) by tiles: training samples are tiles cut
at native resolution (or a downscale) from windows of each image, a share of them around the foreground,
the rest on tissue (blank background skipped); validation and prediction walk each image's tile grid in row
order, so the task stitches its output band by band. No image or mask is ever read whole: images by windows
(`io.slides.Slide`), masks from their run-length encoding (`io.masks.RLERuns`)."""

from __future__ import annotations

from collections import Counter, deque
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, DistributedSampler

from lightning_cv.data.augment import build_pipeline
from lightning_cv.data.base import Rows, list_images
from lightning_cv.data.segmentation import LARGE, STRIDE, SegmentationDataModule
from lightning_cv.data.survey import Reading, Survey
from lightning_cv.errors import DataError, UserInputError
from lightning_cv.io.cache import ArrayCache, file_version
from lightning_cv.io.masks import RLERuns
from lightning_cv.io.slides import Slide
from lightning_cv.io.tiles import tile_grid, tissue_mask, tissue_tiles

# The longer side of the thumbnail the tissue test runs on.
TISSUE_SIDE = 1024


class SlideImage:
    """One large image with what tiling needs: its windows at a downscale, its size, and (from a thumbnail,
    computed once) the corners of the tiles that hold tissue. With a `cache`, windows are decoded once and
    read back from it (the inference grid's tiles, which every validation epoch reads again; never the whole
    image). `tissues` (tissue masks by path) lets the images of one file share a thumbnail's reading.
    Picklable for DataLoader workers."""

    def __init__(self, path: Path, scale: float = 1.0, cache: ArrayCache | None = None,
                 tissues: dict[str, np.ndarray] | None = None):
        self.slide, self.scale, self.cache = Slide(path), scale, cache
        self._tissues = {} if tissues is None else tissues

    @cached_property
    def size(self) -> tuple[int, int]:
        return self.slide.size

    def tissue(self) -> np.ndarray:
        """HxW bool tissue mask of the thumbnail (every pixel when the rule finds none: a slide of tissue only)."""
        key = str(self.slide.path)
        if key not in self._tissues:
            mask = tissue_mask(self.slide.thumbnail(TISSUE_SIDE))
            self._tissues[key] = mask if mask.any() else np.ones_like(mask)
        return self._tissues[key]

    def tiles(self, native: int, overlap: int = 0, min_share: float = 0.0) -> np.ndarray:
        """Corners (y, x) of the grid's tiles that hold tissue (in a share above `min_share`: else any tissue);
        the first one when none does."""
        found = tissue_tiles(self.tissue(), self.size, native, overlap, min_share)
        if min_share and not len(found):
            found = tissue_tiles(self.tissue(), self.size, native, overlap)
        return found if len(found) else tile_grid(self.size, native, overlap)[:1]

    def read(self, y: int, x: int, native: int, tile: int) -> np.ndarray:
        """The native-pixel window at (y, x), shrunk to `tile` pixels when the scale asks for it."""
        if self.cache is not None:
            path = self.slide.path
            return self.cache.get(f"{path.resolve()} window {y} {x} {native} {tile}", file_version(path),
                                  lambda: self._read(y, x, native, tile))
        return self._read(y, x, native, tile)

    def _read(self, y: int, x: int, native: int, tile: int) -> np.ndarray:
        image = self.slide.read(y, x, native, native)
        return image if native == tile else cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA)


def native_side(tile: int, scale: float) -> int:
    return int(round(tile * scale))


class SlideTiles(Dataset):
    """Training tiles: `per_image` per image and epoch, each centred near a random foreground pixel with
    probability `positive` (an image without foreground: never), else on a random tile at least half tissue,
    shifted by up to a quarter of a tile (so it keeps some tissue). Samples as segmentation's: `{"image", "target", "id", "index", "size", "valid"}`.
    Positions come from numpy's global generator, which `seed_everything` and the worker seeding set."""

    def __init__(self, images: list[SlideImage], masks: list[RLERuns], ids: list[str], tile: int, per_image: int,
                 positive: float, transform: Any):
        self.images, self.masks, self.ids, self.tile = images, masks, ids, tile
        self.per_image, self.positive, self.transform = per_image, positive, transform
        self.positions: deque[str] = deque(maxlen=4096)  # "positive" / "tissue" of the last tiles drawn

    def __len__(self) -> int:
        return len(self.images) * self.per_image

    def corner(self, index: int, rng: np.random.Generator) -> tuple[int, int, str]:
        image, mask = self.images[index], self.masks[index]
        native = native_side(self.tile, image.scale)
        height, width = image.size
        if mask.pixels and rng.random() < self.positive:
            cy, cx = mask.sample(rng)
            y, x, kind = cy - int(rng.integers(native // 4, native - native // 4 + 1)), cx - int(rng.integers(native // 4, native - native // 4 + 1)), "positive"
        else:
            corners = image.tiles(native, min_share=0.5)
            y, x = corners[rng.integers(len(corners))] + rng.integers(-(native // 4), native // 4 + 1, size=2)
            kind = "tissue"
        return int(np.clip(y, 0, max(height - native, 0))), int(np.clip(x, 0, max(width - native, 0))), kind

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = i // self.per_image
        rng = np.random.default_rng(np.random.randint(2**31))
        y, x, kind = self.corner(index, rng)
        self.positions.append(kind)
        image = self.images[index]
        native = native_side(self.tile, image.scale)
        mask = self.masks[index].window(y, x, native, native)
        if native != self.tile:
            mask = cv2.resize(mask, (self.tile, self.tile), interpolation=cv2.INTER_NEAREST)
        out = self.transform(image=image.read(y, x, native, self.tile), mask=mask)
        return {"image": out["image"], "target": out["mask"].long(), "id": self.ids[index], "index": index,
                "size": torch.tensor(image.size), "valid": torch.tensor((self.tile, self.tile))}


class SlideGrid(Dataset):
    """Every image's tissue tiles on its inference grid (`arrange`), image after image, row by row, as the
    task's stitcher takes them: `{"image", "id", "index", "pos" (y, x) native, "size", "native" (tile side
    and overlap, native pixels), "last"}`, and for labelled images `"target"` (the native window of the mask)
    and `"truth"` (the mask's pixel count, blank tiles included)."""

    def __init__(self, images: list[SlideImage], masks: list[RLERuns] | None, ids: list[str], tile: int, transform: Any):
        self.images, self.masks, self.ids, self.transform = images, masks, ids, transform
        self.arrange(tile, 0.25)

    def arrange(self, tile: int, overlap: float) -> None:
        """Tiles of `tile` model pixels overlapping by the share `overlap`."""
        if tile % STRIDE:
            raise UserInputError(f"inference tiles of {tile} px: give a multiple of {STRIDE} (the encoders' stride)")
        self.tile, self.overlap = tile, overlap
        self.entries: list[tuple[int, int, int, bool]] = []
        for index, image in enumerate(self.images):
            native = native_side(tile, image.scale)
            corners = image.tiles(native, int(round(overlap * native)))
            self.entries += [(index, int(y), int(x), k == len(corners) - 1) for k, (y, x) in enumerate(corners)]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index, y, x, last = self.entries[i]
        image = self.images[index]
        native = native_side(self.tile, image.scale)
        sample = {"image": self.transform(image=image.read(y, x, native, self.tile))["image"], "id": self.ids[index],
                  "index": index, "pos": torch.tensor((y, x)), "size": torch.tensor(image.size),
                  "native": torch.tensor((native, int(round(self.overlap * native)))), "last": last}
        if self.masks is not None:
            sample["target"] = torch.from_numpy(self.masks[index].window(y, x, native, native))
            sample["truth"] = self.masks[index].pixels
        return sample

    @property
    def slides_of_entries(self) -> np.ndarray:
        return np.array([entry[0] for entry in self.entries], dtype=np.int64)


class SlideSampler(DistributedSampler):
    """Under DDP, each rank predicts whole images (image k on rank k mod world size), their tiles in order,
    so that every image is stitched on one rank."""

    def __init__(self, dataset: SlideGrid, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.indices = np.flatnonzero(dataset.slides_of_entries % num_replicas == rank).tolist()

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SlideSegmentationDataModule(SegmentationDataModule):
    """Large images (TIFF/BigTIFF, tiled and pyramidal or not; PNG/JPEG too) with binary masks run-length
    encoded in `rle_csv` (HuBMAP: `id,encoding`, column-major), learnt from tiles.

    `image_size` is the side of the tiles the model sees; each is cut from a window of `image_size *
    tile_scale` native pixels. Validation and prediction tile every image on the task's grid
    (`--model.val_tile_size`, `--model.tile_size`) and skip the tiles without tissue.

    Args:
        tiles_per_image: training tiles drawn from each image per epoch.
        tile_scale: native pixels per model pixel (2: tiles cut from windows twice as large, shrunk by half).
        tile_positive: share of the training tiles placed around the foreground (the rest: on tissue).
        **kwargs: segmentation's options (rle_csv, id_col, rle_col, rle_order ...) and the standard ones.
    """

    def __init__(
        self,
        data_dir: str = "data/slides",
        image_size: int = 128,
        batch_size: int = 16,
        image_dir: str = "train",
        rle_csv: str | None = "train.csv",
        id_col: str = "id",
        rle_col: str = "encoding",
        rle_order: Literal["C", "F"] = "F",
        tiles_per_image: int = 64,
        tile_scale: float = 1.0,
        tile_positive: float = 0.5,
        **kwargs: Any,
    ):
        super().__init__(data_dir=data_dir, image_size=image_size, batch_size=batch_size, image_dir=image_dir,
                         rle_csv=rle_csv, id_col=id_col, rle_col=rle_col, rle_order=rle_order, **kwargs)
        if self.image_hw[0] != self.image_hw[1] or self.image_hw[0] % STRIDE:
            raise UserInputError(f"--data.image_size {image_size}: tiles are squares, a multiple of {STRIDE} pixels")
        if self.rle_csv is None:
            raise UserInputError("large images read their masks from a run-length encoded table: --data.rle_csv")
        if tiles_per_image < 1 or tile_scale <= 0 or not 0 <= tile_positive <= 1:
            raise UserInputError(f"--data.tiles_per_image {tiles_per_image} (>= 1), --data.tile_scale {tile_scale} (> 0), "
                                 f"--data.tile_positive {tile_positive} (0 to 1)")
        self.tiles_per_image, self.tile_scale, self.tile_positive = tiles_per_image, tile_scale, tile_positive
        self.tile = self.image_hw[0]
        self.grid: tuple[int, float] | None = None  # the inference tiles (model pixels, overlap), set by the task
        self._tissues: dict[str, np.ndarray] = {}  # each image's tissue mask, read once for every dataset

    @classmethod
    def recognize(cls, survey: Survey) -> Reading | None:
        """Segmentation's layout of binary masks in an RLE table (HuBMAP's `id,encoding`): surer than segmentation
        when the images are large (a side above LARGE pixels), less sure otherwise (`init --task slides` picks it)."""
        reading = super().recognize.__func__(cls, survey)
        if reading is None or "rle_csv" not in reading.data:
            return None
        folder = reading.data.get("image_dir", "train")
        sizes = survey.sizes(folder) if folder in survey.folders else []
        large = bool(sizes) and max(max(size) for size in sizes) > LARGE
        reading.score = 0.9 if large else 0.6
        (height, width), _ = Counter(sizes).most_common(1)[0] if sizes else ((0, 0), 0)
        reading.evidence = [e for e in reading.evidence if e[0] != "data.image_size"]
        reading.data.pop("image_size", None)
        reading.evidence.insert(0, ("task", cls.task_name, f"{folder}/", f"images of {height}x{width} px: "
                                    + ("learnt from tiles, predicted tile by tile" if large else "small enough to resize whole")))
        for option, default in (("rle_col", "rle_mask"), ("rle_order", "C")):
            if option not in reading.data and option not in reading.questions:
                reading.set(option, default, str(reading.data["rle_csv"]), "segmentation's default, said for large images")
        return reading

    @property
    def class_names(self) -> list[str]:
        return list(self.classes) if self.classes else ["background", "foreground"]

    def _check(self, image: Path, source: Path | str) -> tuple[int, int]:
        """Size from the header; the runs must fall inside it."""
        size = Slide(image).size
        try:
            RLERuns(source, size, self.rle_order)
        except ValueError as err:
            raise DataError(f"{self.rle_csv}: {self.id_col} {image.stem!r}: {err} (image {image.name})") from None
        return size

    def unlabelled_rows(self, directory: Path) -> Rows:
        paths = list_images(directory, None, "--data.predict_dir")
        return Rows([p.stem for p in paths], paths, None, {"size": [Slide(p).size for p in paths]})

    def _images(self, rows: Rows, cached: bool = False) -> list[SlideImage]:
        cache = self.array_cache(["slide windows"]) if cached else None
        return [SlideImage(path, self.tile_scale, cache, self._tissues) for path in rows.items]

    def _masks(self, rows: Rows) -> list[RLERuns] | None:
        sources = rows.extra.get("source")
        return None if sources is None else [RLERuns(s, size, self.rle_order) for s, size in zip(sources, rows.extra["size"])]

    def build_dataset(self, rows: Rows, augment: Any, crop: Any = None) -> SlideGrid:
        tile, _ = self.grid or (self.tile, 0.25)
        return SlideGrid(self._images(rows, cached=True), self._masks(rows), rows.ids, tile, build_pipeline(None))

    def train_dataset(self, rows: Rows) -> SlideTiles:
        pipeline = build_pipeline(self.train_augment, seed=self.seed)
        return SlideTiles(self._images(rows), self._masks(rows), rows.ids, self.tile, self.tiles_per_image,
                          self.tile_positive, pipeline)

    def arrange(self, tile: int, overlap: float) -> None:
        """The inference tiles (model pixels) of validation, test and prediction, from the task."""
        self.grid = (tile, overlap)
        for split, dataset in self.datasets.items():
            if split != "train":
                dataset.arrange(tile, overlap)

    def report_images(self, rows: Rows) -> list[np.ndarray]:
        """Thumbnails (512 px on the longer side) of the whole images."""
        return [image.slide.thumbnail(512) for image in self._images(rows)]

    def eval_sampler(self, dataset: Dataset, world_size: int, rank: int) -> DistributedSampler:
        return SlideSampler(dataset, world_size, rank)

    def targets(self, split: str, ids: Any = None) -> np.ndarray | None:
        """Each image's mask pixel count, (N, 1): what the task's pixel counts are scored against."""
        dataset = self.datasets[split]
        if dataset.masks is None:
            return None
        counts = {i: m.pixels for i, m in zip(dataset.ids, dataset.masks)}
        return np.array([[counts[str(i)]] for i in (dataset.ids if ids is None else ids)], dtype=np.int64)


# The slides demo (HuBMAP-like): sizes of the training and test slides, glomeruli per megapixel of tissue.
SLIDES_DEMO = {"n_train": 6, "n_test": 2, "train_size": (2048, 2048), "test_size": (2048, 3072), "per_mpx": 12}


def _tissue(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A few overlapping ellipses of tissue on the glass."""
    mask = np.zeros((height, width), np.uint8)
    for _ in range(rng.integers(2, 4)):
        center = (int(rng.integers(width // 4, 3 * width // 4)), int(rng.integers(height // 4, 3 * height // 4)))
        axes = (int(rng.integers(width // 6, width // 3)), int(rng.integers(height // 6, height // 3)))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask


def render_slide(rng: np.random.Generator, height: int, width: int, per_mpx: float) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, 0/1 mask) of a kidney-like slide: pink tissue dotted with dark nuclei on white glass, and
    round glomeruli (14-22 px radius, darker, ringed by a pale capsule, nuclei inside) as the foreground."""
    tissue = _tissue(rng, height, width)
    image = np.full((height, width, 3), 242, np.uint8)
    image[tissue > 0] = (226, 160, 196)
    mask = np.zeros((height, width), np.uint8)
    inside = np.argwhere(cv2.erode(tissue, np.ones((41, 41), np.uint8)) > 0)
    count = int(per_mpx * tissue.sum() / 1e6)
    for y, x in inside[rng.choice(len(inside), size=min(count, len(inside)), replace=False)] if len(inside) else []:
        radius = int(rng.integers(14, 23))
        cv2.circle(image, (int(x), int(y)), radius + 3, (238, 222, 232), -1)
        cv2.circle(image, (int(x), int(y)), radius, (186, 104, 168), -1)
        cv2.circle(mask, (int(x), int(y)), radius + 3, 1, -1)
    nuclei = np.argwhere(tissue > 0)
    for y, x in nuclei[rng.choice(len(nuclei), size=len(nuclei) // 500, replace=False)]:
        cv2.circle(image, (int(x), int(y)), int(rng.integers(2, 4)), (92, 48, 120), -1)
    noise = rng.normal(0, 6, size=(height, width, 1))
    return np.clip(image + noise, 0, 255).astype(np.uint8), mask


def write_slide(path: Path, image: np.ndarray) -> None:
    """A tiled, zlib-compressed pyramidal TIFF (full resolution and a 4x smaller level), as scanners write."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"tile": (256, 256), "compression": "zlib", "photometric": "rgb"}
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        tif.write(image, subifds=1, **options)
        tif.write(np.ascontiguousarray(image[::4, ::4]), subfiletype=1, **options)


def make_slides(out: Path, seed: int = 0, n_train: int | None = None, n_test: int | None = None,
                train_size: tuple[int, int] | None = None, test_size: tuple[int, int] | None = None,
                per_mpx: float | None = None) -> None:
    """The kidney competition (HuBMAP-like): train/<id>.tiff + train.csv `id,encoding` (column-major RLE),
    test/<id>.tiff + sample_submission.csv `id,predicted` (empty), and the test masks in solution.csv."""
    from rich.progress import track

    from lightning_cv.io.images import write_csv
    from lightning_cv.io.masks import rle_encode

    rng = np.random.default_rng(seed)
    n_train, n_test = n_train or SLIDES_DEMO["n_train"], SLIDES_DEMO["n_test"] if n_test is None else n_test
    for split, n, size in (("train", n_train, train_size or SLIDES_DEMO["train_size"]),
                           ("test", n_test, test_size or SLIDES_DEMO["test_size"])):
        rows = []
        for i in track(range(n), description=f"demo {split} slides", transient=True):
            image, mask = render_slide(rng, *size, per_mpx or SLIDES_DEMO["per_mpx"])
            name = f"{split}{i:02d}"
            write_slide(out / split / f"{name}.tiff", image)
            rows.append((name, rle_encode(mask, "F")))
        frame = pd.DataFrame(rows, columns=["id", "encoding" if split == "train" else "predicted"])
        write_csv(frame, out / ("train.csv" if split == "train" else "solution.csv"))
        if split == "test":
            write_csv(frame.assign(predicted=""), out / "sample_submission.csv")
