"""Reading images and masks, run-length encoding, and atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from lightning_cv.errors import DataError, ImageReadError
from lightning_cv.io.dicom import DICOM_EXTENSIONS, dicom_size, is_dicom, read_dicom
from lightning_cv.io.file_checks import remembered
from lightning_cv.io.intensity import window_to_uint8

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", *DICOM_EXTENSIONS)


__all__ = ["DataError", "ImageReadError", "ImageReader", "read_image", "read_mask", "image_size", "check_image", "atomic_path", "write_image", "write_csv"]


def _decode(path: str | os.PathLike, flags: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    if path.suffix.lower() == ".gif":
        # OpenCV reads GIF only from 4.7 on and not in every build; VideoCapture handles it everywhere.
        cap = cv2.VideoCapture(str(path))
        ok, frame = cap.read()
        cap.release()
        if not ok:
            raise ImageReadError(f"{path}: cannot decode GIF")
        return frame if flags != cv2.IMREAD_GRAYSCALE else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, flags)
    if image is None:
        raise ImageReadError(f"{path}: cannot decode image (corrupt or unsupported format)")
    return image


def read_image(path: str | os.PathLike, channels: int = 3, window: tuple[float, float] | str | None = None) -> np.ndarray:
    """Decode to HxWx3 uint8 RGB: grayscale and RGBA are converted; 16-bit, float and DICOM images are
    mapped to 8 bits over `window` (`intensity.check_window`; default: the bits they use or store).
    With `channels` other than 3, HxWxN: the image's own channels (RGBA kept as 4, a 4-band TIFF's bands,
    RGB order first), or grey for 1; an image with fewer channels is an error naming it."""
    if is_dicom(path):
        image = read_dicom(path, window)
        if image.ndim == 3:
            image = image[..., ::-1]  # to the BGR order of OpenCV's decoders, turned back below
    else:
        image = _decode(path, cv2.IMREAD_UNCHANGED)
        if image.dtype != np.uint8 or window is not None:
            image = window_to_uint8(image, window)
    if channels != 3:
        return _with_channels(image, channels, path)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _with_channels(image: np.ndarray, channels: int, path: str | os.PathLike) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    if channels == 1:
        return image if image.shape[2] == 1 else cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)[..., None]
    if image.shape[2] < channels:
        raise ImageReadError(f"{path}: {image.shape[2]} channel(s), but --data.channels is {channels}")
    image = image[..., :channels].copy()
    image[..., :3] = image[..., 2::-1]  # OpenCV's BGR(A) -> RGB(A)
    return image


class ImageReader:
    """`read_image` with a channel count and an intensity window, picklable for DataLoader workers.

    With `channel_suffixes`, an item is the common stem of one grey file per channel (HPA:
    `<id>_red.png`, `<id>_green.png` ...: suffixes `[_red.png, _green.png, _blue.png, _yellow.png]`),
    stacked in that order into HxWxN.
    """

    def __init__(self, channels: int = 3, window: tuple[float, float] | str | None = None,
                 channel_suffixes: list[str] | None = None):
        self.channels, self.window = channels, window
        self.channel_suffixes = list(channel_suffixes) if channel_suffixes else None

    def files(self, path: str | os.PathLike) -> list[Path]:
        """The file(s) an item is read from."""
        return [Path(f"{path}{s}") for s in self.channel_suffixes] if self.channel_suffixes else [Path(path)]

    def check(self, path: str | os.PathLike) -> tuple[int, int]:
        """`check_image` of each file of an item; per-channel files must share one size."""
        sizes = {check_image(f) for f in self.files(path)}
        if len(sizes) > 1:
            raise ImageReadError(f"{path}: its channel files differ in size ({sorted(sizes)})")
        return sizes.pop()

    def version(self, path: str | os.PathLike) -> str:
        """What invalidates a cached read: each file's size and modification time."""
        stats = [os.stat(f) for f in self.files(path)]
        return ";".join(f"{s.st_size}:{s.st_mtime_ns}" for s in stats)

    def __call__(self, path: str | os.PathLike) -> np.ndarray:
        if not self.channel_suffixes:
            return read_image(path, self.channels, self.window)
        planes = [read_image(f, 1, self.window)[..., 0] for f in self.files(path)]
        if len({p.shape for p in planes}) > 1:
            raise ImageReadError(f"{path}: its channel files differ in size ({sorted({p.shape for p in planes})})")
        return np.stack(planes, axis=-1)

    def __repr__(self) -> str:
        """The cache key's part for how files are read (empty for plain RGB)."""
        parts = [f"channels={self.channels}" if self.channels != 3 else "",
                 f"window={self.window}" if self.window is not None else "",
                 f"channel_suffixes={self.channel_suffixes}" if self.channel_suffixes else ""]
        return " ".join(p for p in parts if p)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Decode a mask to HxW uint8 (pixel value = class index, or 0/255 for binary masks)."""
    mask = _decode(path, cv2.IMREAD_UNCHANGED)
    if mask.ndim == 3:
        mask = mask[..., 0]
    return mask.astype(np.uint8)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file, from its header where possible (no full decode)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if is_dicom(path):
        return dicom_size(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError) as err:
        raise ImageReadError(f"{path}: cannot read image header ({err})") from None
    return height, width


# What a complete file ends with, by the magic bytes it starts with: a cut-off (truncated) file lacks
# it. JPEG may carry a little trailing data after its end-of-image marker, so that is looked for near the end.
_END_MARKERS = {b"\x89PNG": ("PNG", b"IEND\xaeB`\x82", 12), b"\xff\xd8": ("JPEG", b"\xff\xd9", 4096),
                b"GIF8": ("GIF", b";", 16)}


def check_image(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image that exists, is not empty, has a readable header and, for PNG, JPEG
    and GIF, ends as a complete file does: truncation is caught from the header and the last bytes,
    without decoding (other formats: header only; a bad body fails when read, naming the file). Done
    once per CV run (`file_checks`)."""
    return remembered(f"image {os.path.abspath(path)}", [path], lambda: _check_image(Path(path)))


def _check_image(path: Path) -> tuple[int, int]:
    size = image_size(path)
    with open(path, "rb") as f:
        head = f.read(4)
        marker = next((m for magic, m in _END_MARKERS.items() if head.startswith(magic)), None)
        if marker is None:
            return size
        kind, end, window = marker
        f.seek(max(0, path.stat().st_size - window))
        if end not in f.read():
            raise ImageReadError(f"{path}: truncated {kind} (no end marker); re-copy or remove the file")
    return size


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB (or single-channel) uint8 image atomically; the format follows the suffix."""
    path = Path(path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ValueError(f"{path}: cannot encode image as {path.suffix}")
    with atomic_path(path) as tmp:
        buf.tofile(tmp)


def write_csv(frame, path: str | os.PathLike) -> None:
    """Write a pandas DataFrame atomically, without its index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
