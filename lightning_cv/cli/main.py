"""`lightning-cv`: fit/validate/test/predict through LightningCLI; other verbs from `cli/commands/`.

This is the only place that wires configuration to objects.
"""

from __future__ import annotations

import importlib
import inspect
import json
import keyword
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning_cv  # noqa: F401  (environment defaults before wandb/albumentations are imported)
from lightning_cv.training.provenance import remember_command

COMMANDS = {
    "crop": "lightning_cv.cli.commands.crop:crop",
    "cv": "lightning_cv.cli.commands.cv:cv",
    "demo": "lightning_cv.cli.commands.demo:demo",
    "ensemble": "lightning_cv.cli.commands.ensemble:ensemble",
    "export": "lightning_cv.cli.commands.export:export",
    "init": "lightning_cv.cli.commands.init:init",
    "new": "lightning_cv.cli.commands.new:new",
    "package": "lightning_cv.cli.commands.package:package",
    "report": "lightning_cv.report.page:report",
    "score": "lightning_cv.cli.commands.score:score",
}
# The LightningCLI subcommands (--config configs/<task>.yaml and every --trainer/--model/--data option).
TRAINER_VERBS = {
    "fit": "train a task's model (runs/<task>/<time>/: checkpoints, metrics.csv, pictures, W&B)",
    "validate": "score a checkpoint on the validation rows",
    "test": "score a checkpoint on labelled test rows (--data.test_csv)",
    "predict": "predict images with a checkpoint: predictions.npz/.csv, masks, submission.csv",
    "lr_find": "learning-rate range test: the suggestion, lr_find.png",
}


def build_cli(args: Sequence[str] | None = None, run: bool = True) -> Any:
    """The LightningCLI; `run=False` only parses and instantiates (for tests)."""
    from lightning_cv.cli.lightning_cli import LightningCV, SaveConfig
    from lightning_cv.data.base import CVDataModule
    from lightning_cv.tasks.base import CVTask
    from lightning_cv.training.trainer import Trainer

    return LightningCV(
        CVTask,
        CVDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_class=Trainer,
        save_config_callback=SaveConfig,
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


def gather_repeated(args: list[str], names: set[str]) -> list[str]:
    """`--name a --name b` -> `--name ["a", "b"]` for list options (jsonargparse would keep the last)."""
    values: dict[str, list[str]] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        name, eq, value = args[i][2:].partition("=") if args[i].startswith("--") else ("", "", "")
        if name in names and (eq or i + 1 < len(args)):
            value = value if eq else args[i + 1]
            if value.startswith("["):
                values.setdefault(name, []).extend(json.loads(value))
            else:
                values.setdefault(name, []).append(value)
            i += 1 if eq else 2
            continue
        rest.append(args[i])
        i += 1
    return rest + [token for name, items in values.items() for token in (f"--{name}", json.dumps(items))]


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
    elif first is not None and first.default is inspect.Parameter.empty and args[:1] and not args[0].startswith("-"):
        # A leading required parameter takes the first positional token (`init DATA_DIR`); the plain parser
        # below takes it as an option.
        if "config" in parameters or "overrides" in parameters:
            args = [f"--{first.name}", *args]
    # An option named after a Python keyword is the parameter with a trailing underscore (`new --from DIR`).
    args = [f"{a}_" if a.startswith("--") and keyword.iskeyword(a[2:]) and f"{a[2:]}_" in parameters else a for a in args]
    lists = {n for n, p in parameters.items() if str(p.annotation).startswith("list[") and p is not first}
    args = gather_repeated(args, lists)
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


def _summary(target: str) -> str:
    """The first docstring paragraph of a command's function, read from its source (the module is not imported)."""
    import ast
    import importlib.util

    module, func = target.split(":")
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8")) if spec and spec.origin else None
    node = next((n for n in (tree.body if tree else []) if isinstance(n, ast.FunctionDef) and n.name == func), None)
    return " ".join(((ast.get_docstring(node) if node else None) or "").split("\n\n")[0].split())


def overview() -> str:
    """`lightning-cv --help`: every command with one line, each with its own --help."""
    lines = ["usage: lightning-cv COMMAND [options]      lightning-cv COMMAND --help: its options", "",
             "Training, with --config configs/<task>.yaml and any --trainer.* / --model.* / --data.* option:"]
    lines += [f"  {verb:<10} {text}" for verb, text in TRAINER_VERBS.items()]
    lines += ["", "Other commands:"] + [f"  {name:<10} {_summary(target)}" for name, target in COMMANDS.items()]
    return "\n".join(lines)


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point; user-input errors become one line on stderr and exit status 2."""
    argv = list(sys.argv[1:] if args is None else args)
    remember_command(argv)
    if argv in ([], ["-h"], ["--help"]):
        print(overview())  # without building the CLI: torch and Lightning are not imported for it
        return
    def run() -> None:
        if argv and argv[0] in COMMANDS:
            _run_command(argv[0], argv[1:])
        else:
            build_cli(None if args is None else argv)

    try:
        if len(argv) == 2 and argv[1] in ("-h", "--help") and (argv[0] in COMMANDS or argv[0] in TRAINER_VERBS):
            from lightning_cv.cli.help_text import print_help

            print_help(argv, run)  # saved between runs: building it imports torch, Lightning and every task
        else:
            run()
    except SystemExit as done:  # --help, --print_config
        if args is None and not done.code:
            exit_without_teardown()
        raise
    except Exception as err:
        # jsonargparse wraps an error raised while building the model or data (e.g. an unknown
        # backbone) in its own ValueError: the user's mistake is still the one to report.
        cause = _user_input_error(err)
        if cause is None or os.environ.get("LIGHTNING_CV_TRACEBACK"):
            raise
        print(f"error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None
    if args is None:
        exit_without_teardown()


def exit_without_teardown() -> None:
    """End the process now that the command has succeeded, after what a normal exit does that matters: the
    exit handlers (W&B's run and service teardown, logging, DataLoader workers, temporary files) and a flush
    of stdout and stderr. What is skipped is Python's teardown of every module, 1-2 s after a fit with
    torch, Lightning and torchmetrics loaded (on a 2-core machine). Only for the process's own command line
    (`main()` without arguments) and when no non-daemon thread is left for a normal exit to wait for."""
    import atexit
    import threading

    main_thread = threading.main_thread()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main_thread):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


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
