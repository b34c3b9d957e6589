"""`lightning-cv`: fit/validate/test/predict through LightningCLI; other verbs from `commands/`.

This is the only place that wires configuration to objects.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning_cv  # noqa: F401  (environment defaults before wandb/albumentations are imported)

COMMANDS = {
    "crop": "lightning_cv.commands.crop:crop",
    "cv": "lightning_cv.commands.cv:cv",
    "demo": "lightning_cv.commands.demo:demo",
    "ensemble": "lightning_cv.commands.ensemble:ensemble",
    "export": "lightning_cv.commands.export:export",
    "new": "lightning_cv.commands.new:new",
    "score": "lightning_cv.commands.score:score",
}
TRAINER_VERBS = ("fit", "validate", "test", "predict")


def _timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _build_cli_class() -> type:
    import yaml
    from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint, RichProgressBar
    from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
    from lightning.pytorch.loggers import WandbLogger

    from lightning_cv.callbacks import ValidationPictures
    from lightning_cv.loggers import RunCSVLogger

    class SaveConfig(SaveConfigCallback):
        """Write the resolved config into the run directory and send it to W&B."""

        def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
            config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_hyperparams({"config": config})

    class LightningCV(LightningCLI):
        """LightningCLI with run directories, default loggers/checkpoints and linked data facts."""

        def add_arguments_to_parser(self, parser: Any) -> None:
            for key in ("num_classes", "class_names", "in_chans", "image_size"):
                parser.link_arguments(f"data.{key}", f"model.init_args.{key}", apply_on="instantiate")
            parser.add_argument("--wandb_project", type=str | None, default=None,
                                help="W&B project (default: $WANDB_PROJECT or lightning-cv-<task>)")

        def _parse_ckpt_path(self) -> None:
            """Lightning rebuilds the model from the checkpoint's hyperparameters (loaded weights_only):
            a checkpoint of another task than the config's is a one-line error, not a crash later."""
            from lightning_cv.errors import UserInputError

            subcommand = self.config.get("subcommand")
            configured = self.config[subcommand].get("model") if subcommand else None
            before = getattr(configured, "class_path", None)
            super()._parse_ckpt_path()
            after = getattr(self.config[subcommand].get("model"), "class_path", None) if subcommand else None
            if before and after and before.rsplit(".", 1)[-1] != after.rsplit(".", 1)[-1]:
                raise UserInputError(f"checkpoint {self.config[subcommand].ckpt_path} is a {after.rsplit('.', 1)[-1]}, "
                                     f"but the config asks for a {before.rsplit('.', 1)[-1]}: use the config it was trained with")

        # -- the run directory ----------------------------------------------------------------------
        def _run_dir(self) -> Path:
            config = self.config[self.subcommand]
            if config.trainer.get("default_root_dir"):
                return Path(config.trainer.default_root_dir)
            ckpt = config.get("ckpt_path")
            if self.subcommand != "fit" and ckpt and Path(ckpt).parent.name == "checkpoints":
                return Path(ckpt).parent.parent / f"{self.subcommand}-{_timestamp()}"
            return Path("runs") / self.datamodule.task_name / _timestamp()

        def _loggers(self, run_dir: Path) -> list:
            loggers: list = [RunCSVLogger(str(run_dir))]
            if os.environ.get("WANDB_MODE") != "disabled":
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
                wandb = WandbLogger(save_dir=str(run_dir), project=project, name=f"{run_dir.parent.name}/{run_dir.name}",
                                    id=run_id, resume="allow" if resume else None, job_type=self.subcommand)
                loggers.append(wandb)
            return loggers

        def instantiate_trainer(self, **kwargs: Any) -> Any:
            trainer_config = self.config_init[self.subcommand].trainer
            run_dir = self._run_dir()
            run_dir.mkdir(parents=True, exist_ok=True)
            kwargs["default_root_dir"] = str(run_dir)
            if self.subcommand != "fit" and trainer_config.get("enable_checkpointing") is None:
                kwargs["enable_checkpointing"] = False  # nothing to save; avoids a stale-dirpath warning
            if trainer_config.get("logger") is None and self.subcommand != "predict":
                kwargs["logger"] = self._loggers(run_dir)
            elif self.subcommand == "predict" and trainer_config.get("logger") is None:
                kwargs["logger"] = False
            callbacks = list(trainer_config.get("callbacks") or [])
            extra: list = []
            if self.subcommand == "fit" and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
                # Two callbacks: Lightning 2.6 refreshes `save_last` only when a top-k checkpoint was
                # saved, so last.ckpt would lag behind (and a resume would repeat epochs).
                extra.append(ModelCheckpoint(
                    dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:03d}", auto_insert_metric_name=False,
                    monitor=self.model.monitor, mode=self.model.monitor_mode, save_top_k=1,
                ))
                extra.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False))
            if self.subcommand in ("fit", "validate"):
                extra.append(ValidationPictures())
            if self.subcommand == "predict" and not any(isinstance(c, BasePredictionWriter) for c in callbacks):
                extra.append(self.model.prediction_writer(run_dir))
            if trainer_config.get("enable_progress_bar", True) is not False and sys.stderr.isatty():
                extra.append(RichProgressBar())
            kwargs["callbacks"] = callbacks + extra
            return super().instantiate_trainer(**kwargs)

        @staticmethod
        def trainer_is_global_zero() -> bool:
            """Rank 0 before the Trainer exists (launchers set RANK / LOCAL_RANK for the others)."""
            return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0

        # -- summaries ------------------------------------------------------------------------------
        def _summary(self) -> None:
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
                if "/" in key and not key.endswith("_step"):
                    table.add_row(key, f"{float(value):.4f}")
            Console(stderr=False).print(table)

        def after_fit(self) -> None:
            self._summary()

        def after_validate(self) -> None:
            self._summary()

        def after_test(self) -> None:
            self._summary()

    LightningCV.SaveConfig = SaveConfig
    return LightningCV


