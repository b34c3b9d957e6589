"""Image regression: a timm backbone predicts one number per image, or several (PetFinder Pawpularity,
bone age, counts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from lightning_cv.backbones import create_classifier
from lightning_cv.data.regression import RegressionDataModule
from lightning_cv.demos import make_regression
from lightning_cv.errors import UserInputError
from lightning_cv.pictures import caption, image_grid, to_uint8_image
from lightning_cv.predictions import Predictions
from lightning_cv.submission import follow_sample
from lightning_cv.tasks.base import CVTask
from lightning_cv.tasks.registry import register_task
from lightning_cv.tta import TTAMode

LOSSES = {"mse": nn.MSELoss, "huber": nn.HuberLoss, "l1": nn.L1Loss}


class RegressionTask(CVTask):
    """A timm backbone with one output per target (`num_classes` = the number of target columns, linked
    from the data), a named loss, RMSE and MAE.

    `forward` returns values in the targets' units. With `standardize`, the head learns standardised
    targets: the training split's mean and standard deviation (saved in the checkpoint) scale its
    output back, and the loss compares standardised values, so targets of any scale train alike.

    Args:
        backbone: any `timm.list_models()` name, or "small_cnn".
        pretrained: start from the backbone's pretrained (ImageNet) weights, downloaded by timm.
        weights: a local file with those pretrained weights, for machines without network.
        drop_rate: dropout before the head.
        loss: mse, huber or l1.
        standardize: learn standardised targets (mean and std of the training split).
        tta: test-time augmentation for validate/test/predict: none, hflip, flip (h + v) or d4 (values
            averaged over the views).
        **kwargs: the options every task shares (`CVTask`: optimizer, scheduler, image_size ...).
    """

    monitor = "val/rmse"
    monitor_mode = "min"
    activation = "identity"
    outputs = ("values",)
    combined = ("values",)
    combine_methods = ("mean",)
    training_options = (*CVTask.training_options, "standardize")

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        drop_rate: float = 0.0,
        loss: Literal["mse", "huber", "l1"] = "mse",
        standardize: bool = True,
        tta: TTAMode = "none",
        **kwargs: Any,
    ):
        if loss not in LOSSES:
            raise UserInputError(f"--model.loss {loss!r}: choose {', '.join(LOSSES)}")
        super().__init__(**kwargs)
        self.tta = tta
        self.standardize = standardize
        self.register_buffer("target_mean", torch.zeros(self.num_classes))
        self.register_buffer("target_std", torch.ones(self.num_classes))

    def build_model(self) -> nn.Module:
        hp = self.hparams
        return create_classifier(hp.backbone, self.num_classes, self.in_chans, hp.pretrained, hp.weights, hp.drop_rate)

    def build_criterion(self) -> nn.Module:
        return LOSSES[self.hparams.loss]()

    def make_metrics(self, prefix: str) -> MetricCollection:
        return MetricCollection({"rmse": MeanSquaredError(squared=False), "mae": MeanAbsoluteError()}, prefix=prefix)

    @property
    def head(self) -> nn.Module:
        return self.model.get_classifier()

    def setup(self, stage: str) -> None:
        """Standardise with the training split's mean and std (fit; a resumed checkpoint's own are loaded after)."""
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if stage != "fit" or not self.standardize or datamodule is None:
            return
        targets = torch.as_tensor(datamodule.targets("train"), dtype=torch.float32).reshape(-1, self.num_classes)
        self.target_mean.copy_(targets.mean(dim=0))
        self.target_std.copy_(targets.std(dim=0).clamp(min=1e-6) if len(targets) > 1 else torch.ones(self.num_classes))
        rank_zero_info(f"targets standardised: mean {self.target_mean.tolist()}, std {self.target_std.tolist()}")

    # -- outputs ------------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return super().forward(images).float() * self.target_std + self.target_mean

    def compute_loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        target = batch["target"].float().reshape(outputs.shape)
        return self.criterion((outputs.float() - self.target_mean) / self.target_std, (target - self.target_mean) / self.target_std)

    def metric_inputs(self, outputs: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs.float().flatten(), batch["target"].float().flatten()

    def predict_outputs(self, outputs: torch.Tensor, batch: dict) -> dict[str, Any]:
        return {"values": outputs.float()}

    def draw_validation(self, batch: dict, outputs: torch.Tensor) -> np.ndarray:
        """Validation images captioned "true>predicted" (first target), green within 10% of the range."""
        true, pred = batch["target"].float().reshape(outputs.shape)[:, 0], outputs.float()[:, 0]
        tolerance = 0.1 * float(true.max() - true.min()) if len(true) > 1 else 1.0
        tiles = [caption(to_uint8_image(image), f"{t:.3g}>{p:.3g}", ok=abs(t - p) <= tolerance,
                         scale=max(1, 128 // image.shape[-1])) for image, t, p in zip(batch["image"], true.tolist(), pred.tolist())]
        return image_grid(tiles)

    # -- predictions ---------------------------------------------------------------------------------------
    @classmethod
    def submission(cls, predictions: Predictions, sample: pd.DataFrame | None = None,
                   source: str | Path = "sample submission") -> pd.DataFrame:
        """image and one column per target; in a sample's shape, a column named after a target gets it
        (any other column the first target)."""
        values = {name: predictions.arrays["values"][:, j].round(6) for j, name in enumerate(predictions.class_names)}
        if sample is not None:
            return follow_sample(predictions.ids, values, sample, source)
        frame = pd.DataFrame({"image": predictions.ids, **values})
        return frame.sort_values("image", kind="stable").reset_index(drop=True)

    @classmethod
    def oof_columns(cls, predictions: Predictions) -> pd.DataFrame:
        """The true and predicted value of each target."""
        values, columns = predictions.arrays["values"], {}
        for j, name in enumerate(predictions.class_names):
            if predictions.targets is not None:
                columns[f"true_{name}"] = np.asarray(predictions.targets).reshape(values.shape)[:, j].round(6)
            columns[f"pred_{name}"] = values[:, j].round(6)
        return pd.DataFrame(columns)

    @classmethod
    def score(cls, predictions: Predictions) -> dict[str, float]:
        """RMSE and MAE over every target of every row."""
        error = predictions.arrays["values"].astype(np.float64) - np.asarray(predictions.targets, np.float64).reshape(
            predictions.arrays["values"].shape)
        return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}


register_task("regression", RegressionTask, RegressionDataModule, demo=make_regression,
              summary="image regression: one number per image, or several (Pawpularity, bone age, counts)")
