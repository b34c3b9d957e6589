"""Input checks done once per CV run: `cv` checks the training files, its fold processes reuse the results.

Every `fit` checks its inputs in `setup` (each image's header and ending, a mask's size and class values,
an RLE's decoding). In `lightning-cv cv` that would be repeated by every fold process and every fold's
predictions, so `cv` checks once, under `remember_checks(cv_dir / CHECKED_FILES)`, and passes the record to
its fold processes in $LIGHTNING_CV_CHECKED_FILES. A check found there is not repeated while each of its
files keeps its size and modification time; anything else is checked as usual.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

CHECKED_FILES = "checked_files.json"  # in a CV run's directory
CHECKED_FILES_ENV = "LIGHTNING_CV_CHECKED_FILES"  # that file, for the fold processes (read only)

Size = tuple[int, int]

_recording: dict[str, list] | None = None  # the record being written (`remember_checks`)
_loaded: dict[str, dict[str, list]] = {}  # records read from $LIGHTNING_CV_CHECKED_FILES, by path


def _stamp(path: str | os.PathLike) -> list[int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _record() -> dict[str, list] | None:
    if _recording is not None:
        return _recording
    path = os.environ.get(CHECKED_FILES_ENV)
    if not path:
        return None
    if path not in _loaded:
        try:
            _loaded[path] = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            _loaded[path] = {}  # no usable record: everything is checked
    return _loaded[path]


def remembered(key: str, files: Sequence[str | os.PathLike], check: Callable[[], Size]) -> Size:
    """`check()` (a check of `files` that returns an image size or raises), or its result from this CV run's
    record when `key` (the check and its files, by absolute path, and anything else it depends on) is there
    with every file unchanged."""
    record = _record()
    if record is None:
        return check()
    stamps = [_stamp(f) for f in files]
    entry = record.get(key)
    if entry is not None and None not in stamps and entry[0] == stamps:
        return tuple(entry[1])  # type: ignore[return-value]
    result = check()
    if record is _recording and None not in stamps:
        record[key] = [stamps, list(result)]
    return result


@contextlib.contextmanager
def remember_checks(path: Path) -> Iterator[None]:
    """Within the block, checks are looked up in and added to the record at `path` (written at the end)."""
    global _recording
    previous = _recording
    try:
        _recording = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        _recording = {}
    try:
        yield
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(_recording, f)
        os.replace(tmp, path)
        _loaded.pop(str(path), None)
    finally:
        _recording = previous
