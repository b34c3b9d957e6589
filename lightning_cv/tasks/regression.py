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
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection
from torchmetrics.utilities import dim_zero_cat

from lightning_cv.data.demos import make_regression
from lightning_cv.data.regression import RegressionDataModule
from lightning_cv.errors import UserInputError
from lightning_cv.models.backbones import create_classifier
from lightning_cv.models.tta import TTAMode
from lightning_cv.pictures.draw import caption, image_grid, to_uint8_image
from lightning_cv.pictures.plots import ImageSource, Section, Table, gallery, histogram, scatter
from lightning_cv.predictions.decisions import load_decisions, save_decisions
from lightning_cv.predictions.files import Predictions
from lightning_cv.predictions.submission import follow_sample
from lightning_cv.tasks.base import CVTask
from lightning_cv.tasks.registry import register_task

LOSSES = {"mse": nn.MSELoss, "huber": nn.HuberLoss, "l1": nn.L1Loss}


def halfway_cuts(low: int, high: int) -> list[float]:
    """Cut points halfway between consecutive grades low..high (plain rounding)."""
    return [g + 0.5 for g in range(low, high)]


def to_grades(values: np.ndarray, cuts: list[float], low: int) -> np.ndarray:
    """The grade of each value: `low` plus the number of (sorted) cut points at or below it."""
    return low + np.searchsorted(np.sort(np.asarray(cuts, np.float64)), values, side="right")


def quadratic_kappa(targets: np.ndarray, grades: np.ndarray) -> float:
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(np.asarray(targets).round().astype(int).ravel(), np.asarray(grades).astype(int).ravel(),
                                   weights="quadratic"))


def tune_cuts(values: np.ndarray, targets: np.ndarray, low: int, high: int) -> tuple[list[float], float]:
    """Cut points maximising QWK (Nelder-Mead from the halfway points, as APTOS solutions tuned them);
    the halfway points are kept unless the tuned ones score higher."""
    from scipy.optimize import minimize

    start = np.asarray(halfway_cuts(low, high))
    result = minimize(lambda cuts: -quadratic_kappa(targets, to_grades(values, cuts, low)), start, method="Nelder-Mead",
                      options={"xatol": 1e-3, "fatol": 1e-5, "maxiter": 200 * max(1, len(start))})
    best, base = -float(result.fun), quadratic_kappa(targets, to_grades(values, start, low))
    cuts = np.sort(result.x) if best > base else start
    return cuts.round(4).tolist(), max(best, base)


