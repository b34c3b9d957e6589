"""`lightning-cv new`: a project folder for a new competition, from the cookiecutter template.

The same template runs as `cookiecutter templates/competition` (with prompts).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Literal

import lightning_cv
from lightning_cv.errors import UserInputError

TEMPLATE = Path("templates") / "competition"


def template_dir() -> Path:
    """The template next to the package (source checkout, editable install), else the copy a wheel
    installs under <prefix>/share/lightning-cv (pyproject.toml's data-files)."""
    package = Path(lightning_cv.__file__).resolve().parent
    candidates = (package.parent / TEMPLATE, Path(sys.prefix) / "share" / "lightning-cv" / TEMPLATE)
    for candidate in candidates:
        if (candidate / "cookiecutter.json").is_file():
            return candidate
    raise UserInputError(f"competition template not found (looked in {', '.join(map(str, candidates))})")


def new(
    name: str,
    task: Literal["cls", "seg", "bbox"] = "cls",
    out: Path = Path("."),
    num_classes: int = 2,
    image_size: int = 256,
    backbone: str = "resnet18",
    wandb_project: str | None = None,
    folds: int = 5,
    overwrite: bool = False,
) -> Path:
    """Write a project for a new competition: configs/, Makefile (train, cv, submit), data/README.md,
    notebooks/, README.md and .gitignore.

    Args:
        name: the competition's name; its folder is the name in lower case with dashes.
        task: cls (image classification), seg (segmentation masks) or bbox (square box regression).
        out: the folder to create the project in.
        num_classes: number of classes (seg: 2 for binary masks).
        image_size: training image size in pixels (seg: a multiple of 32).
        backbone: timm model name (seg: the Unet encoder).
        wandb_project: Weights & Biases project; default: the project folder name.
        folds: cross-validation folds for `make cv`.
        overwrite: write into an existing project folder (files from the template are replaced).
    """
    from cookiecutter.exceptions import CookiecutterException, FailedHookException, OutputDirExistsException
    from cookiecutter.main import cookiecutter

    context = {"competition_name": name, "task": task, "num_classes": str(num_classes), "image_size": str(image_size),
               "backbone": backbone, "folds": str(folds)}
    if wandb_project:
        context["wandb_project"] = wandb_project
    # cookiecutter logs a traceback for a rejected answer; the hook has already said what was wrong.
    logging.getLogger("cookiecutter").setLevel(logging.CRITICAL)
    try:
        project = cookiecutter(
            str(template_dir()), no_input=True, extra_context=context, output_dir=str(out),
            overwrite_if_exists=overwrite, default_config=True,
        )
    except OutputDirExistsException as err:
        raise UserInputError(f"{err}: choose another name or --out, or pass --overwrite true") from None
    except FailedHookException:
        raise UserInputError("the template rejected these answers (see the message above)") from None
    except CookiecutterException as err:
        raise UserInputError(f"could not create the project: {err}") from None
    project_dir = Path(project)
    print(f"{task} project for {name!r} written to {project_dir}\n"
          f"next: put the competition files in {project_dir / 'data'} (see data/README.md), then "
          f"cd {project_dir} && make train")
    return project_dir
