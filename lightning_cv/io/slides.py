"""Large images (gigapixel slides, HuBMAP-like TIFFs) read by windows, never decoded whole: TIFF and BigTIFF,
tiled or in strips, pyramidal or not, through tifffile's Zarr store (only the tiles a window touches are
decoded); PNG and JPEG, which are small, read whole; .svs, .ndpi and .mrxs through OpenSlide when installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from lightning_cv.errors import DataError, ImageReadError, UserInputError
from lightning_cv.io.images import image_size, read_image
from lightning_cv.io.intensity import window_to_uint8

TIFF_EXTENSIONS = (".tif", ".tiff", ".btf")
OPENSLIDE_EXTENSIONS = (".svs", ".ndpi", ".mrxs")


class Slide:
    """A large image: `size` and `levels` from the header, `read` of any window, `thumbnail` from a pyramid
    level. Pixels come as HxWx3 uint8 RGB, as `read_image` gives them: grey repeated, alpha dropped (more
    bands: the first three), other depths scaled by the bits per sample, or mapped over `window` (low, high),
    which float images need. Picklable for DataLoader workers: the file is opened again on first use."""

    def __init__(self, path: str | os.PathLike, window: tuple[float, float] | None = None):
        self.path, self.window = Path(path), window
        self._source = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_source": None}

    @property
    def _src(self):
        if self._source is None:
            self._source = _open_source(self.path, self.window)
        return self._source

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the full-resolution image, from the header."""
        return self._src.levels[0]

    @property
    def levels(self) -> list[tuple[int, int]]:
        """(height, width) of each pyramid level, full resolution first; one level without a pyramid."""
        return list(self._src.levels)

    def read(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        """The window of full-resolution pixels at (y, x); what falls outside the image is 0."""
        if height < 0 or width < 0:
            raise ValueError(f"{self.path}: a window of {height}x{width} pixels")
        out = np.zeros((height, width, 3), dtype=np.uint8)
        full_h, full_w = self.size
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + height, full_h), min(x + width, full_w)
        if y0 < y1 and x0 < x1:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._src.region(0, slice(y0, y1), slice(x0, x1))
        return out

    def thumbnail(self, max_side: int) -> np.ndarray:
        """The whole image, its longer side shrunk to `max_side` (area interpolation), from the smallest
        pyramid level at least that large; when only full resolution is, from the largest smaller level
        (then the longer side is below `max_side`); without a pyramid, from every n-th full-resolution pixel."""
        if max_side < 1:
            raise ValueError(f"{self.path}: a thumbnail's longer side must be at least 1 pixel, not {max_side}")
        levels = self._src.levels
        reduced = range(1, len(levels))
        large = [i for i in reduced if max(levels[i]) >= max_side]
        if large or (reduced and max(levels[0]) > max_side):
            level = min(large, key=lambda i: max(levels[i])) if large else max(reduced, key=lambda i: max(levels[i]))
            image = self._src.region(level, slice(0, levels[level][0]), slice(0, levels[level][1]))
        else:
            step = max(1, max(levels[0]) // max_side)
            image = self._src.region(0, slice(0, levels[0][0], step), slice(0, levels[0][1], step))
        height, width = image.shape[:2]
        scale = max_side / max(height, width)
        if scale < 1:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return image

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_source(path: Path, window: tuple[float, float] | None):
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in OPENSLIDE_EXTENSIONS:
        try:
            import openslide
        except (ImportError, OSError):
            raise DataError(f"{path}: {suffix} slides are read through OpenSlide: pip install openslide-python openslide-bin") from None
        if window is not None:
            raise UserInputError(f"{path}: OpenSlide reads 8-bit RGB; an intensity window does not apply")
        return _OpenSlideSource(openslide.OpenSlide(str(path)))
    if suffix in TIFF_EXTENSIONS:
        return _TiffSource(path, window)
    return _WholeSource(path, window)


class _TiffSource:
    """The first series of a TIFF (a whole-slide image's baseline and its pyramid), level by level."""

    def __init__(self, path: Path, window: tuple[float, float] | None):
        import tifffile

        try:
            self._tif = tifffile.TiffFile(path)
        except (tifffile.TiffFileError, ValueError) as err:
            raise ImageReadError(f"{path}: cannot read TIFF header ({err})") from None
        series = self._tif.series[0]
        self._axes = _axes_plan(series.axes, series.shape, path)
        y, x = self._axes[:2]
        self.levels = [(int(level.shape[y]), int(level.shape[x])) for level in series.levels]
        self._series, self._path, self._window, self._arrays = series, path, window, None

    def _level(self, level: int):
        if self._arrays is None:
            import zarr
            from tifffile import TIFF

            compression = self._series.keyframe.compression
            try:
                TIFF.DECOMPRESSORS[compression]
            except KeyError:
                raise DataError(f"{self._path}: its {compression.name} tiles need imagecodecs to decode: pip install imagecodecs") from None
            store = zarr.open(self._series.aszarr(), mode="r")
            self._arrays = [store] if hasattr(store, "shape") else [store[str(i)] for i in range(len(self.levels))]
        return self._arrays[level]

    def region(self, level: int, ys: slice, xs: slice) -> np.ndarray:
        array = self._level(level)
        y, x, channel = self._axes
        index = [0] * array.ndim
        index[y], index[x] = ys, xs
        if channel is not None:
            index[channel] = slice(None)
        kept = sorted(a for a in (y, x, channel) if a is not None)
        pixels = array[tuple(index)].transpose([kept.index(a) for a in (y, x, channel) if a is not None])
        return _to_rgb(pixels, self._window, self._series.keyframe.bitspersample, self._path)

    def close(self) -> None:
        self._tif.close()


def _axes_plan(axes: str, shape: tuple[int, ...], path: Path) -> tuple[int, int, int | None]:
    """Where the rows, columns and samples are in tifffile's axes; any other axis is read at 0.
    Without a sample (S) or channel (C) axis, another one of 3 or 4 planes (RGB stored planar) is the colour."""
    if "Y" not in axes or "X" not in axes:
        raise DataError(f"{path}: its first image has axes {axes}, without rows (Y) and columns (X)")
    others = [i for i, a in enumerate(axes) if a not in "YX"]
    channel = next((i for i in others if axes[i] in "SC"), None)
    if channel is None:
        channel = next((i for i in others if shape[i] in (3, 4)), None)
    return axes.index("Y"), axes.index("X"), channel


def _to_rgb(pixels: np.ndarray, window: tuple[float, float] | None, bits: int, path: Path) -> np.ndarray:
    if window is not None:
        pixels = window_to_uint8(pixels, window)
    elif pixels.dtype.kind in "ui" and pixels.dtype != np.uint8:
        pixels = np.clip(pixels.astype(np.float32) * (255 / (2**bits - 1)), 0, 255).round().astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise DataError(f"{path}: {pixels.dtype} pixels need an intensity window: Slide(path, window=(low, high))")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[2] < 3:
        return np.repeat(pixels[..., :1], 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3])


