"""Callbacks: validation pictures (W&B + PNG), the confusion matrix, and an EMA of the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from lightning_cv.io import write_image
from lightning_cv.pictures import draw_confusion


def _wandb(trainer: L.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


class ValidationPictures(L.Callback):
    """Each validation epoch: the task's picture of its first batch (and, where the task keeps one,
    the confusion matrix) to W&B and as PNGs under `<run>/pictures/`."""

    def __init__(self, max_images: int = 16):
        self.max_images = max_images
        self._first: tuple[dict, Any] | None = None

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
            wandb.log_image(step=trainer.global_step, **panels)
        self._first = None
        for key, picture in pictures.items():
            write_image(out / f"{key.split('/')[-1]}_epoch{trainer.current_epoch:03d}.png", picture)
            if wandb is not None:
                wandb.log_image(key=key, images=[picture], step=trainer.global_step)


class EMA(L.Callback):
    """An exponential moving average of the weights (timm `ModelEmaV3`), updated after every optimizer
    step; validation runs with the averaged weights and checkpoints hold them, so `best.ckpt`,
    `last.ckpt`, predict and export use the average.

    The training weights travel in this callback's checkpoint state, so `fit --ckpt_path last`
    resumes from them (and from the average). With `warmup`, the decay ramps up as in timm
    (1 - (1 + step) ** -0.75 for short runs) instead of averaging from the first step at `decay`.

    Args:
        decay: weight of the average at each update (0.999: about the last 1000 steps).
        warmup: ramp the decay up over the first steps (timm `use_warmup`).
        update_after_step: the average copies the weights until this optimizer step.
    """

    def __init__(self, decay: float = 0.999, warmup: bool = False, update_after_step: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.update_after_step = update_after_step
        self.ema: Any = None  # timm ModelEmaV3 of the LightningModule, made when fitting starts
        self._loaded: dict | None = None  # averaged weights read from a checkpoint before the EMA exists
        self._swapped = False  # the module holds the averaged weights (during validation)
        self._last_step = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the module's setup (class weights etc.), the move to the device and any checkpoint restore.
        from timm.utils import ModelEmaV3

        compiled = pl_module.__dict__.pop("_compiled", None)  # not part of the average
        try:
            self.ema = ModelEmaV3(pl_module, decay=self.decay, use_warmup=self.warmup, warmup_power=0.75,
                                  update_after_step=self.update_after_step)
        finally:
            if compiled is not None:
                pl_module.__dict__["_compiled"] = compiled
        if self._loaded is not None:
            self.ema.module.load_state_dict(self._loaded)
            self._loaded = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # global_step counts optimizer steps: with gradient accumulation, one update per step.
        if self.ema is not None and trainer.global_step > self._last_step:
            self.ema.update(pl_module, step=trainer.global_step)
            self._last_step = trainer.global_step

    def _swap(self, pl_module: L.LightningModule) -> None:
        with torch.no_grad():
            for mine, theirs in zip(pl_module.state_dict().values(), self.ema.module.state_dict().values()):
                tmp = mine.clone()
                mine.copy_(theirs)
                theirs.copy_(tmp)
        self._swapped = not self._swapped

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.ema is not None and trainer.state.fn == "fit" and not self._swapped:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._swapped:
            self._swap(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The module leaves `fit` with the averaged weights (for a `test` or `predict` in the same process)."""
        if self.ema is not None and not self._swapped:
            pl_module.load_state_dict(self.ema.module.state_dict())
            self.ema = None  # the module now holds the average, and checkpoints save it as it is

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.ema is None:
            return
        ema_state = {k: v.detach().clone() for k, v in self.ema.module.state_dict().items()}
        training, average = (ema_state, checkpoint["state_dict"]) if self._swapped else (checkpoint["state_dict"], ema_state)
        checkpoint["state_dict"] = average
        if "callbacks" in checkpoint:  # not in weights-only checkpoints
            checkpoint["callbacks"].setdefault(self.state_key, {}).update(training_state_dict=training)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = int(state_dict.get("last_step", 0))

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Resume: the module got the checkpoint's (averaged) `state_dict`; put the training weights back
        and keep the average for the EMA made at fit start. A checkpoint without EMA state starts the
        average from its weights."""
        state = (checkpoint.get("callbacks") or {}).get(self.state_key) or {}
        training = state.get("training_state_dict")
        self._loaded = dict(checkpoint["state_dict"])
        if training is not None:
            pl_module.load_state_dict(training)
