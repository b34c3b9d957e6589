"""`lightning-cv package`: the project wheel holds the whole package, wheels/ holds the runtime dependency
closure less what torch, torchvision and numpy need, and predict.py installs and predicts in a Python that
has only those three (a Kaggle notebook with the internet off)."""

from __future__ import annotations

import os
import subprocess
import time
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from specs import ROOT

import lightning_cv
from lightning_cv.cli import build_cli, main
from lightning_cv.cli.commands.package import (
    PREINSTALLED,
    checkout_ignore,
    dependency_pins,
    dependency_wheels,
    download_error,
    project_wheel,
    requirement_closure,
)
from lightning_cv.data.demos import make_shapes
from lightning_cv.errors import UserInputError

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.num_sanity_val_steps", "0", *QUIET]
JUNK = ("__pycache__",)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return project_wheel(tmp_path_factory.mktemp("wheel"))


def pyproject_requirements() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def test_project_wheel_holds_every_module_and_data_file_of_the_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "lightning_cv"
    source = [p for p in package.rglob("*") if p.is_file() and not set(p.parts) & set(JUNK) and p.suffix != ".pyc"]
    assert {"lightning_cv/data/__init__.py", "lightning_cv/report/report.html.j2"} <= {
        p.relative_to(ROOT).as_posix() for p in source}
    missing = sorted(p.relative_to(ROOT).as_posix() for p in source if p.relative_to(ROOT).as_posix() not in names)
    assert not missing, f"not in the wheel: {missing}"
    assert not {n for n in names if n.startswith("lightning_cv/") and n.endswith(".py")} - {
        p.relative_to(ROOT).as_posix() for p in source}
    # the template and the configs (data-files), the template's own data/ folder included
    share = f"lightning_cv-{lightning_cv.__version__}.data/data/share/lightning-cv/"
    shipped = [p for folder in ("templates/competition", "configs") for p in (ROOT / folder).rglob("*")
               if p.is_file() and not set(p.parts) & set(JUNK)]
    assert [p for p in shipped if p.parent.name == "data"]
    assert not [p for p in shipped if share + p.relative_to(ROOT).as_posix() not in names]
    assert not (ROOT / "build").exists()  # built from a copy


def test_checkout_junk_is_left_out_only_at_the_checkout_root(tmp_path):
    ignore = checkout_ignore(tmp_path, also=["kaggle-dataset"])
    top = ["data", "runs", ".venv", "wandb", "build", "kaggle-dataset", "lightning_cv", "pyproject.toml", "x.ckpt"]
    assert ignore(str(tmp_path), top) == {"data", "runs", ".venv", "wandb", "build", "kaggle-dataset", "x.ckpt"}
    assert ignore(str(tmp_path / "lightning_cv"), ["data", "runs", "tasks", "__pycache__"]) == {"__pycache__"}
    assert ignore(str(tmp_path / "bench"), ["work", "run.py"]) == {"work"}


def test_dependency_pins_are_the_runtime_closure_less_what_torch_needs():
    pins = dict(p.split("==") for p in dependency_pins(pyproject_requirements()))
    for name, version in pins.items():
        assert metadata.version(name) == version
    # direct and indirect requirements, a requirement's extras (jsonargparse[signatures]) followed
    assert {"lightning", "timm", "albumentations", "albucore", "segmentation-models-pytorch", "torchmetrics",
            "jsonargparse", "docstring-parser", "typeshed-client", "pandas",
            "lightning-utilities", "opencv-python-headless"} <= set(pins)
    # what the image has and what it needs; lightning-cv's own extras (dev)
    assert not {"torch", "torchvision", "numpy", "pillow", "jinja2", "typing-extensions", "lightning-cv", "pytest",
                "ruff"} & set(pins)
    # closed: every run-time requirement of a pinned package is pinned or comes with torch
    preinstalled = requirement_closure(PREINSTALLED)
    for name in pins:
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                assert canonicalize_name(req.name) in pins.keys() | preinstalled.keys(), (name, line)


def test_a_pyproject_requirement_not_installed_here_is_one_line(tmp_path):
    with pytest.raises(UserInputError, match="no-such-dependency-xyz, which lightning-cv requires, is not installed"):
        dependency_pins([*pyproject_requirements(), "no-such-dependency-xyz>=1"])
    with pytest.raises(UserInputError, match=r"timm .* is installed here but lightning-cv requires 'timm<1'"):
        dependency_pins(["timm<1"])


