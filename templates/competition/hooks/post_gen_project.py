"""The task's own parts of the project: its config (from the task's shipped config) and its data layout."""

import sys
from pathlib import Path

from lightning_cv.cli.commands.new import render_task_files
from lightning_cv.errors import UserInputError

try:
    render_task_files(Path.cwd(), task="{{ cookiecutter.task }}", image_size=int("{{ cookiecutter.image_size }}"),
                      backbone="{{ cookiecutter.backbone }}", wandb_project="{{ cookiecutter.wandb_project }}")
except UserInputError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
