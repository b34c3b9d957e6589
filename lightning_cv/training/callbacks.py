"""Callbacks: validation pictures (W&B + PNG), the confusion matrix, an EMA of the weights (Lightning's),
last.ckpt written once per save point, the train/val split as split.csv, and a model summary without a
forward pass."""

from __future__ import annotations

import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, ModelSummary
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.model_summary import get_human_readable_count, summarize
from torch.optim.swa_utils import AveragedModel

from lightning_cv.io.images import write_csv, write_image
from lightning_cv.pictures.draw import PICTURE_SIDE, draw_confusion, shrink


def _wandb(trainer: L.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


class ValidationPictures(L.Callback):
    """Each validation epoch: the task's picture of its first batch (and, where the task keeps one,
    the confusion matrix) to W&B and as PNGs under `<run>/pictures/`; at the end of fit, the last
    epoch's first batch as a W&B Table of predictions (image, truth, prediction, score). Every picture,
    W&B image and mask is shrunk to at most 1024 px on its longer side (`draw.shrink`); a larger picture's
    top-left 1024 px at full resolution is written beside it (`<name>_crop.png`)."""

    def __init__(self, max_images: int = 16):
        self.max_images = max_images
        self._first: tuple[dict, Any] | None = None
        self._last: tuple[dict, Any] | None = None

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and trainer.is_global_zero and not trainer.sanity_checking:
            n = self.max_images
            self._first = ({k: v[:n] for k, v in batch.items()}, outputs["outputs"][:n])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        confusion = getattr(pl_module, "val_confusion", None)
        matrix = confusion.compute().cpu().numpy() if confusion is not None else None  # on every rank: it syncs
        if confusion is not None:
            confusion.reset()
        if not trainer.is_global_zero:
            return
        out = Path(trainer.default_root_dir) / "pictures"
        pictures: dict[str, np.ndarray] = {}
        examples = pl_module.draw_validation(*self._first) if self._first is not None else None
        if examples is not None:
            pictures["val/examples"] = examples
        if matrix is not None:
            pictures["val/confusion"] = draw_confusion(matrix, pl_module.class_names)
        wandb = _wandb(trainer)
        # Tasks with richer W&B panels (e.g. segmentation masks) return log_image keyword arguments.
        panels = pl_module.wandb_validation(*self._first) if wandb is not None and self._first is not None else None
        if panels is not None:
            wandb.log_image(step=trainer.global_step, **_shrunk_panels(panels))
        self._last, self._first = self._first, None
        for key, full in pictures.items():
            name, picture = f"{key.split('/')[-1]}_epoch{trainer.current_epoch:03d}", shrink(full)
            write_image(out / f"{name}.png", picture)
            if picture.shape != full.shape:  # beside the shrunk picture, its top-left corner at full resolution
                write_image(out / f"{name}_crop.png", full[:PICTURE_SIDE, :PICTURE_SIDE])
            if wandb is not None:
                wandb.log_image(key=key, images=[picture], step=trainer.global_step)


    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wandb = _wandb(trainer)
        table = pl_module.wandb_table(*self._last) if wandb is not None and self._last is not None else None
        if table is None or not trainer.is_global_zero:
            return
        columns, rows = table
        wandb.log_table(key="val/predictions", columns=columns, data=[[_cell(v) for v in row] for row in rows])


def _shrunk_masks(masks: dict[str, Any]) -> dict[str, Any]:
    """W&B masks (class indices) shrunk by nearest neighbour when larger than a picture; else as they are."""
    def shrunk(data: np.ndarray) -> np.ndarray:
        return shrink(data.astype(np.uint8), nearest=True) if max(data.shape) > PICTURE_SIDE else data

    return {k: {**m, "mask_data": shrunk(m["mask_data"])} for k, m in masks.items()}


def _shrunk_panels(panels: dict[str, Any]) -> dict[str, Any]:
    """W&B panel arguments with their images and masks shrunk alike."""
    out = {**panels, "images": [shrink(np.asarray(image)) for image in panels["images"]]}
    if "masks" in panels:
        out["masks"] = [_shrunk_masks(masks) for masks in panels["masks"]]
    return out


def _cell(value: Any) -> Any:
    """A W&B Table cell: arrays and image dicts become (shrunk) `wandb.Image`s."""
    import wandb

    if isinstance(value, np.ndarray) and value.ndim >= 2:
        return wandb.Image(shrink(value))
    if isinstance(value, dict) and "data_or_path" in value:
        masks = {"masks": _shrunk_masks(value["masks"])} if "masks" in value else {}
        return wandb.Image(**{**value, "data_or_path": shrink(np.asarray(value["data_or_path"])), **masks})
    return value


class EMA(EMAWeightAveraging):
    """An exponential moving average of the weights: Lightning's `EMAWeightAveraging`, updated after every
    optimizer step; validation runs with the averaged weights and checkpoints hold them (`state_dict`), so
    `best.ckpt`, `last.ckpt`, predict and export use the average; fit ends with the module holding it.

    The training weights travel in the checkpoint (`current_model_state`), so `fit --ckpt_path last`
    resumes from them and from the average. With `warmup`, the decay ramps up as in timm
    (min(decay, 1 - (1 + updates) ** -0.75)) instead of averaging from the first step at `decay`.

    Args:
        decay: weight of the average at each update (0.999: about the last 1000 steps).
        warmup: ramp the decay up over the first updates (timm's `use_warmup`).
        update_after_step: the average starts (from the weights of) this optimizer step.
        device: where the average lives (default: with the model; "cpu" saves GPU memory).
    """

    def __init__(self, decay: float = 0.999, warmup: bool = False, update_after_step: int = 0, device: str | None = None):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        super().__init__(device=device, decay=decay, update_starting_at_step=update_after_step or None)
        self.decay, self.warmup, self.update_after_step = decay, warmup, update_after_step
        if warmup:
            self._kwargs["avg_fn"] = partial(_ramped_ema, decay=decay)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """The average of the module as it is (its compiled twin, kept outside the module tree, is not copied)."""
        if stage != "fit":
            return
        compiled = pl_module.__dict__.pop("_compiled", None)
        try:
            self._average_model = AveragedModel(pl_module, device=self._device or pl_module.device,
                                                use_buffers=self._use_buffers, **self._kwargs)
        finally:
            if compiled is not None:
                pl_module.__dict__["_compiled"] = compiled


def _ramped_ema(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor, decay: float) -> torch.Tensor:
    step_decay = min(decay, 1.0 - (1.0 + float(num_averaged)) ** -0.75)
    return averaged + (current - averaged) * (1.0 - step_decay)


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt`, the state to resume from, at every save point. Where the monitored checkpoint `best`
    was written at the same step (same state), last.ckpt becomes a hard link to that file (a copy where
    the filesystem has none) instead of a second serialisation and write; otherwise it is written.

    Either way the new last.ckpt is made beside it (`last.ckpt.partial`) and renamed over the old one, so
    a write never goes through a link into the best file, and a killed process leaves the previous one.
    (The two states differ only in this callback's own bookkeeping: the best file was written before this
    callback recorded last.ckpt's path.)
    """

    def __init__(self, best: ModelCheckpoint | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.best = best

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        twin = self._same_state(trainer)
        partial = f"{filepath}.partial"
        if trainer.is_global_zero and os.path.lexists(partial):
            os.remove(partial)  # left by a killed process (possibly a link: never written through)
        if twin is None:
            trainer.save_checkpoint(partial, self.save_weights_only)
        if trainer.is_global_zero:
            if twin is not None:
                link_or_copy(twin, partial)
            os.replace(partial, filepath)
        trainer.strategy.barrier()
        # What ModelCheckpoint._save_checkpoint records and tells the loggers (W&B model artifacts).
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _same_state(self, trainer: L.Trainer) -> str | None:
        """The file `best` wrote at this global step (a single file, with the same weights-only choice), or None."""
        best = self.best
        if best is None or best.save_weights_only != self.save_weights_only:
            return None
        path = best._last_checkpoint_saved
        if not path or best._last_global_step_saved != trainer.global_step or not os.path.isfile(path):
            return None
        return path


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """`target` becomes a hard link to `source` (the same bytes on disk, no write), or a copy of it on a
    filesystem without hard links."""
    if os.path.lexists(target):
        os.remove(target)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class SplitRecord(L.Callback):
    """`split.csv` in the run directory at the start of fit: each row's id and split (train, val, or pseudo
    for pseudo-labelled test images), so what a hold-out run validated on is known afterwards."""

    filename = "split.csv"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        split = getattr(trainer.datamodule, "split", None)
        if trainer.is_global_zero and split is not None:
            write_csv(split, Path(trainer.default_root_dir) / self.filename)


class ParameterSummary(ModelSummary):
    """At the start of fit: the model's layers (to `max_depth`) with their parameters and train/eval mode,
    and the totals. Lightning's summary also runs the example input through the model under a FLOP
    counter (its FLOPs, in and out sizes): a forward pass before the first step, about 0.05 s for
    resnet18 at 64 px and 0.2-0.3 s at 256 px on one CPU thread, more for larger models and inputs."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._max_depth or not trainer.is_global_zero:
            return
        from rich.console import Console
        from rich.table import Table

        example, pl_module.example_input_array = pl_module.example_input_array, None  # no forward pass
        try:
            summary = summarize(pl_module, max_depth=self._max_depth)
        finally:
            pl_module.example_input_array = example
        table = Table(header_style="bold magenta")
        for column, justify in ((" ", "left"), ("Name", "left"), ("Type", "left"), ("Params", "right"), ("Mode", "left")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for i, (name, kind, params, training) in enumerate(zip(summary.layer_names, summary.layer_types,
                                                              summary.param_nums, summary.training_modes)):
            table.add_row(str(i), name, kind, get_human_readable_count(params), "train" if training else "eval")
        console = Console()
        console.print(table)
        total, trainable, modes = summary.total_parameters, summary.trainable_parameters, summary.total_training_modes
        console.print(f"Trainable params: {get_human_readable_count(trainable)}\n"
                      f"Non-trainable params: {get_human_readable_count(total - trainable)}\n"
                      f"Total params: {get_human_readable_count(total)}\n"
                      f"Total estimated model params size (MB): {summary.model_size:,.3f}\n"
                      f"Modules in train mode: {modes['train']}\nModules in eval mode: {modes['eval']}", highlight=False)
