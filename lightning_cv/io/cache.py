"""A disk cache of decoded, resized images and masks, so epochs after the first skip decoding.

Each entry is one array file under `<cache_dir>/<mode>/`, named by a hash of the source (its
path, or its content for an RLE string) and of the fixed preprocessing (e.g. the resize), with a
second hash of the source's size and mtime: a changed source misses, is decoded again and replaces
its stale entry. "memmap" stores `.npy` files read through a memory map, "npz" compressed `.npz`
files (smaller on disk, slower to read); either way only the arrays of the current batch are in
memory, however large the dataset. Writes are atomic, so DataLoader workers and DDP ranks can fill
the cache at the same time. Augmentations still run per epoch, on the cached arrays. The cache lives
outside the data (`--data.cache_dir`, `$LIGHTNING_CV_CACHE`, else ~/.cache/lightning-cv): competition
inputs are often read-only (a Kaggle notebook's /kaggle/input), and nothing is written into them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lightning_cv.errors import DataError
from lightning_cv.io.images import atomic_path, read_image

CacheMode = Literal["none", "memmap", "npz"]
CACHE_MODES = ("none", "memmap", "npz")


def default_cache_dir() -> Path:
    """$LIGHTNING_CV_CACHE, else ~/.cache/lightning-cv (XDG_CACHE_HOME when set)."""
    if os.environ.get("LIGHTNING_CV_CACHE"):
        return Path(os.environ["LIGHTNING_CV_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lightning-cv"


def _digest(text: str, n: int = 20) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def file_version(path: str | os.PathLike) -> str:
    """What invalidates a file's entry: its size and modification time (nanoseconds)."""
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class ArrayCache:
    """Array files under `root/<mode>/`, one per (source, preprocessing) pair.

    Args:
        root: the cache folder (`--data.cache_dir`).
        mode: "memmap" (.npy, memory-mapped reads) or "npz" (compressed).
        prep: a description of the fixed preprocessing (e.g. the resize transform's repr); part of
            every key, so another image size or interpolation never reads a stale entry.
    """

    def __init__(self, root: str | os.PathLike, mode: CacheMode, prep: str):
        if mode not in ("memmap", "npz"):
            raise ValueError(f"cache mode must be memmap or npz, got {mode!r}")
        self.root = Path(root) / mode
        self.mode = mode
        self.prep = prep
        self.suffix = ".npy" if mode == "memmap" else ".npz"

    def entry(self, name: str, version: str) -> Path:
        """The file for source `name` (a path or content id) at `version` (its size and mtime)."""
        stem = _digest(f"{name}|{self.prep}")
        return self.root / stem[:2] / f"{stem}.{_digest(version, 12)}{self.suffix}"

    def load(self, path: Path, mapped: bool = False) -> np.ndarray:
        if self.mode == "memmap":
            array = np.load(path, mmap_mode="r")
            # A per-sample entry is copied out of the map, which then closes: resident memory stays
            # one sample. A whole-dataset array stays mapped, read page by page.
            return array if mapped else np.array(array)
        with np.load(path) as data:
            return data["array"]

    def save(self, path: Path, array: np.ndarray) -> None:
        for stale in path.parent.glob(f"{path.name.split('.')[0]}.*{self.suffix}"):
            stale.unlink(missing_ok=True)
        with atomic_path(path) as tmp:
            if self.mode == "memmap":
                np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)
            else:
                np.savez_compressed(tmp, array=array)

    def get(self, name: str, version: str, build: Callable[[], np.ndarray], mapped: bool = False) -> np.ndarray:
        """The cached array of (`name`, `version`), built by `build` and stored on a miss; `mapped`
        returns a read-only memory map (memmap mode) instead of a copy."""
        path = self.entry(name, version)
        try:
            return self.load(path, mapped)
        except (FileNotFoundError, ValueError, EOFError, OSError) as err:
            if not isinstance(err, FileNotFoundError) and path.exists():
                path.unlink(missing_ok=True)  # a truncated or foreign file: rebuild it
        array = build()
        try:
            self.save(path, array)
        except OSError as err:
            raise DataError(f"{self.root}: cannot write the cache ({err.strerror}); make the folder writable "
                            "or use --data.cache none") from None
        return self.load(path, mapped) if mapped else array


class CachedReader:
    """A Dataset `reader` (picklable, for DataLoader workers): the file at a path, read by `read`
    and passed through `prepare` once, then read back from the cache."""

    def __init__(self, cache: ArrayCache, prepare: Callable[[np.ndarray], np.ndarray],
                 read: Callable[[Any], np.ndarray] = read_image):
        self.cache, self.prepare, self.read = cache, prepare, read

    def __call__(self, path: str | os.PathLike) -> np.ndarray:
        resolved = os.path.abspath(path)
        version = getattr(self.read, "version", file_version)(resolved)  # per-channel files: each file's
        return self.cache.get(resolved, version, lambda: self.prepare(self.read(path)))


class CachedSource:
    """A cached zero-argument reader (e.g. a segmentation mask): `source()` through `prepare` once.

    `name` identifies the source (a path, or an RLE string's hash); `version` is what invalidates it
    (`file_version` for files, "" for content that is its own identity).
    """

    def __init__(self, cache: ArrayCache, source: Callable[[], np.ndarray], prepare: Callable[[np.ndarray], np.ndarray],
                 name: str, version: str):
        self.cache, self.source, self.prepare, self.name, self.version = cache, source, prepare, name, version

    def __call__(self) -> np.ndarray:
        return self.cache.get(self.name, self.version, lambda: self.prepare(self.source()))


def content_id(*parts: Any) -> str:
    """A name for content that is its own identity (an RLE string and its shape)."""
    return "content:" + _digest("|".join(map(str, parts)), 40)


def describe(transforms: Sequence[Any]) -> str:
    """A key for fixed preprocessing: the transforms' reprs (albumentations prints every argument)."""
    return " + ".join(repr(t) for t in transforms) or "identity"


def check_mode(mode: str) -> CacheMode:
    if mode not in CACHE_MODES:
        raise DataError(f"--data.cache must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]
