"""`lightning-cv package`: a folder to upload as a Kaggle dataset, for code competitions (internet off).

    lightning-cv package --ckpt_path runs/cls/cv-…/fold0/checkpoints/best-….ckpt --ckpt_path … --tta flip \\
        --out kaggle-dataset

The folder holds `models/` (the checkpoints, each with the recipe of its fit: image size, layout, classes,
RLE order, decisions), `wheels/` (this project's
wheel and its whole runtime dependency closure at the versions installed here, less torch, torchvision, numpy
and what they require, which every Kaggle image has), `predict.py` and `inference.ipynb`. In the notebook,
`python predict.py --images TEST_DIR --sample_submission FILE --out submission.csv` installs lightning-cv
from wheels/ only when lightning_cv is not importable (`pip install --no-index --find-links wheels`: pip keeps
what the image already has when its version fits), then predicts with the fold ensemble and TTA it was
packaged with: the same code as `lightning-cv ensemble`.
"""

from __future__ import annotations

import email.parser
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

import torch
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import lightning_cv
from lightning_cv.errors import MissingFileError, UserInputError
from lightning_cv.models.tta import TTAMode
from lightning_cv.tasks import get_task, task_names
from lightning_cv.tasks.base import INFERENCE_KEY
from lightning_cv.tasks.checkpoints import DATA_KEY, checkpoint_recipe, init_arguments

# Every Kaggle image has these (CUDA builds on GPU images): they and what they require are never bundled.
PREINSTALLED = ("torch", "torchvision", "numpy")
# Folders of a checkout that no build reads (data, runs, environments, caches), relative to its root: a folder
# of the same name deeper down (lightning_cv/data/, the template's data/) is source.
CHECKOUT_JUNK = frozenset({".git", ".venv", "venv", "build", "dist", "data", "runs", "wandb", ".cache", ".pytest_cache",
                           ".ruff_cache", "bench/work", "site"})
ANYWHERE_JUNK = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc", "*.ckpt", "*.onnx", "*.onnx.data")
CONFIG = "config.yaml"
# What predicting reads of a checkpoint: the weights, the model's and data's recipe (`checkpoints.checkpoint_recipe`).
INFERENCE_KEYS = ("state_dict", "hyper_parameters", "hparams_name", DATA_KEY, "datamodule_hparams_name", INFERENCE_KEY,
                  "pytorch-lightning_version", "epoch", "global_step")

PREDICT = '''"""Predict a competition's test images with the packaged models, offline (written by `lightning-cv package`)."""

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {models}
TTA = {tta!r}

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--images", required=True, help="folder of the test images")
parser.add_argument("--sample_submission", default=None, help="the competition's sample submission")
parser.add_argument("--out", default="submission.csv", help="the submission to write")
args = parser.parse_args()

if importlib.util.find_spec("lightning_cv") is None:
    # No network: pip resolves lightning-cv from the bundled wheels and keeps what is installed when it fits.
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(HERE / "wheels"),
                           "--quiet", "lightning-cv=={version}"])
    importlib.invalidate_caches()

from lightning_cv.cli.main import main  # noqa: E402

CONFIG = [{config}]  # a config only for checkpoints without their recipe
command = ["ensemble", *(str(HERE / "models" / m) for m in MODELS), *(a for c in CONFIG for a in ("--config", str(HERE / "models" / c))),
           "--tta", TTA, "--out", args.out, "--data.predict_dir", args.images]
if args.sample_submission:
    command += ["--sample_submission", args.sample_submission]
main(command)
'''