class _WholeSource:
    """A small image (PNG, JPEG ...): decoded whole on first read, by `read_image`."""

    def __init__(self, path: Path, window: tuple[float, float] | None):
        self.levels = [image_size(path)]
        self._path, self._window, self._image = path, window, None

    def region(self, level: int, ys: slice, xs: slice) -> np.ndarray:
        if self._image is None:
            self._image = read_image(self._path, 3, self._window)
        return self._image[ys, xs]

    def close(self) -> None:
        self._image = None


class _OpenSlideSource:
    """A vendor slide through OpenSlide: regions at a level, and its own thumbnail for a strided read."""

    def __init__(self, slide):
        self._slide = slide
        self.levels = [(int(h), int(w)) for w, h in slide.level_dimensions]

    def region(self, level: int, ys: slice, xs: slice) -> np.ndarray:
        height, width = self.levels[level]
        if (ys.step or 1) > 1 or (xs.step or 1) > 1:  # only a whole level is read strided
            image = self._slide.get_thumbnail((len(range(0, width, xs.step)), len(range(0, height, ys.step))))
        else:
            downsample = self._slide.level_downsamples[level]
            location = (round(xs.start * downsample), round(ys.start * downsample))
            image = self._slide.read_region(location, level, (xs.stop - xs.start, ys.stop - ys.start))
        return np.asarray(image.convert("RGB"))

    def close(self) -> None:
        self._slide.close()
