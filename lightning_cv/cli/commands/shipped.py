"""Where the shipped configs and the competition template are: beside the package in a checkout (or an
editable install), else under <prefix>/share/lightning-cv, where a wheel installs them."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning_cv
from lightning_cv.errors import UserInputError

TEMPLATE = Path("templates") / "competition"


def _shipped(relative: Path, marker: str) -> Path:
    """A folder next to the package (source checkout, editable install), else the copy a wheel installs
    under <prefix>/share/lightning-cv (pyproject.toml's data-files)."""
    package = Path(lightning_cv.__file__).resolve().parent
    candidates = (package.parent / relative, Path(sys.prefix) / "share" / "lightning-cv" / relative)
    for candidate in candidates:
        if (candidate / marker).is_file():
            return candidate
    raise UserInputError(f"{relative} not found (looked in {', '.join(map(str, candidates))})")


def template_dir() -> Path:
    return _shipped(TEMPLATE, "cookiecutter.json")


def shipped_config(task: str) -> Path:
    """The task's own config (configs/<task>.yaml), the one `make train TASK=<task>` runs."""
    return _shipped(Path("configs"), f"{task}.yaml") / f"{task}.yaml"
