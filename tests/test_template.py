"""The competition template: generated projects are complete, and train where they were generated."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cookiecutter.main import cookiecutter

from lightning_cv.cli import main
from lightning_cv.cli.commands.new import render_task_files, template_dir
from lightning_cv.data.demos import make_shapes
from lightning_cv.tasks import get_task, task_names
from lightning_cv.tasks.checkpoints import load_task


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    """cookiecutter writes ~/.cookiecutter_replay: keep it out of the real home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("task", ["seg"])  # the cookiecutter run; every task's own files: below
def test_generated_project_files(task, tmp_path):
    project = Path(cookiecutter(str(template_dir()), no_input=True, output_dir=str(tmp_path), default_config=True,
                                extra_context={"competition_name": "Shapes Cup", "task": task, "image_size": "64",
                                               "backbone": "resnet10t", "wandb_project": "shapes-wb"}))
    assert project.name == "shapes-cup"
    names = {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()}
    assert {f"configs/{task}.yaml", "Makefile", "README.md", ".gitignore", "data/README.md", "requirements.txt"} <= names
    assert any(n.startswith("notebooks/") for n in names)
    assert "{{" not in "".join((project / n).read_text() for n in names)

    config = yaml.safe_load((project / "configs" / f"{task}.yaml").read_text())
    repo_config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / f"{task}.yaml").read_text())
    # Same task and data classes as the repository's config for the task, with the answers filled in.
    assert config["model"]["class_path"] == repo_config["model"]["class_path"]
    assert config["data"]["class_path"] == repo_config["data"]["class_path"]
    assert config["data"]["init_args"]["image_size"] == 64 and config["wandb_project"] == "shapes-wb"
    assert "resnet10t" in config["model"]["init_args"].values()
    assert set(config["model"]["init_args"]) <= set(repo_config["model"]["init_args"]) | {"backbone", "encoder"}

    makefile = (project / "Makefile").read_text()
    for target in ("train:", "cv:", "submit:"):
        assert f"\n{target}" in makefile
    assert "--config $(CONFIG) --folds $(FOLDS)" in makefile and f"CONFIG ?= configs/{task}.yaml" in makefile
    readme = (project / "README.md").read_text()
    assert "make train" in readme and "make submit" in readme
    ignored = (project / ".gitignore").read_text().split()
    assert "data/*" in ignored and "runs/" in ignored and "!data/README.md" in ignored


@pytest.mark.parametrize("task", task_names())
def test_every_task_fills_its_project_files(task, tmp_path):
    """The template names no task: each registered task's config and data layout come from the task."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "README.md").write_text("layout:\n<!-- layout -->\n")
    render_task_files(tmp_path, task, image_size=64, backbone="resnet10t", wandb_project="wb")
    config = yaml.safe_load((tmp_path / "configs" / f"{task}.yaml").read_text())
    entry = get_task(task)
    assert config["model"]["class_path"].endswith(entry.module.__name__)
    assert config["data"]["init_args"]["data_dir"] == "data" and config["data"]["init_args"]["image_size"] == 64
    assert "resnet10t" in config["model"]["init_args"].values() and config["wandb_project"] == "wb"
    layout = (tmp_path / "data" / "README.md").read_text()
    assert "<!-- layout -->" not in layout and entry.datamodule.__doc__.split()[0] in layout


def test_bad_answers_are_rejected(tmp_path, capfd):
    with pytest.raises(SystemExit) as exit_info:
        main(["new", "Bad", "--task", "seg", "--image_size", "100", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "multiple of 32" in capfd.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_new_project_trains(tmp_path, monkeypatch, capsys):
    main(["new", "Shapes Cup", "--task", "cls", "--out", str(tmp_path), "--image_size", "32", "--backbone", "resnet10t"])
    project = tmp_path / "shapes-cup"
    assert "make train" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # a second time: refused, nothing overwritten
        main(["new", "Shapes Cup", "--out", str(tmp_path)])
    assert exit_info.value.code == 2

    make_shapes(project / "data", n_train=40, n_test=8, size=(32, 32), seed=1)
    monkeypatch.chdir(project)
    main(["fit", "--config", "configs/cls.yaml", "--data.batch_size", "8", "--trainer.max_epochs", "1",
          "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    runs = list((project / "runs" / "cls").glob("*/checkpoints/last.ckpt"))
    assert len(runs) == 1, "fit in the project writes its run under the project's runs/cls/"
    saved = yaml.safe_load((runs[0].parents[1] / "config.yaml").read_text())
    assert saved["model"]["init_args"]["backbone"] == "resnet10t" and saved["data"]["init_args"]["data_dir"] == "data"
    # The checkpoint names its task class, so export needs no config (the ONNX part is in test_export).
    task = load_task(runs[0])
    assert type(task).__name__ == "ClassificationTask" and task.num_classes == 5


def test_wheel_ships_every_template_file():
    """pyproject's data-files (the template in a wheel) name every file of templates/competition."""
    import glob

    import tomllib

    root = Path(__file__).resolve().parents[1]
    data_files = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = {}
    for target, patterns in data_files.items():
        if not target.startswith("share/lightning-cv/templates/"):
            continue
        for pattern in patterns:
            for match in glob.glob(glob.escape(str(root)) + "/" + pattern):
                if Path(match).is_file():
                    shipped[Path(match).relative_to(root)] = Path(target) / Path(match).name
    template = template_dir()
    files = {p.relative_to(root) for p in template.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert files and files == set(shipped), f"not in pyproject data-files: {sorted(map(str, files - set(shipped)))}"
    for source, target in shipped.items():  # same layout under share/lightning-cv/
        assert Path("share/lightning-cv") / source == target