def build_cli(args: Sequence[str] | None = None, run: bool = True) -> Any:
    """The LightningCLI; `run=False` only parses and instantiates (for tests)."""
    from lightning_cv.data.base import CVDataModule
    from lightning_cv.tasks.base import CVTask
    from lightning_cv.trainer import Trainer

    cls = _build_cli_class()
    return cls(
        CVTask,
        CVDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_class=Trainer,
        save_config_callback=cls.SaveConfig,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        seed_everything_default=42,
        parser_kwargs={"description": _description()},
        args=list(args) if args is not None else None,
        run=run,
    )


def _description() -> str:
    return ("lightning-cv: train, validate, test and predict image-competition models. "
            f"Other commands: {', '.join(COMMANDS)} (lightning-cv COMMAND --help).")


def split_overrides(args: list[str], known: set[str]) -> tuple[list[str], list[str]]:
    """(the command's own options, the rest): positional tokens and `--name value` / `--name=value` pairs
    whose name is in `known` stay; everything else (--trainer.*, --model.*, --data.* ...) is passed on untouched."""
    own: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        name = token[2:].split("=", 1)[0] if token.startswith("--") else None
        # Positional tokens (ensemble's paths) are the command's own.
        target = own if name is None or name in known or token in ("-h", "--help") else rest
        target.append(token)
        takes_value = token.startswith("--") and "=" not in token and i + 1 < len(args) and not args[i + 1].startswith("--")
        if takes_value:
            target.append(args[i + 1])
            i += 1
        i += 1
    return own, rest


def _run_command(name: str, args: list[str]) -> Any:
    from jsonargparse import auto_cli

    module, func = COMMANDS[name].split(":")
    function = getattr(importlib.import_module(module), func)
    parameters = inspect.signature(function).parameters
    first = next(iter(parameters.values()), None)
    if first is not None and first.default is inspect.Parameter.empty and str(first.annotation).startswith("list["):
        # A leading list parameter takes all the leading positional tokens (`ensemble DIR DIR ...`).
        n = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
        if n:
            # auto_cli takes it positionally; the plain parser below as an option.
            plain = "config" in parameters or "overrides" in parameters
            args = [*([f"--{first.name}"] if plain else []), json.dumps(args[:n]), *args[n:]]
    extra: dict[str, Any] = {}
    if "overrides" in parameters:
        # A command that runs `fit` (cv) passes the options it does not know on to it.
        args, extra["overrides"] = split_overrides(args, set(parameters) - {"overrides"})
    if "config" not in parameters and not extra:
        return auto_cli(function, args=args)
    # auto_cli drops a parameter named `config` (its own config-file option): parse it as a plain option.
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog=f"lightning-cv {name}", description=(function.__doc__ or "").split("\n")[0])
    parser.add_function_arguments(function, as_group=False, skip=set(extra))
    return function(**parser.instantiate(parser.parse_args(args)).as_dict(), **extra)


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point; user-input errors become one line on stderr and exit status 2."""
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in COMMANDS:
            _run_command(argv[0], argv[1:])
        else:
            build_cli(None if args is None else argv)
    except Exception as err:
        # jsonargparse wraps an error raised while building the model or data (e.g. an unknown
        # backbone) in its own ValueError: the user's mistake is still the one to report.
        cause = _user_input_error(err)
        if cause is None or os.environ.get("LIGHTNING_CV_TRACEBACK"):
            raise
        print(f"error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None


def _user_input_error(err: BaseException | None) -> BaseException | None:
    """The UserInputError `err` is, or was raised from (its chain of causes and contexts)."""
    from lightning_cv.errors import UserInputError

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserInputError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
