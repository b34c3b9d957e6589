"""`lightning-cv new`: a project folder for a new competition, from the cookiecutter template.

The same template runs as `cookiecutter templates/competition` (with prompts). It names no task: its
hooks ask the task registry which tasks exist, and `render_task_files` writes the task's config (from
the task's shipped configs/<task>.yaml) and its data layout (from its DataModule).
"""

from __future__ import annotations

import inspect
import logging
import sys
from pathlib import Path

import yaml

import lightning_cv
from lightning_cv.errors import UserInputError

TEMPLATE = Path("templates") / "competition"
# The model argument that names the pretrained network, whichever a task's config uses.
BACKBONE_ARGS = ("backbone", "encoder")


def _shipped(relative: Path, marker: str) -> Path:
    """A folder next to the package (source checkout, editable install), else the copy a wheel installs
    under <prefix>/share/lightning-cv (pyproject.toml's data-files)."""
    package = Path(lightning_cv.__file__).resolve().parent
    candidates = (package.parent / relative, Path(sys.prefix) / "share" / "lightning-cv" / relative)
    for candidate in candidates:
        if (candidate / marker).is_file():
            return candidate
    raise UserInputError(f"{relative} not found (looked in {', '.join(map(str, candidates))})")


def template_dir() -> Path:
    return _shipped(TEMPLATE, "cookiecutter.json")


def shipped_config(task: str) -> Path:
    """The task's own config (configs/<task>.yaml), the one `make train TASK=<task>` runs."""
    return _shipped(Path("configs"), f"{task}.yaml") / f"{task}.yaml"


def task_config(task: str, image_size: int, backbone: str, wandb_project: str) -> str:
    """The task's shipped config for a competition's project: data in `data/`, the chosen image size,
    backbone and W&B project; everything else as the task ships it."""
    from lightning_cv.tasks import get_task

    entry = get_task(task)
    shipped = yaml.safe_load(shipped_config(task).read_text())
    config = {"seed_everything": shipped.pop("seed_everything", 42), "wandb_project": wandb_project, **shipped}
    config["data"].setdefault("init_args", {}).update(data_dir="data", image_size=image_size)
    model = config["model"].setdefault("init_args", {})
    key = next((k for k in BACKBONE_ARGS if k in model), BACKBONE_ARGS[0])
    model[key] = backbone
    head = (f"# {entry.summary}.\n# make train [ARGS='--trainer.max_epochs 5 ...']   (= lightning-cv fit --config "
            f"configs/{task}.yaml)\n# Any key can be overridden on the command line: --model.pretrained true, "
            "--data.batch_size 64.\n")
    return head + yaml.safe_dump(config, sort_keys=False, width=110, default_flow_style=None)


def data_layout(task: str) -> str:
    """What `data/` must hold for the task: its DataModule's description of the layout it reads."""
    from lightning_cv.tasks import get_task

    return "```\n" + inspect.cleandoc(get_task(task).datamodule.__doc__ or "") + "\n```"


def check_answers(task: str, image_size: int) -> None:
    """A registered task, and an image size its model takes (dense outputs: a multiple of the stride)."""
    from lightning_cv.tasks import get_task

    if get_task(task).module.dynamic_spatial and image_size % 32:
        raise UserInputError(f"{task} image_size must be a multiple of 32 (the encoder stride), got {image_size}")


def render_task_files(project: Path, task: str, image_size: int, backbone: str, wandb_project: str) -> None:
    """Fill the task's parts of a generated project: configs/<task>.yaml and the layout in data/README.md."""
    check_answers(task, image_size)
    (project / "configs").mkdir(exist_ok=True)
    (project / "configs" / f"{task}.yaml").write_text(task_config(task, image_size, backbone, wandb_project))
    readme = project / "data" / "README.md"
    readme.write_text(readme.read_text().replace("<!-- layout -->", data_layout(task)))


def new(
    name: str,
    task: str = "cls",
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
        task: the task: {tasks}.
        out: the folder to create the project in.
        num_classes: number of classes (seg: 2 for binary masks).
        image_size: training image size in pixels (dense tasks such as seg: a multiple of 32).
        backbone: timm model name (seg: the Unet encoder).
        wandb_project: Weights & Biases project; default: the project folder name.
        folds: cross-validation folds for `make cv`.
        overwrite: write into an existing project folder (files from the template are replaced).
    """
    from cookiecutter.exceptions import CookiecutterException, FailedHookException, OutputDirExistsException
    from cookiecutter.main import cookiecutter

    check_answers(task, image_size)  # one-line errors (e.g. a close match of the task) before anything is written
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


def _list_tasks() -> str:
    from lightning_cv.tasks import get_task, task_names

    return "; ".join(f"{name} ({get_task(name).summary})" for name in task_names())


new.__doc__ = (new.__doc__ or "").replace("{tasks}", _list_tasks())