def notebook(dataset: str) -> dict:
    """One cell: predict.py from the attached dataset, into /kaggle/working/submission.csv."""
    source = (f"# Attach this dataset ({dataset}) and the competition; the internet may stay off.\n"
              f"!python /kaggle/input/{dataset}/predict.py --images /kaggle/input/COMPETITION/test "
              "--sample_submission /kaggle/input/COMPETITION/sample_submission.csv --out /kaggle/working/submission.csv")
    return {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


def inference_checkpoint(source: Path, target: Path) -> None:
    """The checkpoint without what only resuming needs (optimizer and scheduler states, loops): about a
    third of the size for AdamW."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    if "state_dict" not in checkpoint:
        raise UserInputError(f"{source} is not a Lightning checkpoint (no state_dict)")
    torch.save({k: v for k, v in checkpoint.items() if k in INFERENCE_KEYS}, target)


def packaged_config(config: Path, ckpt: Path) -> str:
    """The config the checkpoint was trained with (its run's resolved config.yaml, with every command-line
    override, when it is a run's checkpoint; else --config), with the checkpoint's classes written in, so
    predicting never needs the training labels (a DataModule taking `classes` gets them)."""
    run_config = ckpt.parent.parent / "config.yaml"
    if ckpt.parent.name == "checkpoints" and run_config.is_file():
        config = run_config
    if not config.is_file():
        raise MissingFileError(f"--config: {config} does not exist")
    print(f"config: {config}")
    resolved = yaml.safe_load(config.read_text())
    names = (torch.load(ckpt, map_location="cpu", weights_only=True).get("hyper_parameters") or {}).get("class_names")
    data = resolved.get("data") or {}
    modules = [get_task(n).datamodule for n in task_names()]
    datamodule = next((m for m in modules if str(data.get("class_path", "")).endswith(f".{m.__name__}")), None)
    if names and datamodule is not None and "classes" in init_arguments(datamodule):
        data.setdefault("init_args", {})["classes"] = list(names)
    return yaml.safe_dump(resolved, sort_keys=False)


def checkout_ignore(root: Path, also: Iterable[str] = ()) -> Callable[[str, list[str]], set[str]]:
    """A `copytree` ignore for a checkout: CHECKOUT_JUNK (and `also`, paths relative to `root`) only where they
    are, ANYWHERE_JUNK everywhere."""
    skip = CHECKOUT_JUNK | set(also)

    def ignore(folder: str, names: list[str]) -> set[str]:
        where = Path(folder).relative_to(root)
        return set(ANYWHERE_JUNK(folder, names)) | {n for n in names if (where / n).as_posix() in skip}

    return ignore


def project_wheel(out: Path) -> Path:
    """This project's wheel: built from a copy of the checkout when there is one (setuptools writes build/
    into the tree it builds), else downloaded."""
    source = Path(lightning_cv.__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        target: str | Path = f"lightning-cv=={lightning_cv.__version__}"
        if (source / "pyproject.toml").is_file():
            target = Path(tmp) / "src"
            inside = [out.resolve().relative_to(source).parts[0]] if out.resolve().is_relative_to(source) else []
            shutil.copytree(source, target, ignore=checkout_ignore(source, inside))  # not the package being written
        subprocess.check_call([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                               "--wheel-dir", str(out), str(target)])
    return next(out.glob(f"lightning_cv-{lightning_cv.__version__}-*.whl"))


def requirement_closure(requirements: Iterable[str], wanted_by: str = "lightning-cv") -> dict[str, str]:
    """The installed distributions `requirements` need at run time, recursively: {canonical name: installed
    version}. Markers are evaluated here, with the extras a requirement names (jsonargparse[signatures]) and no
    others; an installed version outside a requirement's range is an error (pip would refuse it in the notebook)."""
    found: dict[str, str] = {}
    # (requirement, who requires it, the extras that one was required with)
    todo = [(Requirement(line), wanted_by, frozenset()) for line in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, parent, parent_extras = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in parent_extras or {""}):
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise UserInputError(f"{req.name}, which {parent} requires, is not installed here: install it (pip install "
                                 f"'{req}', or `make install` after a pyproject change), then package again") from None
        if not req.specifier.contains(dist.version, prereleases=True):
            raise UserInputError(f"{req.name} {dist.version} is installed here but {parent} requires '{req}': install "
                                 "a version that fits (`make install` after a pyproject change), then package again")
        name, extras = canonicalize_name(req.name), frozenset(req.extras)
        found[name] = dist.version
        if (name, extras) not in seen:
            seen.add((name, extras))
            todo += [(Requirement(line), name, extras) for line in dist.requires or []]
    return found


def wheel_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA: pyproject's dependencies (an extra's with its marker)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(archive.read(name).decode()).get_all("Requires-Dist") or []


def dependency_pins(requirements: Iterable[str]) -> list[str]:
    """`name==version` (installed here) of what `requirements` need at run time, less what PREINSTALLED needs."""
    preinstalled = requirement_closure(PREINSTALLED, wanted_by="the Kaggle image")
    needed = requirement_closure(requirements)
    return [f"{name}=={version}" for name, version in sorted(needed.items()) if name not in preinstalled]


