"""The task registry: every registered task is tested, shipped, demoed and found by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from specs import ROOT, SPECS

from lightning_cv.cli import main
from lightning_cv.cli.commands.cv import _out_from_overrides
from lightning_cv.errors import UserInputError
from lightning_cv.tasks import get_task, task_names


def test_every_registered_task_has_a_contract_spec():
    assert sorted(s.name for s in SPECS) == sorted(task_names())


@pytest.mark.parametrize("name", task_names())
def test_shipped_config_pairs_the_registered_classes(name):
    entry = get_task(name)
    config = yaml.safe_load((ROOT / entry.config).read_text())
    module, data = config["model"]["class_path"], config["data"]["class_path"]
    assert module.rsplit(".", 1)[-1] == entry.module.__name__ and data.rsplit(".", 1)[-1] == entry.datamodule.__name__
    assert entry.datamodule.task_name == name
    # What commands ask of every task is there, declared once on the task class.
    assert entry.module.outputs and set(entry.module.combined) <= set(entry.module.outputs)
    assert entry.summary and callable(entry.demo)


@pytest.mark.parametrize("name", task_names())
def test_demo_command_writes_each_task_competition(name, tmp_path, capsys):
    main(["demo", "--task", name, "--out", str(tmp_path / name), "--n_train", "12"])
    assert f"demo {name} data written" in capsys.readouterr().out
    assert any((tmp_path / name).iterdir())


def test_unknown_task_names_close_matches(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--task", "segg", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "did you mean seg" in capsys.readouterr().err
    with pytest.raises(UserInputError, match="registered tasks are"):
        get_task("nope")


def test_cv_takes_the_trainer_root_dir_as_its_out():
    overrides = ["--trainer.max_epochs", "1", "--trainer.default_root_dir", "runs/x", "--data.fold", "0"]
    assert _out_from_overrides(None, overrides) == Path("runs/x")
    assert overrides == ["--trainer.max_epochs", "1", "--data.fold", "0"]  # not passed on to the folds
    assert _out_from_overrides(Path("runs/x"), ["--trainer.default_root_dir=runs/x"]) == Path("runs/x")
    with pytest.raises(UserInputError, match="two CV directories"):
        _out_from_overrides(Path("runs/y"), ["--trainer.default_root_dir", "runs/x"])


def test_monitor_picks_the_checkpoint_metric_for_any_task():
    from lightning_cv.tasks import ClassificationTask

    task = ClassificationTask(num_classes=3, backbone="small_cnn", image_size=32)
    assert (task.monitor, task.monitor_mode) == ("val/acc", "max")
    task = ClassificationTask(num_classes=3, backbone="small_cnn", image_size=32, monitor="val/f1")
    assert (task.monitor, task.monitor_mode) == ("val/f1", "max") and ClassificationTask.monitor == "val/acc"
    assert ClassificationTask(num_classes=3, backbone="small_cnn", monitor="val/loss").monitor_mode == "min"