@pytest.mark.parametrize("stderr, says", [
    ("WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken "
     "by 'NewConnectionError(...: Failed to establish a new connection: [Errno 101] Network is unreachable')': "
     "/simple/aiohttp/\nERROR: Could not find a version that satisfies the requirement aiohttp==3.14.5 (from "
     "versions: none)\nERROR: No matching distribution found for aiohttp==3.14.5\n", "the package index is unreachable"),
    ("ERROR: Could not find a version that satisfies the requirement cwevals==0.0.1b1 (from versions: none)\n"
     "ERROR: No matching distribution found for cwevals==0.0.1b1\n", "found no wheel of cwevals==0.0.1b1 for this platform"),
    ("ERROR: Could not install requirement x because of an OSError: [Errno 28] No space left on device\n",
     "No space left on device"),
])
def test_download_errors_are_one_line_saying_what_to_do(stderr, says):
    message = download_error(stderr)
    assert says in message and "\n" not in message and "--dependencies false" in message


@pytest.mark.parametrize("index, says", [("http://127.0.0.1:9/simple", "unreachable"), ("file://{empty}", "found no wheel of")])
def test_pip_download_failures_are_user_input_errors(wheel, tmp_path, monkeypatch, index, says):
    """The real pip, against a closed port and an empty index (no configuration files, one retry)."""
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", index.format(empty=tmp_path / "empty"))
    monkeypatch.setenv("PIP_RETRIES", "1")
    with pytest.raises(UserInputError, match=says):
        dependency_wheels(wheel, tmp_path / "wheels")


def clean_python(env: Path) -> Path:
    """A venv where only torch, torchvision, numpy, what they require and pip are importable: their folders and
    dist-info linked from this environment's site-packages (no download)."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    site = next((env / "lib").glob("python3*/site-packages"))
    for name in [*requirement_closure(PREINSTALLED), "pip"]:
        dist = metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")} - {"__pycache__"}
        for top in sorted(tops):
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    return env / "bin" / "python"


def importable(python: Path, names: list[str], env: dict, cwd: Path) -> dict[str, bool]:
    """Which of `names` `python` imports, run from `cwd` (not the checkout, whose lightning_cv/ it would find)."""
    probe = f"import importlib.util; print([importlib.util.find_spec(n) is not None for n in {names!r}])"
    out = subprocess.run([str(python), "-c", probe], env=env, cwd=cwd, check=True, capture_output=True, text=True).stdout
    return dict(zip(names, eval(out)))


@pytest.mark.slow
def test_package_installs_and_predicts_in_a_python_with_only_torch(tmp_path):
    data = tmp_path / "data"
    make_shapes(data, n_train=24, n_test=6, size=(32, 32), seed=4)
    config = ROOT / "configs" / "cls.yaml"
    options = ["--data.data_dir", str(data), "--data.image_size", "32", "--model.backbone", "resnet10t"]
    run = tmp_path / "run"
    build_cli(["fit", "--config", str(config), *options, "--data.batch_size", "8", "--trainer.default_root_dir",
               str(run), *SHORT])
    ckpt = run / "checkpoints" / "last.ckpt"
    (data / "train").rename(tmp_path / "train-elsewhere")  # a notebook has the test images only
    (data / "train.csv").unlink()
    dataset = tmp_path / "dataset"
    main(["package", "--ckpt_path", str(ckpt), "--tta", "flip", "--out", str(dataset)])  # the checkpoint's recipe
    wheels = sorted(p.name for p in (dataset / "wheels").iterdir())
    assert len(wheels) == len(dependency_pins(pyproject_requirements())) + 1
    assert all(w.endswith(".whl") for w in wheels) and not [w for w in wheels if w.startswith(("torch-", "numpy-"))]
    size = sum(p.stat().st_size for p in dataset.rglob("*") if p.is_file()) / 1e6

    python = clean_python(tmp_path / "kaggle-python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PYTHONNOUSERSITE="1")
    probe = ["lightning_cv", "lightning", "timm", "pandas", "albumentations", "torch", "torchvision", "numpy"]
    assert importable(python, probe, env, tmp_path) == {n: n in PREINSTALLED for n in probe}

    sample = data / "sample_submission.csv"
    seconds = []
    for name in ("first", "second"):  # the first installs, the second finds lightning_cv installed
        start = time.perf_counter()
        subprocess.run([str(python), str(dataset / "predict.py"), "--images", str(data / "test"), "--sample_submission",
                        str(sample), "--out", str(tmp_path / name / "submission.csv")], check=True, cwd=tmp_path, env=env)
        seconds.append(time.perf_counter() - start)
    assert importable(python, probe, env, tmp_path) == dict.fromkeys(probe, True)
    print(f"\npackage {size:.0f} MB ({len(wheels)} wheels); predict.py in a clean Python: first run (installing) "
          f"{seconds[0]:.0f} s, second run {seconds[1]:.0f} s")

    main(["ensemble", str(ckpt), "--config", str(config), "--tta", "flip", "--sample_submission", str(sample),
          "--out", str(tmp_path / "local" / "submission.csv"), "--data.predict_dir", str(data / "test"), *options])
    local = (tmp_path / "local" / "submission.csv").read_bytes()
    assert local.count(b"\n") == 7
    assert (tmp_path / "first" / "submission.csv").read_bytes() == local
    assert (tmp_path / "second" / "submission.csv").read_bytes() == local