def dependency_wheels(wheel: Path, out: Path) -> None:
    """The wheels of the project wheel's `dependency_pins`, for this platform and Python, in one `pip download`
    (needs the package index)."""
    pins = dependency_pins(wheel_requirements(wheel))
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                           "--progress-bar", "off", "--dest", str(out), *pins], capture_output=True, text=True)
    if done.returncode:
        raise UserInputError(download_error(done.stderr))


def download_error(stderr: str) -> str:
    """One line from a failed `pip download`: what failed and what to do."""
    unreachable = re.search(r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
                            r"resolution|Network is unreachable|ProxyError|ConnectTimeout", stderr)
    missing = re.search(r"No matching distribution found for (\S+)", stderr)
    fallback = "or pass --dependencies false and install lightning-cv's dependencies in the notebook"
    if unreachable:
        return (f"could not download the dependency wheels: the package index is unreachable; package where it is "
                f"(or point pip to a mirror: PIP_INDEX_URL / PIP_FIND_LINKS), {fallback}")
    if missing:
        return (f"could not download the dependency wheels: found no wheel of {missing[1]} for this platform and "
                f"Python (pip download --only-binary :all:); install a version that has one (or put a wheel you built "
                f"in a folder named by PIP_FIND_LINKS) and package again, {fallback}")
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    last = errors[-1].removeprefix("ERROR: ") if errors else "pip download failed"
    return f"could not download the dependency wheels ({last}); {fallback}"


def package(
    config: Path | None = None,
    ckpt_path: list[Path] | None = None,
    out: Path = Path("kaggle-dataset"),
    tta: TTAMode = "none",
    dependencies: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a folder to upload as a Kaggle dataset: models/, wheels/, predict.py and inference.ipynb.

    Args:
        config: only for checkpoints without a recipe (not written by `lightning-cv fit`): the config they
            were trained with (a run's own resolved config.yaml is used when the first checkpoint is in a run's
            checkpoints/ folder).
        ckpt_path: the checkpoints to ensemble (repeat the option: one per fold or model); each predicts with
            the recipe of its fit.
        out: the folder to write.
        tta: test-time augmentation predict.py applies: none, hflip, flip, d4.
        dependencies: also bundle the wheels of every package lightning-cv needs at run time, less torch,
            torchvision, numpy and what they require (downloads them).
        overwrite: replace an existing folder.
    """
    out, ckpt_path = Path(out), list(ckpt_path or [])
    missing = [str(c) for c in ckpt_path if not Path(c).is_file()]
    if not ckpt_path or missing:
        raise MissingFileError(f"--ckpt_path: checkpoint {missing[0] if missing else '(none given)'} does not exist")
    without = [str(c) for c in ckpt_path if checkpoint_recipe(c) is None]
    if without and config is None:
        raise UserInputError(f"{without[0]} holds no recipe (not written by `lightning-cv fit`): pass --config, the config "
                             "it was trained with")
    if out.exists() and not overwrite:
        raise UserInputError(f"{out} exists: choose another --out, or pass --overwrite true")
    shutil.rmtree(out, ignore_errors=True)
    (out / "models").mkdir(parents=True)
    names = [f"model{i}-{Path(c).parent.parent.name}-{Path(c).stem}.ckpt" for i, c in enumerate(ckpt_path)]
    for source, name in zip(ckpt_path, names):
        inference_checkpoint(Path(source), out / "models" / name)
    if without:
        (out / "models" / CONFIG).write_text(packaged_config(Path(config), Path(without[0])))
    (out / "wheels").mkdir()
    wheel = project_wheel(out / "wheels")
    if dependencies:
        dependency_wheels(wheel, out / "wheels")
    (out / "predict.py").write_text(PREDICT.format(models=names, tta=tta, config=repr(CONFIG) if without else "",
                                                   version=lightning_cv.__version__))
    (out / "inference.ipynb").write_text(json.dumps(notebook(out.name), indent=1))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    print(f"wrote {out} ({len(names)} models, {len(list((out / 'wheels').glob('*.whl')))} wheels, {size:.0f} MB): upload it "
          f"as a Kaggle dataset, attach it to the notebook and run inference.ipynb's cell")
    return out
