"""Rebuilding a task from a checkpoint alone: its class and hyperparameters are in the file."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import torch
import yaml

from lightning_cv.errors import MissingFileError, UserInputError
from lightning_cv.tasks.base import INFERENCE_KEY, CVTask

# Hyperparameters that would fetch or read pretrained weights: the checkpoint already holds the weights.
OFFLINE_OVERRIDES = {"pretrained": False, "weights": None, "encoder_weights": None}
NOT_MODEL_ARGS = ("optimizer", "scheduler")
# Where the DataModule's options are saved (LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY).
DATA_KEY = "datamodule_hyper_parameters"
# Data options of the machine or of one command, not of the model: the recipe leaves them to each command.
NOT_RECIPE = ("num_workers", "cache_dir", "predict_split", "sample_submission")
# Data options that change what the model sees: a command line giving another value is told so.
SEEN_OPTIONS = ("image_size", "channels", "channel_suffixes", "window", "keep_aspect")


def checkpoint_recipe(ckpt_path: str | Path) -> dict[str, Any] | None:
    """The config a checkpoint predicts with, as `fit` saved it: its task class and the inference options it
    was trained with, its DataModule class and options (the facts read from the training files included).
    None for a checkpoint without one (trained outside the CLI, or before checkpoints held recipes)."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    data = dict(checkpoint.get(DATA_KEY) or {})
    model_class, data_class = (checkpoint.get("hyper_parameters") or {}).get("_class_path"), data.get("_class_path")
    if not model_class or not data_class:
        return None
    options = {k: v for k, v in data.items() if not k.startswith("_") and k not in NOT_RECIPE}
    return {"model": {"class_path": model_class, "init_args": dict(checkpoint.get(INFERENCE_KEY) or {})},
            "data": {"class_path": data_class, "init_args": options}}


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise UserInputError(f"model class {class_path!r} cannot be imported ({err})") from None
    if not (inspect.isclass(cls) and issubclass(cls, CVTask)):
        raise UserInputError(f"model class {class_path!r} is not a lightning_cv task (CVTask subclass)")
    return cls


def config_model(config: Path) -> tuple[str | None, dict[str, Any]]:
    """The model's class path and init args from a training config (the file given to `fit --config`)."""
    if not config.is_file():
        raise MissingFileError(f"--config: {config} does not exist")
    model = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
    if not isinstance(model, dict):
        raise UserInputError(f"--config {config}: `model` should be a mapping with class_path and init_args")
    return model.get("class_path"), dict(model.get("init_args") or {})


def init_arguments(cls: type) -> set[str]:
    """The arguments a task's constructor takes: its own, and its bases' while it passes **kwargs on."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters) or klass is CVTask:
            break
    return names


def load_task(ckpt_path: Path, config: Path | None = None) -> CVTask:
    """Rebuild a task from a checkpoint, in eval mode on the CPU, without fetching pretrained weights.

    The checkpoint's hyperparameters (written by `fit`, including the linked number of classes) and the
    inference options it was trained with win; the training config supplies the class and any argument
    the checkpoint lacks.
    """
    if not ckpt_path.is_file():
        raise MissingFileError(f"--ckpt_path: checkpoint {ckpt_path} does not exist")
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if "state_dict" not in checkpoint:
        raise UserInputError(f"{ckpt_path} is not a Lightning checkpoint (no state_dict)")
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    class_path, init_args = config_model(config) if config else (None, {})
    class_path = hparams.get("_class_path") or class_path
    if not class_path:
        raise UserInputError(f"{ckpt_path} does not name its task class: pass the training config with --config")
    cls = _import(class_path)
    accepted = init_arguments(cls) - set(NOT_MODEL_ARGS)
    trained = checkpoint.get(INFERENCE_KEY) or {}  # the inference options of its fit (threshold, TTA ...)
    kwargs = {k: v for k, v in {**init_args, **trained, **hparams}.items() if k in accepted}
    kwargs.update({k: v for k, v in OFFLINE_OVERRIDES.items() if k in accepted})
    task = cls(**kwargs)
    task.load_state_dict(checkpoint["state_dict"])
    return task.eval().cpu()
