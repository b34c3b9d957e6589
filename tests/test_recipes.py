"""The recipe pages run: each page's runnable blocks (```bash blocks whose first line is `# recipe`) go from a
small replica of the competition's files (`layouts.LAYOUTS`, by the page's `data/<name>` folders) to a scored
submission, command by command, in a temporary working directory, so the guide cannot drift from the code.

Commands run as written, with tiny models and one short epoch appended to `fit` and `cv` (`SHRINK`; `cv` on 2
folds), the package's wheels left out, and each `<placeholder>` (or `…`) of a path resolved to the newest file that
matches it (`runs/x/checkpoints/best-<epoch>.ckpt`, `runs/x/predict-<timestamp>/submission.csv`).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from layouts import LAYOUTS
from specs import ROOT

from lightning_cv.cli import main

PAGES = ROOT / "docs" / "recipes"
MARK = "# recipe"
# One short epoch of a tiny model at a small size: what each config's fit and cv commands get appended.
TRAINER = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
           "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
           "--trainer.enable_model_summary", "false"]
SMALL_CNN = ["--model.backbone", "resnet10t", "--data.image_size", "32", "--data.batch_size", "8"]
SHRINK = {
    "seg.yaml": ["--model.encoder", "tu-test_resnet", "--data.image_size", "32", "--data.batch_size", "8"],
    "seg-multilabel.yaml": ["--model.encoder", "tu-test_resnet", "--data.image_size", "[32, 64]", "--data.batch_size", "4"],
    "bbox.yaml": ["--model.backbone", "test_resnet", "--data.image_size", "32", "--data.batch_size", "8"],
    "slides.yaml": ["--model.encoder", "tu-test_resnet", "--data.image_size", "64", "--data.batch_size", "8",
                    "--data.tiles_per_image", "4", "--model.tile_size", "128", "--model.val_tile_size", "128"],
    "detection.yaml": ["--model.backbone", "test_resnet", "--model.fpn_channels", "32", "--data.image_size", "64",
                       "--data.batch_size", "8"],
    "cls.yaml": SMALL_CNN, "multilabel.yaml": SMALL_CNN, "regression.yaml": SMALL_CNN,
}
# The blocks of the quick suite (`make test`); the others are slow (`make test-slow`).
QUICK = {"carvana-1", "tgs-salt-1", "severstal-1", "siim-isic-1", "README-1"}


def recipe_blocks(page: Path) -> list[list[list[str]]]:
    """The commands (argument lists) of each runnable block of a page: line continuations joined, comments dropped."""
    blocks = re.findall(r"^```bash\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    runnable = [b.split("\n", 1)[1] for b in blocks if b.startswith(MARK)]
    return [[args for line in b.replace("\\\n", " ").splitlines() if (args := shlex.split(line, comments=True))]
            for b in runnable]


def resolve(token: str) -> str:
    """A path with `<placeholders>` or `…` as the newest existing path that matches it; other tokens as they are."""
    if not re.search(r"<[^<>]+>|…", token):
        return token
    pattern = re.sub(r"<[^<>]+>|…", "*", token)
    found = sorted(Path().glob(pattern), key=lambda p: p.stat().st_mtime)
    assert found, f"nothing matches {token} (pattern {pattern}) in {Path.cwd()}"
    return str(found[-1])


def shrunk(args: list[str]) -> list[str]:
    """A lightning-cv command as the test runs it: fit and cv get the tiny model, package no wheels."""
    if args[0] in ("fit", "cv"):
        config = Path(args[args.index("--config") + 1])
        shrink = SHRINK.get(config.name) or SHRINK[f"{config_task(config)}.yaml"]  # a config `init` wrote
        return [*args, *shrink, *TRAINER, *(["--folds", "2"] if args[0] == "cv" else [])]
    if args[0] == "package":
        return [*args, "--dependencies", "false"]
    return args


def config_task(config: Path) -> str:
    """The registered task of a config's DataModule."""
    from jsonargparse.typing import import_object

    from lightning_cv.tasks import task_for

    return task_for(import_object(yaml.safe_load(config.read_text())["data"]["class_path"])).name


def run(args: list[str], capsys) -> str:
    """Run one command of a page in the working directory; what it printed on stdout."""
    args = [resolve(a) for a in args]
    if args[0] == "lightning-cv":
        capsys.readouterr()
        main(shrunk(args[1:]))
        out = capsys.readouterr().out
        sys.stdout.write(out)
        return out
    if args[0] == "python":
        return subprocess.run([sys.executable, *args[1:]], check=True, capture_output=True, text=True).stdout
    if args[0] == "cp":
        shutil.copy(*args[1:])
        return ""
    raise AssertionError(f"a recipe block runs lightning-cv, python and cp, not: {shlex.join(args)}")


def option(commands: list[list[str]], *names: str) -> str | None:
    """The last value given to any of the options `names` in the commands."""
    values = [args[i + 1] for args in commands for i, a in enumerate(args[:-1]) if a in names]
    return values[-1] if values else None


# The recipe pages, and the README's example.
BLOCKS = [(page, k, block) for page in [*sorted(PAGES.glob("*.md")), ROOT / "README.md"]
          for k, block in enumerate(recipe_blocks(page), start=1)]


@pytest.mark.parametrize("page, block", [
    pytest.param(page, block, id=f"{page.stem}-{k}", marks=() if f"{page.stem}-{k}" in QUICK else pytest.mark.slow)
    for page, k, block in BLOCKS])
def test_recipe(page, block, tmp_path, monkeypatch, capsys):
    """From the replica's files to the score: the block's last command is `lightning-cv score`, which prints its
    metric; the submission it scores has the sample submission's ids and columns."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")  # a copy: init writes its config there
    folders = {m for args in block for a in args for m in re.findall(r"^data/([\w-]+)", a)}
    assert folders, f"{page.name}: a recipe block reads its competition from data/<name>"
    for name in folders:
        LAYOUTS[name](tmp_path / "data" / name)
    for args in block[:-1]:
        run(args, capsys)
    assert block[-1][:2] == ["lightning-cv", "score"], f"{page.name}: a recipe block ends with lightning-cv score"
    metric = option(block, "--metric")
    printed = run(block[-1], capsys)
    assert re.fullmatch(rf"{metric}: -?\d+\.\d+\n", printed), printed

    submission = pd.read_csv(resolve(block[-1][2]), dtype=str, keep_default_na=False)
    sample = pd.read_csv(option(block, "--sample_submission", "--data.sample_submission"), dtype=str, keep_default_na=False)
    assert list(submission.columns) == list(sample.columns)
    assert set(submission.iloc[:, 0]) == set(sample.iloc[:, 0])


def test_every_page_has_a_recipe_and_every_layout_a_page():
    pages = {p.stem for p, _, _ in BLOCKS}
    assert pages == {p.stem for p in PAGES.glob("*.md")} - {"index"} | {"README"}
    used = {m for _, _, block in BLOCKS for args in block for a in args for m in re.findall(r"^data/([\w-]+)", a)}
    assert used == set(LAYOUTS)
