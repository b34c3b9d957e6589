"""postprocess.json: decisions a task tunes on out-of-fold predictions (per-class mask threshold and
minimum area, grade cut points ...), saved by `cv`, read by `predict --model.postprocess` and `ensemble`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning_cv.errors import DataError, MissingFileError
from lightning_cv.io.images import atomic_path

POSTPROCESS = "postprocess.json"


def save_decisions(out_dir: str | Path, classes: list[str], decisions: dict[str, Any], scores: dict[str, float]) -> Path:
    """out_dir/postprocess.json: the classes they were tuned for, the decisions, and the scores they reached."""
    path = Path(out_dir) / POSTPROCESS
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"classes": list(classes), "decisions": decisions, "scores": scores}, indent=2))
    return path


def load_decisions(path: str | Path, class_names: list[str] | None = None) -> dict[str, Any]:
    """The decisions of a postprocess.json, checked against the model's classes when given."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: postprocess file not found (`lightning-cv cv` writes {POSTPROCESS})")
    try:
        saved = json.loads(path.read_text())
        decisions = dict(saved["decisions"])
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a {POSTPROCESS} written by `lightning-cv cv` ({err})") from None
    if class_names is not None and saved.get("classes") != list(class_names):
        raise DataError(f"{path}: made for classes {saved.get('classes')}, the model has {list(class_names)}")
    return decisions


def tuned_file(paths: list[Path], name: str) -> Path | None:
    """The file `name` (postprocess.json, thresholds.json) that the first CV run among `paths` tuned, or None."""
    return next((Path(p) / name for p in paths if (Path(p) / name).is_file()), None)


def found_decisions(postprocess: str | Path | None, paths: list[Path]) -> dict[str, Any]:
    """The decisions of `postprocess`, or (none given) of the postprocess.json of a CV run among `paths`."""
    path = Path(postprocess) if postprocess else tuned_file(paths, POSTPROCESS)
    if path is None:
        return {}
    print(f"post-processing: {path}")
    return load_decisions(path)
