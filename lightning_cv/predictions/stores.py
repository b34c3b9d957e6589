"""Arrays kept on disk a row at a time: how a test set's probability maps stay out of memory.

`RowWriter` appends rows (one batch at a time) to one `.npy` file per array; `DiskRows` reads rows of a
`.npy` file, or of an uncompressed member of an `.npz`, on demand (plain file reads, no memory map, so
what was read is not kept mapped). A `DiskRows` behaves as a read-only array where the prediction code
needs one: `len`, `shape`, `dtype`, indexing, iteration (a few rows read at a time) and `np.asarray`.
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HEADER_BYTES = 256  # a fixed-size .npy (1.0) header, rewritten in place once the row count is known
CHUNK_BYTES = 8 << 20  # rows read together while iterating


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 `.npy` header of exactly HEADER_BYTES for a C-ordered array."""
    text = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)})
    body = text.ljust(HEADER_BYTES - 10 - 1) + "\n"
    if len(body) + 10 != HEADER_BYTES:
        raise ValueError(f"array header too long: {text}")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def chunk_rows(array: Any, itemsize: int | None = None, copies: int = 1) -> int:
    """How many rows of `array` (in memory or on disk) make about CHUNK_BYTES, held `copies` times with
    `itemsize` bytes per value (default: the array's own)."""
    row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * (itemsize or np.dtype(array.dtype).itemsize) * copies
    return max(1, CHUNK_BYTES // max(row_bytes, 1))


def is_map(array: Any) -> bool:
    """An array whose rows are images (probability maps, masks): these stay on disk."""
    return isinstance(array, DiskRows) or (isinstance(array, np.ndarray) and array.ndim >= 3)


class DiskRows:
    """Rows of a C-ordered array stored at `offset` of a file (a `.npy`, or a stored `.npz` member),
    optionally a selection of them (`rows`, file row numbers in this view's order)."""

    def __init__(self, path: str | Path, offset: int, dtype: np.dtype, shape: tuple[int, ...], rows: np.ndarray | None = None):
        self.path, self.offset, self.dtype = Path(path), offset, np.dtype(dtype)
        self.file_shape = tuple(int(s) for s in shape)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    @classmethod
    def open(cls, path: str | Path, member: str | None = None) -> DiskRows:
        """A `.npy` file, or the uncompressed `member` (e.g. "probs.npy") of an `.npz`."""
        path = Path(path)
        start = 0
        if member is not None:
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo(member)
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{path}: {member} is compressed; only stored members are read row by row")
            with open(path, "rb") as handle:
                handle.seek(info.header_offset + 26)
                name_len, extra_len = struct.unpack("<HH", handle.read(4))
            start = info.header_offset + 30 + name_len + extra_len
        with open(path, "rb") as handle:
            handle.seek(start)
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
            if fortran:
                raise ValueError(f"{path}: Fortran-ordered arrays are not read row by row")
            return cls(path, handle.tell(), dtype, shape)

    # -- array-like --------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.file_shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.file_shape)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.file_shape[1:], dtype=np.int64)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def __len__(self) -> int:
        return self.file_shape[0] if self.rows is None else len(self.rows)

    def _file_rows(self, positions: np.ndarray) -> np.ndarray:
        return positions if self.rows is None else self.rows[positions]

    def _positions(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            return np.arange(len(self))[key]
        key = np.asarray(key)
        if key.dtype == bool:
            return np.flatnonzero(key)
        key = key.astype(np.int64)
        return np.where(key < 0, key + len(self), key)

    def take(self, positions: Any) -> DiskRows:
        """A view of some rows (nothing read)."""
        return DiskRows(self.path, self.offset, self.dtype, self.file_shape, self._file_rows(self._positions(positions)))

    def read(self, positions: Any) -> np.ndarray:
        """The rows at these positions, read from disk (consecutive rows in one read)."""
        file_rows = self._file_rows(self._positions(positions))
        out = np.empty((len(file_rows), *self.file_shape[1:]), dtype=self.dtype)
        flat = out.reshape(len(file_rows), -1).view(np.uint8)
        breaks = np.flatnonzero(np.diff(file_rows) != 1) + 1
        with open(self.path, "rb") as handle:
            for run in np.split(np.arange(len(file_rows)), breaks):
                if not len(run):
                    continue
                handle.seek(self.offset + int(file_rows[run[0]]) * self.row_bytes)
                if handle.readinto(flat[run[0]:run[-1] + 1].reshape(-1)) != len(run) * self.row_bytes:
                    raise ValueError(f"{self.path}: truncated array file")
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            row = self.read([key])[0]
            return row[rest] if rest else row
        rows = self.read(key)
        return rows[(slice(None), *rest)] if rest else rows

    def __iter__(self) -> Iterator[np.ndarray]:
        for chunk in array_chunks(self):
            yield from chunk

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.read(slice(None))
        return array if dtype is None else array.astype(dtype)

    def astype(self, dtype: Any) -> np.ndarray:
        """The whole array in memory, as `dtype` (the one place a caller asks for everything at once)."""
        return np.asarray(self, dtype=dtype)

    def __repr__(self) -> str:
        return f"DiskRows({self.path.name}, shape={self.shape}, dtype={self.dtype})"


def take_rows(array: Any, rows: np.ndarray) -> Any:
    """Some rows of an in-memory array or (without reading them) of a DiskRows."""
    return array.take(rows) if isinstance(array, DiskRows) else array[rows]


def array_chunks(array: Any, rows: int | None = None) -> Iterator[np.ndarray]:
    """Blocks of consecutive rows (about CHUNK_BYTES each by default) of an array in memory or on disk
    (read one block at a time)."""
    step = rows or chunk_rows(array)
    for start in range(0, len(array), step):
        yield array[start:start + step]


class RowWriter:
    """One `.npy` file per array under `directory`, rows appended as they come; `close()` writes the
    final row counts into the headers. Arrays of strings (ids) are kept in memory and saved at close."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, Any] = {}
        self._layout: dict[str, tuple[np.dtype, tuple[int, ...], int]] = {}
        self._lists: dict[str, list] = {}

    def append(self, name: str, rows: Any) -> None:
        if isinstance(rows, np.ndarray) and rows.dtype.kind in "USO":
            rows = rows.tolist()  # strings of any length: kept as a list
        if isinstance(rows, (list, tuple)) and (not rows or not isinstance(rows[0], np.ndarray)):
            self._lists.setdefault(name, []).extend(rows)
            return
        rows = np.ascontiguousarray(rows)
        if name not in self._files:
            self._files[name] = open(self.directory / f"{name}.npy", "wb")
            self._files[name].write(npy_header(rows.dtype, (0, *rows.shape[1:])))
            self._layout[name] = (rows.dtype, rows.shape[1:], 0)
        dtype, row_shape, count = self._layout[name]
        if rows.shape[1:] != row_shape or rows.dtype != dtype:
            raise ValueError(f"{name}: rows of shape {rows.shape[1:]} {rows.dtype} after {row_shape} {dtype}")
        self._files[name].write(rows.tobytes())
        self._layout[name] = (dtype, row_shape, count + len(rows))

    def close(self) -> dict[str, Any]:
        """Finish every file; returns the arrays by name (DiskRows, and the string lists as arrays)."""
        arrays: dict[str, Any] = {}
        for name, handle in self._files.items():
            dtype, row_shape, count = self._layout[name]
            handle.seek(0)
            handle.write(npy_header(dtype, (count, *row_shape)))
            handle.close()
            arrays[name] = DiskRows(self.directory / f"{name}.npy", HEADER_BYTES, dtype, (count, *row_shape))
        self._files = {}
        for name, values in self._lists.items():
            values = np.asarray(values)
            np.save(self.directory / f"{name}.npy", values, allow_pickle=False)
            arrays[name] = values
        return arrays


@contextlib.contextmanager
def scratch_dir(parent: str | Path, name: str) -> Iterator[Path]:
    """A new directory `.<name>-<random>` in `parent` (made if missing) for rows on their way to a file
    there, removed after the block: this process's own, so processes writing beside each other (cluster
    jobs) never share one."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def read_rows(directory: str | Path) -> dict[str, Any]:
    """The arrays a closed RowWriter left in `directory`: numeric ones as DiskRows, strings in memory."""
    arrays: dict[str, Any] = {}
    for path in sorted(Path(directory).glob("*.npy")):
        rows = DiskRows.open(path)
        arrays[path.stem] = np.load(path, allow_pickle=False) if rows.dtype.kind in "US" else rows
    return arrays


def gather_rows(parts: Sequence[Any], part: np.ndarray, row: np.ndarray, writer: RowWriter | None = None,
                name: str = "rows", fill: float = np.nan) -> Any:
    """Rows of several arrays as one, in order: row i is `parts[part[i]][row[i]]` (part -1: `fill`, NaN for
    floats, else 0). With a writer, the rows are appended to it a chunk at a time (for maps; returns None);
    else they are returned in memory. Float rows keep their dtype (float16 stays float16)."""
    first = parts[0]
    dtype = np.dtype(first.dtype)
    fill = fill if dtype.kind in "fc" else 0
    row_shape = tuple(first.shape[1:])
    step = max(1, len(part)) if writer is None else chunk_rows(first)
    blocks = []
    for start in range(0, max(len(part), 1), step):
        p, r = part[start:start + step], row[start:start + step]
        block = np.full((len(p), *row_shape), fill, dtype=dtype)
        for k in np.unique(p[p >= 0]):
            chosen = p == k
            source = parts[k]
            block[chosen] = source.read(r[chosen]) if isinstance(source, DiskRows) else np.asarray(source)[r[chosen]]
        if writer is None:
            blocks.append(block)
        else:
            writer.append(name, block)
    return None if writer is not None else np.concatenate(blocks) if blocks else np.empty((0, *row_shape), dtype)
