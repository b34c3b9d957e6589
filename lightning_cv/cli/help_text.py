"""A command's `--help`, kept between runs.

`lightning-cv fit --help` is built from the Trainer's and every task's signatures, so it imports torch,
Lightning and each task (about 5 s on 2 cores). The text is saved under `<cache>/help/` by a key of the
command line and program name, the package's source files (path, size, mtime), every directory of
`sys.path` (pip changes them when it installs, upgrades or removes a package), the Python and the
terminal width; the next `--help` with the same key is printed from there (about 0.2 s), and any change
builds it afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def help_key(argv: Sequence[str]) -> str:
    """What the help text depends on, hashed."""
    digest = hashlib.sha256(json.dumps([list(argv), Path(sys.argv[0]).name, sys.version, sys.executable,
                                        shutil.get_terminal_size().columns]).encode())
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix in (".py", ".yaml", ".j2"):
            stat = path.stat()
            digest.update(f"{path.relative_to(PACKAGE)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for entry in sys.path:
        with contextlib.suppress(OSError):
            digest.update(f"{entry}:{os.stat(entry or '.').st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def print_help(argv: Sequence[str], build: Callable[[], None]) -> None:
    """Print the help `build()` prints (it ends with SystemExit(0), as argparse's --help does), from the
    saved text when its key matches; a fresh text is saved for the next time."""
    from lightning_cv.io.cache import default_cache_dir  # the data cache's folder ($LIGHTNING_CV_CACHE ...)
    from lightning_cv.io.images import atomic_path

    path = default_cache_dir() / "help" / f"{argv[0]}-{help_key(argv)}.txt"
    if path.is_file():
        sys.stdout.write(path.read_text(encoding="utf-8"))
        return
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            build()
    except SystemExit as done:
        if done.code:
            sys.stdout.write(buffer.getvalue())
            raise
    text = buffer.getvalue()
    sys.stdout.write(text)
    with contextlib.suppress(OSError):  # a read-only home: the help is still printed
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f"{argv[0]}-*.txt"):
            stale.unlink()
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
