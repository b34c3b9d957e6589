"""`LightningCV`: the LightningCLI of `lightning-cv fit|validate|test|predict`, subclassable.

What it adds to LightningCLI, through its public hooks: run directories (runs/<task>/<time>/), default
loggers (metrics.csv, W&B offline without credentials), checkpoints and callbacks, the task's prediction
writer, linked data facts, a check that a checkpoint belongs to the configured task, and a summary table.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
    RichProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from lightning_cv.errors import UserInputError
from lightning_cv.tasks.checkpoints import OFFLINE_OVERRIDES, SEEN_OPTIONS, checkpoint_recipe, config_model
from lightning_cv.training.callbacks import LastCheckpoint, ParameterSummary, SplitRecord, ValidationPictures
from lightning_cv.training.loggers import RunCSVLogger
from lightning_cv.training.provenance import finish_provenance, write_provenance

# Facts the data knows and the model is told (never configured twice).
LINKED = ("num_classes", "class_names", "in_chans", "image_size")


def task_options(class_path: str | None, kind: str) -> tuple[str, ...]:
    """A task's `inference_options` (chosen at prediction time: threshold, TTA, tiles ...) or
    `training_options` (free to differ from a checkpoint's: optimizer, augmentation of the loss ...)."""
    if not class_path:
        return ()
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return ()
    return tuple(getattr(cls, kind, ()))


def model_options_given(args: Any) -> set[str]:
    """The `--model.<name>` options written on a command line (`--model.init_args.<name>` too)."""
    names = set()
    for token in args if isinstance(args, (list, tuple)) else []:
        if isinstance(token, str) and token.startswith("--model."):
            key = token[len("--model."):].split("=", 1)[0]
            names.add(key.removeprefix("init_args.").split(".", 1)[0])
    return names


def option_value(args: list[str], name: str) -> str | None:
    """The value of `--name value` / `--name=value` on a command line, or None."""
    for i, token in enumerate(args):
        key, eq, value = token.partition("=")
        if key == name:
            return value if eq else (args[i + 1] if i + 1 < len(args) else None)
    return None


# The commands that run a checkpoint: it brings its recipe (the data options and inference options of its fit).
RECIPE_VERBS = ("validate", "test", "predict")


def split_configs(args: list[str]) -> tuple[list[str], list[str]]:
    """(the `--config X` / `--config=X` tokens, every other token), each in its order."""
    configs: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "--config" and i + 1 < len(args):
            configs += args[i : i + 2]
            i += 2
            continue
        (configs if args[i].startswith("--config=") else rest).append(args[i])
        i += 1
    return configs, rest


def with_recipe(args: list[str], recipe: dict[str, Any]) -> list[str]:
    """The command line with the recipe as a config after the user's config files and before the other
    options: the recipe wins over a config file, an option written on the command line wins over the recipe."""
    configs, rest = split_configs(args[1:])
    return [args[0], *configs, "--config", json.dumps(recipe), *rest]


def configured_task(args: list[str]) -> str | None:
    """The model class_path of the last config file on a command line that names one."""
    configs, _ = split_configs(args)
    paths = [t.removeprefix("--config=") for t in configs if t != "--config"]
    found = None
    for path in paths:
        if Path(path).is_file():
            found = config_model(Path(path))[0] or found
    return found


RUN_DIR_ENV = "LIGHTNING_CV_RUN_DIR"


def _timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _short(class_path: str | None) -> str:
    return str(class_path or "").rsplit(".", 1)[-1]


class SaveConfig(SaveConfigCallback):
    """Write the resolved config into the run directory and send it to W&B."""

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_hyperparams({"config": config})


class LightningCV(LightningCLI):
    """LightningCLI with run directories, default loggers/checkpoints and linked data facts, and the
    `lr_find` subcommand (`Trainer.lr_find`: Lightning's learning-rate range test)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "lr_find": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key in LINKED:
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")
        parser.add_argument("--wandb_project", type=str | None, default=None,
                            help="W&B project (default: $WANDB_PROJECT or lightning-cv-<task>)")
        parser.add_argument("--wandb_log_model", type=Literal["best", "all"] | bool, default=False,
                            help="checkpoints as W&B model artifacts: best (the best and last, at the end of fit), "
                                 "all (each as it is saved) or false; offline runs keep them for `wandb sync`")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Lightning then rebuilds the model from the checkpoint's hyperparameters. Checked first: the
        checkpoint is of the configured task, and no architecture option given on the command line
        contradicts it (one-line errors); the prediction options are kept for `before_instantiate_classes`.

        A checkpoint's recipe (`checkpoints.checkpoint_recipe`) comes before the other options: validate, test
        and predict need no --config, and predict with a config of other sizes still sees what fit saw."""
        self._argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
        ckpt = option_value(self._argv, "--ckpt_path") if self._argv[:1] and self._argv[0] in RECIPE_VERBS else None
        recipe = checkpoint_recipe(ckpt) if ckpt and Path(ckpt).is_file() else None
        if recipe is None:
            super().parse_arguments(parser, args)
        else:
            ours, theirs = configured_task(self._argv), recipe["model"]["class_path"]
            if ours and _short(ours) != _short(theirs):
                raise UserInputError(f"checkpoint {ckpt} is a {_short(theirs)}, but the config asks for a {_short(ours)}: "
                                     "drop --config (the checkpoint holds its recipe), or give the config it was trained with")
            self.config = parser.parse_args(with_recipe(self._argv, recipe))
            self._note_other_inputs(recipe, ckpt)
        self._prediction_options: dict[str, Any] = {}
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        # Memory-mapped: the hyperparameters are read, the weights are not (the recipe's read above, too).
        hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu", mmap=True).get("hyper_parameters") or {}
        model = self.config[subcommand].get("model")
        ours, theirs = getattr(model, "class_path", None), hparams.get("_class_path")
        if theirs and ours and _short(theirs) != _short(ours):
            raise UserInputError(f"checkpoint {ckpt_path} is a {_short(theirs)}, but the config asks for a {_short(ours)}: "
                                 "use the config it was trained with")
        init_args = getattr(model, "init_args", None)
        if init_args is None:
            return
        options = task_options(ours, "inference_options")
        self._prediction_options = {k: init_args[k] for k in options if k in init_args}
        given = model_options_given(sys.argv[1:] if args is None else args)
        for name in sorted(given - set(options) - set(task_options(ours, "training_options"))):
            if name in hparams and name in init_args and init_args[name] != hparams[name]:
                raise UserInputError(
                    f"--model.{name} {init_args[name]!r} contradicts checkpoint {ckpt_path}, trained with "
                    f"{name} {hparams[name]!r}: the checkpoint defines the architecture; drop the option"
                )

    def _note_other_inputs(self, recipe: dict[str, Any], ckpt: str) -> None:
        """One line per option of the command line that changes what the model sees from what fit saw."""
        data = self.config[self._argv[0]].data.init_args
        trained = recipe["data"]["init_args"]
        for name in SEEN_OPTIONS:
            given = {f"--data.{name}", f"--data.init_args.{name}"} & {t.split("=", 1)[0] for t in self._argv}
            if given and name in trained and name in data and data[name] != trained[name]:
                if self.trainer_is_global_zero():
                    print(f"note: --data.{name} {data[name]!r}: {ckpt} was trained with {trained[name]!r}", file=sys.stderr)

    def before_instantiate_classes(self) -> None:
        """With a checkpoint, the model is built for its state dict: no pretrained weights are fetched or
        read (the checkpoint holds every weight), and the prediction options are this command's, not the
        checkpoint's hyperparameters."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        init_args = getattr(config.get("model"), "init_args", None)
        if not config.get("ckpt_path") or not Path(config.ckpt_path).is_file() or init_args is None:
            return
        for name, value in {**OFFLINE_OVERRIDES, **self._prediction_options}.items():
            if name in init_args:
                init_args[name] = value

    # -- the run directory --------------------------------------------------------------------------------
    def run_dir(self) -> Path:
        """--trainer.default_root_dir; else beside the checkpoint for validate/test/predict; else runs/<task>/<time>."""
        config = self.config[self.subcommand]
        if config.trainer.get("default_root_dir"):
            return Path(config.trainer.default_root_dir)
        if not self.trainer_is_global_zero() and os.environ.get(RUN_DIR_ENV):
            return Path(os.environ[RUN_DIR_ENV])  # rank 0's: the ranks Lightning starts come seconds later
        ckpt = config.get("ckpt_path")
        if self.subcommand != "fit" and ckpt and Path(ckpt).parent.name == "checkpoints":
            return Path(ckpt).parent.parent / f"{self.subcommand}-{_timestamp()}"
        return Path("runs") / self.datamodule.task_name / _timestamp()

    def loggers(self, run_dir: Path) -> list:
        """metrics.csv in the run directory, and W&B (offline without credentials) unless disabled."""
        loggers: list = [RunCSVLogger(str(run_dir))]
        if os.environ.get("WANDB_MODE") == "disabled":
            return loggers
        # A fixed id per run directory: a resumed run (--ckpt_path last) continues the same W&B run.
        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else ""
        resume = bool(run_id) and self.subcommand == "fit"
        if not resume:
            run_id = uuid.uuid4().hex[:8]
        if self.subcommand == "fit" and self.trainer_is_global_zero():
            id_file.write_text(run_id)
        project = self.config[self.subcommand].get("wandb_project") or os.environ.get(
            "WANDB_PROJECT", f"lightning-cv-{self.datamodule.task_name}"
        )
        log_model = {"best": True, "all": "all"}.get(self.config[self.subcommand].get("wandb_log_model"), False)
        loggers.append(WandbLogger(save_dir=str(run_dir), project=project, name=f"{run_dir.parent.name}/{run_dir.name}",
                                   id=run_id, resume="allow" if resume else None, job_type=self.subcommand,
                                   log_model=log_model))
        return loggers

    def default_callbacks(self, run_dir: Path, configured: list, logged: bool = True) -> list:
        """Checkpoints, the learning rate of every parameter group and split.csv (fit), validation pictures,
        the task's prediction writer, a progress bar on a TTY."""
        extra: list = []
        if self.subcommand == "fit" and logged and not any(isinstance(c, LearningRateMonitor) for c in configured):
            extra.append(LearningRateMonitor(logging_interval="step"))
        if self.subcommand == "fit" and not any(isinstance(c, ModelCheckpoint) for c in configured):
            # Two callbacks: Lightning 2.6 refreshes `save_last` only when a top-k checkpoint was
            # saved, so last.ckpt would lag behind (and a resume would repeat epochs). When both save at
            # the same step, last.ckpt is a hard link to the best file (one write).
            best = ModelCheckpoint(
                dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:03d}", auto_insert_metric_name=False,
                monitor=self.model.monitor, mode=self.model.monitor_mode, save_top_k=1,
            )
            extra += [best, LastCheckpoint(best, dirpath=run_dir / "checkpoints", filename="last",
                                           enable_version_counter=False)]
        if self.subcommand == "fit":
            extra.append(SplitRecord())
        if self.subcommand in ("fit", "validate"):
            extra.append(ValidationPictures())
        if self.subcommand == "predict" and not any(isinstance(c, BasePredictionWriter) for c in configured):
            extra.append(self.model.prediction_writer(run_dir))
        if self.config_init[self.subcommand].trainer.get("enable_progress_bar", True) is not False and sys.stderr.isatty():
            extra.append(RichProgressBar())
        return extra

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer_config = self.config_init[self.subcommand].trainer
        run_dir = self.run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.trainer_is_global_zero():
            os.environ[RUN_DIR_ENV] = str(run_dir)  # inherited by the DDP ranks the Trainer launches
            write_provenance(run_dir, self._argv)  # environment.json; `after_fit` adds the wall time
        kwargs["default_root_dir"] = str(run_dir)
        if self.subcommand != "fit" and trainer_config.get("enable_checkpointing") is None:
            kwargs["enable_checkpointing"] = False  # nothing to save; avoids a stale-dirpath warning
        if trainer_config.get("logger") is None:
            kwargs["logger"] = False if self.subcommand in ("predict", "lr_find") else self.loggers(run_dir)
        configured = list(trainer_config.get("callbacks") or [])
        logged = kwargs.get("logger", trainer_config.get("logger")) not in (False, [])
        kwargs["callbacks"] = configured + self.default_callbacks(run_dir, configured, logged)
        if (self.subcommand == "fit" and trainer_config.get("enable_model_summary") is not False
                and not trainer_config.get("barebones") and not any(isinstance(c, ModelSummary) for c in configured)):
            # The layers and parameters without Lightning's FLOP count (a forward pass before training).
            kwargs["callbacks"].append(ParameterSummary())
            kwargs["enable_model_summary"] = False
        return super().instantiate_trainer(**kwargs)

    @staticmethod
    def trainer_is_global_zero() -> bool:
        """Rank 0 before the Trainer exists (launchers set RANK / LOCAL_RANK for the others)."""
        return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0

    # -- summaries ----------------------------------------------------------------------------------------
    def summary(self) -> None:
        """The monitored best (fit) and every logged metric, as a table."""
        from rich.console import Console
        from rich.table import Table

        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        table = Table(title=f"{self.subcommand} -> {trainer.default_root_dir}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        ckpt = trainer.checkpoint_callback
        if self.subcommand == "fit" and ckpt is not None and ckpt.best_model_score is not None:
            table.add_row(f"best {ckpt.monitor}", f"{float(ckpt.best_model_score):.4f}")
            table.add_row("best checkpoint", str(ckpt.best_model_path))
        for key, value in sorted(trainer.callback_metrics.items()):
            if "/" in key and not key.endswith("_step") and not key.startswith("lr-"):  # (learning rates: metrics.csv)
                table.add_row(key, f"{float(value):.4f}")
        Console(stderr=False).print(table)

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            finish_provenance(Path(self.trainer.default_root_dir))
        self.summary()

    def after_validate(self) -> None:
        self.summary()

    def after_test(self) -> None:
        self.summary()
