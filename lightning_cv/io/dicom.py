"""DICOM images through pydicom: pixel data in the modality's units (RescaleSlope/Intercept), the
intensity window, MONOCHROME1 inverted, compressed transfer syntaxes through pydicom's decoders
(RLE natively, JPEG / JPEG-LS / JPEG 2000 through pylibjpeg)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lightning_cv.errors import ImageReadError
from lightning_cv.io.intensity import window_to_uint8

DICOM_EXTENSIONS = (".dcm", ".dicom")


def is_dicom(path: str | os.PathLike) -> bool:
    """By the extension, or by the "DICM" marker after the 128-byte preamble (files without one)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _dataset(path: str | os.PathLike, pixels: bool):
    """The file's dataset; without `pixels`, large elements (the pixel data) are left unread."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    try:
        ds = pydicom.dcmread(path, defer_size=None if pixels else 1024)
    except InvalidDicomError:
        # Files written without the 128-byte preamble and file meta (some competitions' exports) still
        # parse when forced; anything else then has no pixel data and is named as not DICOM below.
        ds = _forced(path, pixels)
    except (EOFError, OSError, ValueError) as err:
        raise ImageReadError(f"{path}: not a readable DICOM file ({err})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageReadError(f"{path}: DICOM file has no pixel data")
    return ds


def _forced(path: Path, pixels: bool):
    import pydicom

    try:
        ds = pydicom.dcmread(path, defer_size=None if pixels else 1024, force=True)
    except Exception:  # noqa: BLE001 - forced parsing of a foreign file fails in many ways
        ds = None
    if ds is None or "Rows" not in ds:
        raise ImageReadError(f"{path}: not a DICOM file (no DICM header, no image attributes)")
    if "TransferSyntaxUID" not in ds.file_meta:  # no file meta: the encoding the parser found
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        implicit, _ = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return ds


def dicom_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from the header, without decoding the pixels."""
    ds = _dataset(path, pixels=False)
    return int(ds.Rows), int(ds.Columns)


def _stored_range(ds) -> tuple[float, float]:
    """The range the stored values can take (BitsStored, signed or not), in the modality's units."""
    bits = int(getattr(ds, "BitsStored", 0) or getattr(ds, "BitsAllocated", 16))
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if int(getattr(ds, "PixelRepresentation", 0)) else (0, 2**bits - 1)
    slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return ends[0], ends[1]


def _file_window(ds, path: Path) -> tuple[float, float]:
    """The file's own window (the first WindowCenter / WindowWidth pair) as (low, high)."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        raise ImageReadError(f"{path}: --data.window file, but the file has no WindowCenter/WindowWidth")
    from pydicom.multival import MultiValue

    center, width = (float(v[0] if isinstance(v, MultiValue) else v) for v in (ds.WindowCenter, ds.WindowWidth))
    return center - width / 2, center + width / 2


def _pixels(ds, path: Path) -> np.ndarray:
    """Decoded pixel data (the first frame of a multi-frame file), with the modality LUT applied."""
    from pydicom.pixels import apply_modality_lut

    try:
        array = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom raises RuntimeError/NotImplementedError/ValueError per decoder
        raise ImageReadError(f"{path}: cannot decode DICOM pixel data ({ds.file_meta.TransferSyntaxUID.name}): {err}; "
                             "compressed files need pydicom's decoders: pip install pylibjpeg pylibjpeg-libjpeg "
                             "pylibjpeg-openjpeg") from None
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        array = array[0]
    if array.ndim == 3:  # colour (RGB, or YBR converted to RGB by pydicom): no modality LUT
        return array
    return apply_modality_lut(array, ds).astype(np.float32)


def read_dicom(path: str | os.PathLike, window: str | tuple[float, float] | None = None) -> np.ndarray:
    """HxW (grey) or HxWx3 (colour) uint8. Grey values in the modality's units are mapped to 0-255
    over `window`: (low, high), "file" (the file's own window), "percentile" (0.5-99.5 of the image)
    or None (the range its stored bits can take); MONOCHROME1 (white is low) is inverted."""
    path = Path(path)
    ds = _dataset(path, pixels=True)
    array = _pixels(ds, path)
    if array.ndim == 3:
        return array if array.dtype == np.uint8 else window_to_uint8(array, None)
    if window is None:
        window = _stored_range(ds)
    elif window == "file":
        window = _file_window(ds, path)
    image = window_to_uint8(array, window)
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        image = 255 - image
    return image
