"""`lightning-cv init DATA_DIR`: a competition's files as Kaggle ships them in, a config out.

    lightning-cv init data/tgs                       # -> configs/tgs.yaml, and a table of what was decided
    lightning-cv fit --config configs/tgs.yaml

Every task's DataModule reads the folder (`recognize`: how sure it is, the options it would set, the evidence,
the questions left); the surest reading wins. Two tasks that fit about as well, or an option the files cannot
settle (two label columns, an RLE order that cannot be told), are questions: init names the option that
settles each and exits with status 2. Nothing under DATA_DIR is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lightning_cv.cli.commands.shipped import shipped_config
from lightning_cv.data.segmentation import TRANSPOSING, transform_names
from lightning_cv.data.survey import Reading, Survey
from lightning_cv.errors import UserInputError
from lightning_cv.tasks import get_task, task_names

CLOSE = 0.1  # readings of two tasks this close in score are a question


def read_folder(data_dir: Path, task: str | None = None) -> Reading:
    """The reading of the folder: the given task's, else the surest; a one-line error when none reads it or
    two tasks read it about as well."""
    survey = Survey(Path(data_dir))
    readings = [r for name in task_names() if (r := get_task(name).datamodule.recognize(survey)) is not None]
    readings.sort(key=lambda r: -r.score)
    if task is not None:
        get_task(task)  # an unknown name: close matches
        chosen = next((r for r in readings if r.task == task), None)
        if chosen is None:
            found = ", ".join(r.task for r in readings) or "none"
            raise UserInputError(f"{data_dir}: no {task} layout found (tasks that read it: {found}); see the recipes")
        return chosen
    if not readings:
        tables = ", ".join(survey.tables) or "no CSV"
        folders = ", ".join(f"{f}/ ({len(p)})" for f, p in list(survey.folders.items())[:6]) or "no images"
        raise UserInputError(f"{data_dir}: no layout init knows ({tables}; images: {folders}): pass --task, or "
                             "write the config from a recipe")
    close = [r for r in readings[1:] if r.task != readings[0].task and r.score >= readings[0].score - CLOSE]
    if close:
        said = "; ".join(f"{r.task}: {next((e[3] for e in r.evidence if e[0] == 'task'), '')}" for r in [readings[0], *close])
        raise UserInputError(f"{data_dir} reads as {' or '.join(r.task for r in [readings[0], *close])} ({said}): pass "
                             f"--task {'|'.join(r.task for r in [readings[0], *close])}")
    return readings[0]


def given_options(overrides: list[str]) -> dict[str, Any]:
    """`--data.x v` / `--model.y=v` pairs of the command line as {"data.x": value} (YAML values)."""
    found: dict[str, Any] = {}
    i = 0
    while i < len(overrides):
        name, eq, value = overrides[i].partition("=")
        if not name.startswith(("--data.", "--model.")):
            raise UserInputError(f"{overrides[i]}: init takes --task, --out and --data.* / --model.* options")
        if not eq:
            i += 1
            value = overrides[i] if i < len(overrides) else ""
        found[name[2:]] = yaml.safe_load(value) if value != "" else ""
        i += 1
    return found


def config_text(reading: Reading, data_dir: Path, command: str, base: dict[str, Any] | None = None) -> str:
    """The task's shipped config (or `base`) with the data folder and the reading's options written in."""
    config = base or yaml.safe_load(shipped_config(reading.task).read_text())
    data = config["data"].setdefault("init_args", {})
    data.update(data_dir=Path(data_dir).as_posix(), **reading.data)
    config["model"].setdefault("init_args", {}).update(reading.model)
    size = data.get("image_size")
    if isinstance(size, list) and size[0] != size[1] and data.get("train_augment"):
        # 90-degree turns would give a batch two shapes: the DataModule refuses them on non-square images.
        data["train_augment"] = [step for step in data["train_augment"] if not set(transform_names([step])) & set(TRANSPOSING)]
    head = (f"# {get_task(reading.task).summary}: written by `{command}`.\n"
            f"# lightning-cv fit --config THIS [--trainer.max_epochs 20 ...]; cv, predict and ensemble read it as well.\n")
    return head + yaml.safe_dump(config, sort_keys=False, width=110, default_flow_style=None)


def print_reading(reading: Reading, data_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{data_dir}: {reading.task}")
    for column in ("option", "value", "from", "evidence"):
        table.add_column(column, overflow="fold")
    for option, value, source, why in reading.evidence:
        table.add_row(option, value, source, why)
    Console().print(table)


def init(data_dir: Path, out: Path | None = None, task: str | None = None, overrides: list[str] | None = None) -> Path:
    """Read a competition folder and write the config fit, cv, predict and ensemble use (--data.* settles a question).

    It reads the tables, image folders, masks and sample submission, and prints each decision with its file
    and evidence.

    Args:
        data_dir: the competition's files as Kaggle ships them (read only).
        out: the config to write (default: configs/<folder name>.yaml).
        task: the task, when the folder fits several.

    Any --data.* / --model.* option (e.g. --data.rle_order F, --data.label_col grade) settles what init asks
    and is written into the config as given.
    """
    data_dir = Path(data_dir)
    given = given_options(list(overrides or []))
    reading = read_folder(data_dir, task)
    for option, value in given.items():
        reading.set(option.removeprefix("data."), value, "command line", "given")
    questions = [q for option, q in reading.questions.items() if f"data.{option}" not in given]
    print_reading(reading, data_dir)
    if questions:
        raise UserInputError("; ".join(questions))
    out = Path(out) if out is not None else Path("configs") / f"{data_dir.resolve().name}.yaml"
    if out.resolve().is_relative_to(data_dir.resolve()):
        raise UserInputError(f"--out {out} is inside {data_dir}: init never writes into the competition's files")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["lightning-cv init", str(data_dir), *(["--task", task] if task else []), *(overrides or [])])
    out.write_text(config_text(reading, data_dir, command))
    print(f"wrote {out}: lightning-cv fit --config {out}")
    return out
