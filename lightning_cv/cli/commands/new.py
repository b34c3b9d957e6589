"""`lightning-cv new`: a project folder for a new competition, from the cookiecutter template.

The same template runs as `cookiecutter templates/competition` (with prompts). It names no task: its
hooks ask the task registry which tasks exist, and `render_task_files` writes the task's config (from
the task's shipped configs/<task>.yaml) and its data layout (from its DataModule).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import yaml

from lightning_cv.cli.commands.shipped import shipped_config, template_dir
from lightning_cv.errors import UserInputError

# The model argument that names the pretrained network, whichever a task's config uses.
BACKBONE_ARGS = ("backbone", "encoder")


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
    task: str | None = None,
    out: Path = Path("."),
    num_classes: int = 2,
    image_size: int = 256,
    backbone: str = "resnet18",
    wandb_project: str | None = None,
    folds: int = 5,
    overwrite: bool = False,
    from_: Path | None = None,
) -> Path:
    """Write a project for a new competition: configs/, Makefile (train, cv, submit), data/README.md,
    notebooks/, README.md and .gitignore.

    Args:
        name: the competition's name; its folder is the name in lower case with dashes.
        task: the task (default: what --from reads, else cls): {tasks}.
        out: the folder to create the project in.
        num_classes: number of classes (seg: 2 for binary masks).
        image_size: training image size in pixels (dense tasks such as seg: a multiple of 32).
        backbone: timm model name (seg: the Unet encoder).
        wandb_project: Weights & Biases project; default: the project folder name.
        folds: cross-validation folds for `make cv`.
        overwrite: write into an existing project folder (files from the template are replaced).
        from_: a competition folder (`--from DATA_DIR`): `lightning-cv init` reads it for the task, the image
            size and the layout options, written into the project's config with its data in `data/`.
    """
    from cookiecutter.exceptions import CookiecutterException, FailedHookException, OutputDirExistsException
    from cookiecutter.main import cookiecutter

    reading, task, image_size = read_from(from_, task, image_size) if from_ is not None else (None, task, image_size)
    task = task or "cls"
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
    if reading is not None:
        write_read_config(project_dir / "configs" / f"{task}.yaml", reading, Path(from_))
    print(f"{task} project for {name!r} written to {project_dir}\n"
          f"next: put the competition files in {project_dir / 'data'} (see data/README.md), then "
          f"cd {project_dir} && make train")
    return project_dir


def read_from(data_dir: Path, task: str | None, image_size: int) -> tuple[Any, str, int]:
    """`init`'s reading of a competition folder (its table printed), its task and image size (the long side)."""
    from lightning_cv.cli.commands.init import print_reading, read_folder

    reading = read_folder(Path(data_dir), task)
    print_reading(reading, Path(data_dir))
    size = reading.data.get("image_size", image_size)
    return reading, reading.task, max(size) if isinstance(size, list) else size


def write_read_config(config: Path, reading: Any, data_dir: Path) -> None:
    """The project's config with the reading's options, the competition's files in the project's data/."""
    from lightning_cv.cli.commands.init import config_text

    if "predict_dir" in reading.data:
        reading.data["predict_dir"] = (Path("data") / Path(reading.data["predict_dir"]).relative_to(data_dir)).as_posix()
    config.write_text(config_text(reading, Path("data"), f"lightning-cv new --from {data_dir}", yaml.safe_load(config.read_text())))


def _list_tasks() -> str:
    from lightning_cv.tasks import get_task, task_names

    return "; ".join(f"{name} ({get_task(name).summary})" for name in task_names())


new.__doc__ = (new.__doc__ or "").replace("{tasks}", _list_tasks())
