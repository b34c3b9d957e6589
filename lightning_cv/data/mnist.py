"""MNIST from the four standard IDX files (raw or .gz), downloaded by torchvision when online."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_cv.data.augment import AugmentSpec, Preprocess, build_pipeline, resize
from lightning_cv.data.base import CVDataModule, Rows
from lightning_cv.data.dataset import ArrayReader, ImageDataset
from lightning_cv.data.survey import Reading, Survey
from lightning_cv.io.cache import file_version
from lightning_cv.io.images import DataError, atomic_path

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:  # a truncated or corrupt .gz
        raise DataError(f"{path}: cannot read ({type(err).__name__}: {err}); re-download or re-create it") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=_DTYPES[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated IDX file ({array.size} values for shape {shape})")
    return array.reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with atomic_path(path) as tmp, opener(tmp, "wb") as f:
        f.write(header + array.tobytes())


def find_idx(data_dir: Path, name: str) -> Path | None:
    """The IDX file `name` in data_dir or torchvision's MNIST/raw layout, raw or gzipped."""
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


class MNISTDataModule(CVDataModule):
    """MNIST digits (28x28 grayscale): train/val from the training IDX files, test/predict from t10k.

    Missing files are downloaded with torchvision when `download` is true and the network is there.
    The digits are held in memory; `cache` stores them (resized to image_size) as one array in
    `--data.cache_dir`, memory-mapped ("memmap") or compressed ("npz"), so a run skips the gunzip
    and the resize.
    """

    def __init__(
        self,
        data_dir: str = "data/mnist",
        image_size: int | list[int] = 28,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        download: bool = True,
        **kwargs: Any,
    ):
        # The other standard options (fold, folds_csv, cache, ...) are CVDataModule's (via **kwargs).
        super().__init__(data_dir=data_dir, image_size=image_size, batch_size=batch_size, val_fraction=val_fraction, **kwargs)
        self.download = download
        self._loaded: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def recognize(cls, survey: Survey) -> Reading | None:
        """MNIST's IDX files (gzipped or not)."""
        found = [p for p in survey.files if any(p.name.startswith(name) for name in IDX_FILES.values())]
        if not found:
            return None
        reading = Reading(cls.task_name, 0.95)
        reading.evidence.append(("task", cls.task_name, survey.rel(found[0]), f"{len(found)} IDX files (MNIST)"))
        return reading

    @property
    def class_names(self) -> list[str]:
        return [str(i) for i in range(10)]

    @property
    def in_chans(self) -> int:
        return 1

    def _missing(self) -> list[str]:
        return [name for name in IDX_FILES.values() if find_idx(self.data_dir, name) is None]

    def prepare_data(self) -> None:
        if not self._missing() or not self.download:
            return
        try:
            from torchvision.datasets import MNIST

            MNIST(str(self.data_dir), train=True, download=True)
            MNIST(str(self.data_dir), train=False, download=True)
        except Exception as err:  # noqa: BLE001 - any download failure gets the same advice
            raise DataError(
                f"MNIST IDX files missing in {self.data_dir} ({', '.join(self._missing())}) and the download failed "
                f"({type(err).__name__}). Put the four IDX files (raw or .gz) there, or write the offline digits set "
                f"with `lightning-cv demo --task mnist --out {self.data_dir}`."
            ) from None

    def _load(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        if kind not in self._loaded:
            self._loaded[kind] = self._read(kind)
        return self._loaded[kind]

    def _read(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        missing = self._missing()
        if missing:
            raise DataError(f"{self.data_dir}: missing MNIST file(s) {missing}; run `lightning-cv demo --task mnist --out {self.data_dir}`")
        images = read_idx(find_idx(self.data_dir, IDX_FILES[f"{kind}_images"]))
        labels = read_idx(find_idx(self.data_dir, IDX_FILES[f"{kind}_labels"])).astype(np.int64)
        if len(images) != len(labels):
            raise DataError(f"{self.data_dir}: {len(images)} {kind} images but {len(labels)} labels")
        if images.ndim != 3 or not len(images):
            raise DataError(f"{self.data_dir}: {kind} images have shape {images.shape}, expected N x height x width with N > 0")
        if labels.min() < 0 or labels.max() > 9:
            raise DataError(f"{self.data_dir}: {kind} labels outside 0-9")
        return images, labels

    # -- the setup hooks: rows are indices into the training (or t10k) digits -------------------------------
    def _rows(self, kind: str, labelled: bool = True) -> Rows:
        _, labels = self._load(kind)
        n = len(labels)
        return Rows([str(i) for i in range(n)], list(range(n)), labels if labelled else None, {"kind": [kind] * n})

    def labelled_rows(self) -> Rows:
        return self._rows("train")

    def test_rows(self) -> Rows:
        return self._rows("test")

    def unlabelled_rows(self, directory: Path) -> Rows:
        """`predict` runs on the t10k digits."""
        return self._rows("test", labelled=False)

    def stratify(self, rows: Rows) -> np.ndarray:
        return rows.targets

    def fold_table(self) -> tuple[pd.DataFrame, str, str | None]:
        """The training digits by index, with their label."""
        rows = self.labelled_rows()
        return pd.DataFrame({"id": rows.ids, "label": [str(v) for v in rows.targets]}), "id", "label"

    def build_dataset(self, rows: Rows, augment: AugmentSpec | None) -> ImageDataset:
        kind = rows.extra["kind"][0] if len(rows) else "train"
        images, _ = self._load(kind)
        pre = [] if images.shape[1:3] == self.image_hw else [resize(*self.image_hw)]
        cache = self.array_cache(pre)
        if cache is not None:
            source = find_idx(self.data_dir, IDX_FILES[f"{kind}_images"])
            prepare = Preprocess(pre)
            images = cache.get(str(source.resolve()), file_version(source),
                               lambda: np.stack([prepare(image) for image in images]), mapped=True)
            pre = []
        pipeline = build_pipeline(augment, pre=pre, seed=self.seed)
        return ImageDataset(rows.items, rows.targets, pipeline, rows.ids, ArrayReader(images))
