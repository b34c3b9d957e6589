"""What users write keeps working whatever the rooms inside: class paths in configs, the CLI class, the console
command, `python -m lightning_cv`, the `lightning_cv.tasks` entry-point group and the training callbacks."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
import yaml
from jsonargparse.typing import import_object
from specs import ROOT


def _class_paths(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["class_path"]] if "class_path" in node else []) + [p for v in node.values() for p in _class_paths(v)]
    return [p for v in node for p in _class_paths(v)] if isinstance(node, list) else []


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_class_path_of_the_shipped_configs_imports(config):
    paths = _class_paths(yaml.safe_load(config.read_text()))
    assert any(p.startswith("lightning_cv.tasks") for p in paths) and any(p.startswith("lightning_cv.data") for p in paths)
    for path in paths:
        assert isinstance(import_object(path), type), path


def test_cli_names_and_the_console_command():
    from lightning.pytorch.cli import LightningCLI

    from lightning_cv.cli import LightningCV, build_cli, main

    assert issubclass(LightningCV, LightningCLI) and callable(build_cli)
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "lightning-cv"]
    assert script.value == "lightning_cv.cli:main" and script.load() is main
    # The callback class path the README shows for EMA.
    assert import_object("lightning_cv.training.callbacks.EMA").__name__ == "EMA"


def test_python_dash_m_runs_the_command_line():
    out = subprocess.run([sys.executable, "-m", "lightning_cv", "--help"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage: lightning-cv COMMAND") and "  package " in out


def test_a_task_of_another_package_registers_through_the_entry_point_group(tmp_path):
    """A package declaring a module under `lightning_cv.tasks` has its task registered by `import lightning_cv.tasks`."""
    (tmp_path / "mytask.py").write_text(
        "from lightning_cv.data.classification import ClassificationDataModule\n"
        "from lightning_cv.tasks import ClassificationTask, register_task\n"
        "class MyData(ClassificationDataModule):\n    pass\n"
        "register_task('mine', ClassificationTask, MyData, demo=lambda out, **kw: None, summary='a plugin task')\n")
    dist = tmp_path / "mytask-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mytask\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lightning_cv.tasks]\nmine = mytask\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    code = "from lightning_cv.tasks import task_names; print(task_names()[-1])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=tmp_path)
    assert out.stdout.strip() == "mine"
