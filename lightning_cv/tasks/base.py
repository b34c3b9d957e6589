"""The one LightningModule base all tasks share, and the task protocol commands ask of a task.

A task is a plugin: its module subclasses `CVTask`, builds its parts in the build hooks, says how its
outputs become predictions, how predictions of several models combine, score out of fold and become a
submission, and registers itself with its DataModule (`tasks.registry.register_task`). Commands (cv,
ensemble, demo, new, export ...) ask the registry and this protocol; none of them names a task.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from lightning_cv.data.augment import image_hw
from lightning_cv.errors import UserInputError
from lightning_cv.io.images import write_csv
from lightning_cv.models.backbones import enable_grad_checkpointing, normalization
from lightning_cv.models.schedules import ScheduleName, named_schedule, total_steps, with_length, with_warmup
from lightning_cv.models.tta import tta_logits
from lightning_cv.predictions.files import Predictions
from lightning_cv.predictions.stores import RowWriter, chunk_rows, is_map
from lightning_cv.predictions.submission import SUBMISSION
from lightning_cv.predictions.writer import PredictionWriter

if TYPE_CHECKING:
    from lightning_cv.pictures.plots import ImageSource, Section

SPLITS = ("train", "val", "test")
# Where a checkpoint keeps the inference options its model was trained with.
INFERENCE_KEY = "inference_options"
# Metric names where lower is better (the monitored metric's default mode).
LOWER_IS_BETTER = ("loss", "rmse", "mae", "logloss")


def _adamw(params: Any, lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)


def ensemble_weights(weights: list[float] | None, n: int) -> np.ndarray:
    """Weights normalised to sum 1 (equal when None); checked."""
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(w) != n:
        raise UserInputError(f"{len(w)} weights for {n} predictions")
    if (w < 0).any() or w.sum() <= 0:
        raise UserInputError(f"weights must be non-negative with a positive sum, got {weights}")
    return w / w.sum()


class CVTask(L.LightningModule):
    """A model (`self.model`, taking normalised images) plus a loss and metric collections.

    The constructor takes the options every task shares; a task adds its own arguments, passes the rest
    on with `**kwargs` and builds its parts in `build_model`, `build_criterion` and `make_metrics`,
    which this constructor calls once every argument is saved in `self.hparams`. `forward` takes
    [0, 1] RGB and returns raw outputs (logits): export-ready, no activation.

    Args:
        num_classes: classes (linked from the data).
        in_chans: input channels (linked from the data).
        class_names: class names in order (linked from the data).
        image_size: the training resolution, one side or [height, width], for the example input (export,
            summaries; linked from the data).
        optimizer: the optimizer, given the parameter groups (backbone / head, no decay on biases).
        scheduler: the learning-rate schedule: cosine, linear (decay to `min_lr_scale`), constant, onecycle, or
            timm's timm-cosine / timm-tanh / timm-poly, stepped per optimizer step over the Trainer's length
            (max_epochs / max_steps); or any torch scheduler by class path (stepped per `scheduler_interval`;
            OneCycleLR's total_steps filled in).
        warmup_steps: linear warmup over this many optimizer steps before the schedule.
        warmup_epochs: the same in epochs (may be fractional); warmup_steps wins when both are set.
        min_lr_scale: where cosine and linear end, as a share of each group's learning rate.
        scheduler_interval: when a class-path scheduler steps: per "epoch" or per optimizer "step".
        backbone_lr_scale: the backbone's learning rate as a share of the head's.
        freeze_backbone_epochs: train only the head for this many epochs.
        channels_last: run the model in channels_last memory format (often faster on GPUs with tensor cores).
        compile: torch.compile the model (slow first steps; pays off on long GPU runs).
        grad_checkpointing: recompute activations in the backward pass instead of keeping them (timm
            backbones, smp `tu-` encoders): a larger model or image on one GPU for ~30 % more compute.
        monitor: the logged metric that picks the best checkpoint (default: the task's, e.g. val/acc);
            an EarlyStopping callback in the config names its own.
        monitor_mode: min or max; default: min for losses and errors (loss, rmse, mae, logloss), else max.
    """

    # -- the task protocol: what commands ask of a task ------------------------------------------------
    monitor: ClassVar[str] = "val/loss"
    monitor_mode: ClassVar[str] = "min"
    # Export with a dynamic height and width (fully convolutional outputs, e.g. segmentation).
    dynamic_spatial: ClassVar[bool] = False
    # How outputs become probabilities (TTA averages those); tasks taking a `tta` argument set `self.tta`.
    activation: str = "softmax"
    tta: str = "none"
    # The arrays `predict_outputs` returns (besides the ids), saved in predictions.npz; `combined` are
    # the ones an ensemble combines, the others must agree between its members (e.g. original sizes).
    outputs: ClassVar[tuple[str, ...]] = ("probs",)
    combined: ClassVar[tuple[str, ...]] = ("probs",)
    combine_methods: ClassVar[tuple[str, ...]] = ("mean", "vote")
    # The readable predictions `predict` writes beside predictions.npz.
    predictions_file: ClassVar[str] = "predictions.csv"
    # Chosen at inference: kept out of the hparams, which `--ckpt_path` restores over the command line.
    inference_options: ClassVar[tuple[str, ...]] = ("tta",)
    # Only matter while training: may differ from a checkpoint's on a predict command line (the others
    # define the architecture, which comes from the checkpoint).
    training_options: ClassVar[tuple[str, ...]] = ("optimizer", "scheduler", "warmup_steps", "warmup_epochs", "min_lr_scale",
                                                   "scheduler_interval", "backbone_lr_scale", "freeze_backbone_epochs",
                                                   "channels_last", "compile", "grad_checkpointing", "pretrained", "weights", "drop_rate", "loss",
                                                   "monitor", "monitor_mode")

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        class_names: list[str] | None = None,
        image_size: int | list[int] = 64,
        optimizer: OptimizerCallable = _adamw,
        scheduler: ScheduleName | LRSchedulerCallable | None = None,
        warmup_steps: int = 0,
        warmup_epochs: float = 0.0,
        min_lr_scale: float = 0.0,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        backbone_lr_scale: float = 1.0,
        freeze_backbone_epochs: int = 0,
        channels_last: bool = False,
        compile: bool = False,
        grad_checkpointing: bool = False,
        monitor: str | None = None,
        monitor_mode: Literal["min", "max"] | None = None,
    ):
        super().__init__()
        # Every __init__ in the chain is collected: the task's own arguments are in self.hparams too. The
        # inference options are kept apart (`INFERENCE_KEY` of the checkpoint): defaults a command line replaces.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.inference_defaults = {k: self.hparams[k] for k in self.inference_options if k in self.hparams}
        self.remove_ignored_hparams(list(self.inference_options))
        self.channels_last = channels_last
        self.use_compile = compile  # `compile` is nn.Module's own method
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.image_size = image_size
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names given for {num_classes} classes")
        self.optimizer = optimizer
        self.scheduler = scheduler
        if warmup_steps < 0 or warmup_epochs < 0 or not 0.0 <= min_lr_scale <= 1.0:
            raise UserInputError("--model.warmup_steps/warmup_epochs must be >= 0 and --model.min_lr_scale in [0, 1]")
        self.warmup_steps, self.warmup_epochs, self.min_lr_scale = warmup_steps, warmup_epochs, min_lr_scale
        self.scheduler_interval = scheduler_interval
        self.backbone_lr_scale = backbone_lr_scale
        self.freeze_backbone_epochs = freeze_backbone_epochs
        if monitor:  # instead of the task's own, for the best checkpoint (and schedulers on a plateau)
            self.monitor = monitor
            self.monitor_mode = monitor_mode or ("min" if any(w in monitor for w in LOWER_IS_BETTER) else "max")
        self.model = self.build_model()
        if grad_checkpointing:
            hp = self.hparams
            enable_grad_checkpointing(self.model, str(hp.get("encoder") or hp.get("backbone") or type(self.model).__name__))
        self.criterion = self.build_criterion()
        mean, std = normalization(self.model, self.in_chans)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.example_input_array = torch.rand(2, self.in_chans, *self.example_size())
        for split in SPLITS:
            setattr(self, f"{split}_loss", MeanMetric())
            if split != "train":
                setattr(self, f"{split}_metrics", self.make_metrics(f"{split}/"))

    # -- build hooks ---------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """The network (read the task's arguments from `self.hparams`)."""
        raise NotImplementedError

    def build_criterion(self) -> nn.Module:
        raise NotImplementedError

    def make_metrics(self, prefix: str) -> MetricCollection:
        raise NotImplementedError

    def example_size(self) -> tuple[int, int]:
        return image_hw(self.image_size)

    def configure_model(self) -> None:
        """channels_last and torch.compile, when asked for (both off by default: channels_last was slower on
        the AVX2 CPU in bench/results.md, compile is unmeasured there); the choice goes to the log."""
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.use_compile and "_compiled" not in self.__dict__:
            # Kept out of the module tree, so checkpoints keep the plain parameter names.
            self.__dict__["_compiled"] = torch.compile(self.model)
        rank_zero_info(f"model: channels_last={self.channels_last}, compile={self.use_compile}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = (images - self.mean) / self.std
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.__dict__.get("_compiled", self.model)(images)

    def predict_forward(self, images: torch.Tensor) -> torch.Tensor:
        """Outputs for evaluation and prediction: with `tta`, the logits of the probabilities averaged
        over the flipped views (dense outputs flipped back first)."""
        return tta_logits(self, images, self.tta, self.activation, dense=self.dynamic_spatial)

    @property
    def backbone(self) -> nn.Module:
        """The pretrained part (for freezing, discriminative learning rates, BackboneFinetuning)."""
        return self.model

    @property
    def head(self) -> nn.Module:
        raise NotImplementedError

    # -- outputs ------------------------------------------------------------------------------------------
    def compute_loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        # float32: Dice and friends overflow in fp16.
        return self.criterion(outputs.float(), batch["target"])

    def metric_inputs(self, outputs: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def predict_outputs(self, outputs: torch.Tensor, batch: dict) -> dict[str, Any]:
        """A batch's outputs as the arrays named in `outputs` (one row per image)."""
        raise NotImplementedError

    def prediction_meta(self, datamodule: Any) -> dict[str, Any]:
        """The decisions saved with the predictions (thresholds, pixel order ...), JSON-serialisable."""
        return {}

    def find_boxes(self, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Each RGB image's boxes as a submission keeps them ({"boxes" (K, 4) x_min, y_min, x_max, y_max in its
        pixels, "labels", "scores"}, best first): what `lightning-cv crop` cuts out. Tasks that find none raise."""
        raise UserInputError(f"a {type(self).__name__} finds no boxes: `crop` needs a box model (configs/bbox.yaml) "
                             "or a detection model (configs/detection.yaml)")

    def prediction_writer(self, output_dir: str | Path) -> PredictionWriter:
        return PredictionWriter(output_dir)

    def draw_validation(self, batch: dict, outputs: torch.Tensor) -> np.ndarray | None:
        """A picture of validation examples (RGB uint8), or None."""
        return None

    def wandb_validation(self, batch: dict, outputs: torch.Tensor) -> dict[str, Any] | None:
        """W&B `log_image` arguments for richer panels (e.g. masks), or None."""
        return None

    def wandb_table(self, batch: dict, outputs: torch.Tensor) -> tuple[list[str], list[list[Any]]] | None:
        """(columns, rows) of validation predictions for a W&B Table at the end of fit: an image cell is an
        HxWx3 uint8 array, or a dict of `wandb.Image` arguments (image and masks); None: no table."""
        return None

    # -- predictions: ensembles, out-of-fold scores, submissions (no model needed) --------------------------
    @classmethod
    def combine(cls, predictions: list[Predictions], method: str = "mean", weights: list[float] | None = None,
                store: Path | None = None) -> Predictions:
        """The weighted mean (or `vote`) of aligned predictions, in the first one's rows. With a `store`
        directory, maps (mask probabilities) are combined a chunk of images at a time into files there, in
        the members' dtype (float16 stays float16)."""
        if method not in cls.combine_methods:
            raise UserInputError(f"--method {method}: {cls.__name__} predictions combine by {', '.join(cls.combine_methods)}")
        w = ensemble_weights(weights, len(predictions))
        first = predictions[0]
        arrays = dict(first.arrays)
        writer = RowWriter(store) if store is not None else None

        def combined(values: list[Any]) -> np.ndarray:
            stack = np.stack([np.asarray(v) for v in values]).astype(np.float32)
            return (np.tensordot(w, stack, axes=1) if method == "mean" else cls.vote(stack, w, first.meta)).astype(np.float32)

        for name in cls.combined:
            values = [p.arrays[name] for p in predictions]
            if writer is None or not is_map(values[0]):
                arrays[name] = combined(values)
                continue
            step = chunk_rows(values[0], itemsize=4, copies=len(values))  # the float32 stack of every member
            for start in range(0, len(first), step):
                writer.append(name, combined([v[start:start + step] for v in values]).astype(values[0].dtype))
        arrays.update(writer.close() if writer is not None else {})
        return Predictions(first.task, first.ids, arrays, first.class_names, dict(first.meta))

    @classmethod
    def vote(cls, stack: np.ndarray, weights: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
        """Weighted share of the votes per class (per pixel for masks); one sigmoid channel: the share of
        models above the threshold."""
        if stack.shape[2] == 1:
            return np.tensordot(weights, (stack > meta.get("threshold", 0.5)).astype(np.float32), axes=1)
        classes = np.arange(stack.shape[2]).reshape(1, -1, *[1] * (stack.ndim - 3))
        votes = np.zeros(stack.shape[1:], dtype=np.float32)
        for weight, probs in zip(weights, stack):
            votes += weight * (probs.argmax(axis=1)[:, None] == classes)
        return votes

    @classmethod
    def score(cls, predictions: Predictions) -> dict[str, float]:
        """The task's metrics on labelled predictions (`predictions.targets`), e.g. one fold's out of fold."""
        return {}

    @classmethod
    def tune(cls, predictions: Predictions, out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """Decisions tuned on out-of-fold predictions (saved under out_dir): (meta for the predictions,
        a report for cv_results.json). Default: nothing to tune."""
        return {}, {}

    @classmethod
    def report_sections(cls, predictions: Predictions, images: ImageSource) -> list[Section]:
        """The task's sections of a run report (`lightning-cv report`), from labelled out-of-fold predictions
        (`predictions.targets`) and their images (`images(ids)`, as the model saw them): confusions, error
        distributions, the worst images. Default: none."""
        return []

    @classmethod
    def submission(cls, predictions: Predictions, sample: pd.DataFrame | None = None,
                   source: str | Path = "sample submission") -> pd.DataFrame:
        """Predictions as a table: an id column and the task's columns; with a sample submission, its ids
        in its order and its columns."""
        raise NotImplementedError

    @classmethod
    def oof_columns(cls, predictions: Predictions) -> pd.DataFrame:
        """Readable out-of-fold columns (oof.csv beside the id, fold and label): the submission's columns,
        the first one named `pred`."""
        frame = cls.submission(predictions).iloc[:, 1:]
        return frame.rename(columns={frame.columns[0]: "pred"}).reset_index(drop=True)

    @classmethod
    def write_outputs(cls, predictions: Predictions, out_dir: Path, sample: pd.DataFrame | None,
                      source: str | Path = "sample submission") -> None:
        """The readable files of `predict`: `predictions_file` and, with a sample, submission.csv."""
        frame = cls.submission(predictions)
        write_csv(frame, out_dir / cls.predictions_file)
        print(f"wrote {len(frame)} predictions to {out_dir / cls.predictions_file}")
        if sample is not None:
            submission = cls.submission(predictions, sample, source)
            write_csv(submission, out_dir / SUBMISSION)
            print(f"wrote {len(submission)} rows shaped like {source} to {out_dir / SUBMISSION}")

    # -- shared step -----------------------------------------------------------------------------
    def _step(self, batch: dict, split: str) -> dict[str, torch.Tensor]:
        outputs = self(batch["image"]) if split == "train" else self.predict_forward(batch["image"])
        loss = self.compute_loss(outputs, batch)
        if not torch.isfinite(loss):
            ids = batch.get("id")
            raise FloatingPointError(
                f"non-finite {split} loss ({loss.item()}) at global step {self.global_step}; batch images: {ids}. "
                "Lower the learning rate, check the inputs, or try --trainer.gradient_clip_val 1.0."
            )
        n = batch["image"].shape[0]
        loss_metric = getattr(self, f"{split}_loss")
        loss_metric.update(loss.detach(), weight=n)
        if split == "train":
            self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
            self.log("train/loss_epoch", loss_metric, on_step=False, on_epoch=True, batch_size=n)
        else:
            metrics = getattr(self, f"{split}_metrics")
            metrics.update(*self.metric_inputs(outputs.detach(), batch))
            self.log(f"{split}/loss", loss_metric, on_epoch=True, batch_size=n, prog_bar=True)
            self.log_metrics(metrics, n)
        return {"loss": loss, "outputs": outputs.detach()}

    def log_metrics(self, metrics: MetricCollection, batch_size: int) -> None:
        """Log a split's metric collection (each metric a scalar, computed at the epoch's end by Lightning); a
        task whose metrics are computed together (one dict) logs them itself at the epoch's end instead."""
        self.log_dict(metrics, on_epoch=True, batch_size=batch_size, prog_bar=True)

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return self._step(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        return {"id": batch["id"], **self.predict_outputs(self.predict_forward(batch["image"]), batch)}

    # -- loading ----------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The inference options the model was trained with (threshold, TTA ...), part of its recipe."""
        checkpoint[INFERENCE_KEY] = dict(self.inference_defaults)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint of another task, class list or architecture is a one-line UserInputError naming
        both sides, raised before the weights are copied (instead of a tensor-shape traceback)."""
        trainer = self._trainer
        source = f"checkpoint {trainer.ckpt_path}" if trainer is not None and trainer.ckpt_path else "the checkpoint"
        hparams = checkpoint.get("hyper_parameters") or {}
        task = str(hparams.get("_class_path") or type(self).__name__).rsplit(".", 1)[-1]
        if task != type(self).__name__:
            raise UserInputError(f"{source} is a {task}, not a {type(self).__name__}: use the config it was trained with")
        theirs = hparams.get("class_names") or [str(i) for i in range(int(hparams.get("num_classes", self.num_classes)))]
        if list(theirs) != list(self.class_names):
            raise UserInputError(
                f"{source} was trained for {len(theirs)} classes {list(theirs)[:10]}, but the data has "
                f"{self.num_classes} {self.class_names[:10]}: use data with the checkpoint's classes (e.g. "
                "--data.classes in its order), or train a new model for these classes"
            )
        if int(hparams.get("in_chans", self.in_chans)) != self.in_chans:
            raise UserInputError(f"{source} takes {hparams['in_chans']}-channel images, the data has {self.in_chans}")
        own = self.state_dict()
        weights = checkpoint.get("state_dict") or {}
        wrong = [k for k, v in weights.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        if wrong or (self.strict_loading and (missing or unexpected)):
            example = (f"{wrong[0]} is {tuple(weights[wrong[0]].shape)} there, {tuple(own[wrong[0]].shape)} here" if wrong
                       else f"e.g. {(missing or unexpected)[0]!r}")
            raise UserInputError(
                f"{source} does not fit this model ({len(wrong)} weights of another shape, {len(missing)} missing, "
                f"{len(unexpected)} unexpected; {example}): was it trained with another backbone, encoder or head?"
            )

    # -- optimisation ----------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Backbone and head groups (backbone lr scaled), each split so biases and norms get no decay."""
        head_ids = {id(p) for p in self.head.parameters()}
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            is_head = id(param) in head_ids
            no_decay = param.ndim <= 1 or name.endswith(".bias")
            groups.setdefault((is_head, no_decay), []).append(param)
        # Named for the learning-rate log (lr-AdamW/backbone, lr-AdamW/head_no_decay ...).
        return [
            {"params": params, "name": ("head" if is_head else "backbone") + ("_no_decay" if no_decay else ""),
             "lr_scale": 1.0 if is_head else self.backbone_lr_scale, **({"weight_decay": 0.0} if no_decay else {})}
            for (is_head, no_decay), params in sorted(groups.items())
        ]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameter_groups())
        for group in optimizer.param_groups:
            group["lr"] *= group.pop("lr_scale", 1.0)
        if self.scheduler is None:
            if self.warmup_steps or self.warmup_epochs:
                raise UserInputError("--model.warmup_steps/warmup_epochs need a --model.scheduler (e.g. cosine or constant)")
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.schedule(optimizer)}

    def schedule(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The lr_scheduler config: a named schedule per step, or the configured torch scheduler (its unset
        length filled from the Trainer, warmup before it), with the monitor for ReduceLROnPlateau."""
        total = total_steps(self.trainer)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else None
        warmup = self.warmup_steps
        if not warmup and self.warmup_epochs:
            if epochs is None:
                raise UserInputError("--model.warmup_epochs needs --trainer.max_epochs (or give --model.warmup_steps)")
            warmup = int(round(self.warmup_epochs * total / epochs))
        if warmup >= total:
            raise UserInputError(f"warmup of {warmup} steps is not shorter than the whole fit ({total} optimizer steps)")
        if isinstance(self.scheduler, str):
            return {"scheduler": named_schedule(optimizer, self.scheduler, total, warmup, self.min_lr_scale), "interval": "step"}
        scheduler = with_length(self.scheduler, total)(optimizer)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return {"scheduler": scheduler, "interval": "epoch", "monitor": self.monitor}
        if warmup and self.scheduler_interval != "step":
            raise UserInputError("warmup before a class-path scheduler counts optimizer steps: add "
                                 "--model.scheduler_interval step (and give the scheduler its length in steps)")
        return {"scheduler": with_warmup(optimizer, scheduler, warmup) if warmup else scheduler,
                "interval": self.scheduler_interval}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """timm's schedulers step by the number of optimizer steps taken; torch's as Lightning steps them."""
        if hasattr(scheduler, "step_update"):
            scheduler.step_update(num_updates=self.global_step)
        else:
            super().lr_scheduler_step(scheduler, metric)

    # The LR finder (`lightning-cv lr_find`, Lightning's Tuner) reads and sets `lr`: the optimizer's
    # learning rate (the head's; the backbone keeps its backbone_lr_scale share).
    @property
    def lr(self) -> float:
        return float(getattr(self.optimizer, "keywords", {}).get("lr", 1e-3))

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer = partial(self.optimizer, lr=float(value))

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.freeze_backbone_epochs
        head_ids = {id(p) for p in self.head.parameters()}
        for param in self.backbone.parameters():
            if id(param) not in head_ids:
                param.requires_grad_(not frozen)
