"""`lightning-cv package`: a folder to upload as a Kaggle dataset, for code competitions (internet off).

    lightning-cv package --config configs/cls.yaml --ckpt_path runs/cls/cv-…/fold0/checkpoints/best-….ckpt \\
        --ckpt_path … --tta flip --out kaggle-dataset

The folder holds `models/` (the checkpoints and the config they predict with), `wheels/` (this project's
wheel and the dependency wheels a Kaggle GPU image lacks; torch is not bundled), `predict.py` and
`inference.ipynb`. In the notebook, `python predict.py --images TEST_DIR --sample_submission FILE --out
submission.csv` installs the wheels only when lightning_cv is not importable (`pip install --no-index`),
then predicts with the fold ensemble and TTA it was packaged with: the same code as `lightning-cv ensemble`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import torch
import yaml

import lightning_cv
from lightning_cv.checkpoints import init_arguments
from lightning_cv.errors import MissingFileError, UserInputError
from lightning_cv.tasks import get_task, task_names
from lightning_cv.tta import TTAMode

# Inference needs these beside torch / torchvision and what a Kaggle GPU image has (numpy, pandas,
# OpenCV, scikit-learn ...): bundled at the versions installed here.
BUNDLED = ("lightning", "lightning-utilities", "torchmetrics", "timm", "segmentation-models-pytorch",
           "albumentations", "albucore", "jsonargparse", "docstring-parser", "typeshed-client", "rich")
CONFIG = "config.yaml"
INFERENCE_KEYS = ("state_dict", "hyper_parameters", "pytorch-lightning_version", "epoch", "global_step")

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

if importlib.util.find_spec("lightning_cv") is None:  # no network: install what the package brought
    wheels = sorted(str(p) for p in (HERE / "wheels").glob("*.whl"))
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", *wheels])

from lightning_cv.cli import main  # noqa: E402

command = ["ensemble", *(str(HERE / "models" / m) for m in MODELS), "--config", str(HERE / "models" / "{config}"),
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


def project_wheel(out: Path) -> None:
    """This project's wheel: built from a copy of the checkout when there is one (setuptools writes build/
    into the tree it builds), else downloaded."""
    source = Path(lightning_cv.__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        target: str | Path = f"lightning-cv=={lightning_cv.__version__}"
        if (source / "pyproject.toml").is_file():
            target = Path(tmp) / "src"
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(
                ".git", ".venv", "build", "runs", "data", "wandb", "*.egg-info", "__pycache__", "*.ckpt"))
        subprocess.check_call([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                               "--wheel-dir", str(out), str(target)])


def dependency_wheels(out: Path) -> None:
    """The BUNDLED packages at their installed versions, as wheels (needs the package index)."""
    pins = [f"{name}=={metadata.version(name)}" for name in BUNDLED]
    try:
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                               "--quiet", "--dest", str(out), *pins])
    except subprocess.CalledProcessError as err:
        raise UserInputError(f"could not download the dependency wheels ({err}); package where the package index is "
                             "reachable, or pass --dependencies false and install them in the notebook") from None


def package(
    config: Path,
    ckpt_path: list[Path],
    out: Path = Path("kaggle-dataset"),
    tta: TTAMode = "none",
    dependencies: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a folder to upload as a Kaggle dataset: models/, wheels/, predict.py and inference.ipynb.

    Args:
        config: the training config of the checkpoints (a run's own resolved config.yaml is used when the
            first checkpoint is in a run's checkpoints/ folder).
        ckpt_path: the checkpoints to ensemble (repeat the option: one per fold or model).
        out: the folder to write.
        tta: test-time augmentation predict.py applies: none, hflip, flip, d4.
        dependencies: also bundle the dependency wheels a Kaggle GPU image lacks (downloads them).
        overwrite: replace an existing folder.
    """
    out, config = Path(out), Path(config)
    missing = [str(c) for c in ckpt_path if not Path(c).is_file()]
    if not ckpt_path or missing:
        raise MissingFileError(f"--ckpt_path: checkpoint {missing[0] if missing else '(none given)'} does not exist")
    if out.exists() and not overwrite:
        raise UserInputError(f"{out} exists: choose another --out, or pass --overwrite true")
    shutil.rmtree(out, ignore_errors=True)
    (out / "models").mkdir(parents=True)
    names = [f"model{i}-{Path(c).parent.parent.name}-{Path(c).stem}.ckpt" for i, c in enumerate(ckpt_path)]
    for source, name in zip(ckpt_path, names):
        inference_checkpoint(Path(source), out / "models" / name)
    (out / "models" / CONFIG).write_text(packaged_config(config, Path(ckpt_path[0])))
    (out / "wheels").mkdir()
    project_wheel(out / "wheels")
    if dependencies:
        dependency_wheels(out / "wheels")
    (out / "predict.py").write_text(PREDICT.format(models=names, tta=tta, config=CONFIG))
    (out / "inference.ipynb").write_text(json.dumps(notebook(out.name), indent=1))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    print(f"wrote {out} ({len(names)} models, {len(list((out / 'wheels').glob('*.whl')))} wheels, {size:.0f} MB): upload it "
          f"as a Kaggle dataset, attach it to the notebook and run inference.ipynb's cell")
    return out