class RoundedKappa(Metric):
    """QWK of values rounded to the nearest grade of the targets' range (all ranks' values gathered)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().float())

    def compute(self) -> torch.Tensor:
        preds, target = dim_zero_cat(self.preds), dim_zero_cat(self.target).round()
        low, high = target.min(), target.max()
        grades = preds.round().clamp(low, high)
        value = quadratic_kappa(target.cpu().numpy(), grades.cpu().numpy())
        return torch.tensor(value if np.isfinite(value) else 0.0)


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
        grades: the target is an ordinal grade (APTOS 0-4, PANDA ISUP 0-5) scored by quadratic weighted
            kappa: `val/qwk` is logged (values rounded to the nearest grade of the training range) and
            submissions get the grade, cut at `postprocess`'s cut points (halfway between grades otherwise).
        postprocess: a postprocess.json with grade cut points tuned on out-of-fold values for QWK (`cv`
            writes it when `grades` is on).
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
    inference_options = (*CVTask.inference_options, "postprocess")

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        drop_rate: float = 0.0,
        loss: Literal["mse", "huber", "l1"] = "mse",
        standardize: bool = True,
        tta: TTAMode = "none",
        grades: bool = False,
        postprocess: str | None = None,
        **kwargs: Any,
    ):
        if loss not in LOSSES:
            raise UserInputError(f"--model.loss {loss!r}: choose {', '.join(LOSSES)}")
        super().__init__(**kwargs)
        self.tta = tta
        self.standardize = standardize
        self.register_buffer("target_mean", torch.zeros(self.num_classes))
        self.register_buffer("target_std", torch.ones(self.num_classes))
        self.grades, self.postprocess = grades, postprocess
        if grades:  # the training targets' range: the grades predictions are cut into
            if self.num_classes != 1:
                raise UserInputError(f"--model.grades true needs one target column, got {self.num_classes}")
            self.register_buffer("grade_range", torch.tensor([0.0, 1.0]))

    def build_model(self) -> nn.Module:
        hp = self.hparams
        return create_classifier(hp.backbone, self.num_classes, self.in_chans, hp.pretrained, hp.weights, hp.drop_rate)

    def build_criterion(self) -> nn.Module:
        return LOSSES[self.hparams.loss]()

    def make_metrics(self, prefix: str) -> MetricCollection:
        metrics = {"rmse": MeanSquaredError(squared=False), "mae": MeanAbsoluteError()}
        if self.hparams.get("grades"):
            metrics["qwk"] = RoundedKappa()
        return MetricCollection(metrics, prefix=prefix)

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
        if self.grades:
            self.grade_range.copy_(torch.stack([targets.min(), targets.max()]).round())
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
    def prediction_meta(self, datamodule: Any) -> dict[str, Any]:
        """With grades: the training range and the cut points (--model.postprocess's, else halfway)."""
        if not self.grades:
            return {}
        low, high = (int(v) for v in self.grade_range.tolist())
        cuts = load_decisions(self.postprocess, self.class_names)["cuts"] if self.postprocess else halfway_cuts(low, high)
        return {"grades": [low, high], "cuts": cuts}

    @classmethod
    def graded(cls, predictions: Predictions) -> np.ndarray:
        """The values, or with grades, the grade each value falls into (by the predictions' cut points)."""
        values, meta = predictions.arrays["values"], predictions.meta
        if not meta.get("grades"):
            return values.round(6)
        return to_grades(values, meta["cuts"], meta["grades"][0])

    @classmethod
    def submission(cls, predictions: Predictions, sample: pd.DataFrame | None = None,
                   source: str | Path = "sample submission") -> pd.DataFrame:
        """image and one column per target; in a sample's shape, a column named after a target gets it
        (any other column the first target)."""
        graded = cls.graded(predictions)
        values = {name: graded[:, j] for j, name in enumerate(predictions.class_names)}
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
        """RMSE and MAE over every target of every row; with grades, QWK at the predictions' cut points."""
        values = predictions.arrays["values"].astype(np.float64)
        targets = np.asarray(predictions.targets, np.float64).reshape(values.shape)
        error = values - targets
        scores = {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}
        if predictions.meta.get("grades"):
            scores["qwk"] = quadratic_kappa(targets, cls.graded(predictions))
        return scores

    @classmethod
    def tune(cls, predictions: Predictions, out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """With grades: cut points tuned for QWK on the out-of-fold values, saved as out_dir/postprocess.json
        (for `predict --model.postprocess` and `ensemble`)."""
        if not predictions.meta.get("grades"):
            return {}, {}
        low, high = predictions.meta["grades"]
        values, targets = predictions.arrays["values"][:, 0], np.asarray(predictions.targets, np.float64).reshape(-1)
        rounded = quadratic_kappa(targets, to_grades(values, halfway_cuts(low, high), low))
        cuts, tuned = tune_cuts(values, targets, low, high)
        path = save_decisions(out_dir, predictions.class_names, {"cuts": cuts}, {"qwk": tuned, "qwk_rounded": rounded})
        print(f"out-of-fold QWK of {len(values)} images: {rounded:.4f} rounded, {tuned:.4f} at tuned cut points "
              f"{np.round(cuts, 3).tolist()} -> {path} (use: predict --model.postprocess {path})")
        return {"cuts": cuts}, {"qwk_rounded": rounded, "qwk_tuned": tuned, "postprocess": str(path)}


    @classmethod
    def report_sections(cls, predictions: Predictions, images: ImageSource) -> list[Section]:
        """Per target: predicted against true, the residuals; the images with the largest errors."""
        values = predictions.arrays["values"].astype(np.float64)
        targets = np.asarray(predictions.targets, np.float64).reshape(values.shape)
        names, error = predictions.class_names, values - targets
        table = Table(["target", "RMSE", "MAE", "mean residual (bias)", "true mean", "true std"],
                      [[n, float(np.sqrt(np.mean(e**2))), float(np.mean(np.abs(e))), float(np.mean(e)), float(t.mean()),
                        float(t.std())] for n, e, t in zip(names, error.T, targets.T)])
        shown = range(min(len(names), 4))
        plots = [scatter(targets[:, j], values[:, j], f"{names[j]}: predicted against true", "true", "predicted") for j in shown]
        plots.append(histogram({names[j]: error[:, j] for j in shown}, "residuals (predicted - true)", "residual", bins=30))
        values_section = Section("Values", tables=[table], plots=plots)
        worst = np.argsort(-np.abs(error).mean(axis=1), kind="stable")
        captions = [", ".join(f"{n} true {targets[i, j]:.3g} predicted {values[i, j]:.3g}" for j, n in enumerate(names[:2]))
                    for i in worst]
        tiles, notes = gallery(predictions.ids[worst], captions, images)
        return [values_section, Section("Worst images", ["largest mean absolute error first", *notes], gallery=tiles)]


register_task("regression", RegressionTask, RegressionDataModule, demo=make_regression,
              summary="image regression: one number per image, or several (Pawpularity, bone age, counts)")
