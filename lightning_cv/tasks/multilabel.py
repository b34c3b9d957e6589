"""Multi-label image classification (Planet style): sigmoid outputs, BCE, per-label thresholds for F2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MultilabelExactMatch, MultilabelFBetaScore

from lightning_cv.data.demos import make_multilabel
from lightning_cv.data.multilabel import MultiLabelDataModule
from lightning_cv.models.backbones import create_classifier
from lightning_cv.models.tta import TTAMode
from lightning_cv.pictures.draw import caption, image_grid, to_uint8_image
from lightning_cv.pictures.plots import ImageSource, Section, Table, gallery, line_plot
from lightning_cv.predictions.files import Predictions
from lightning_cv.predictions.thresholds import (
    GRID,
    fbeta_samples,
    load_thresholds,
    save_thresholds,
    tags,
    tune_thresholds,
)
from lightning_cv.tasks.base import CVTask, ensemble_weights
from lightning_cv.tasks.classification import ClassificationTask
from lightning_cv.tasks.registry import register_task


class SampleFBeta(Metric):
    """F-beta of each image's predicted tag set (probability > threshold) against its true set, averaged
    over images (Planet's metric with beta=2); an image with no true and no predicted tag scores 1."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, beta: float = 2.0, threshold: float = 0.5):
        super().__init__()
        self.beta = beta
        self.threshold = threshold
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        pred, truth = probs > self.threshold, target > 0
        tp = (pred & truth).sum(dim=1).double()
        b2 = self.beta**2
        denom = (1 + b2) * tp + b2 * (truth.sum(dim=1) - tp) + (pred.sum(dim=1) - tp)
        scores = torch.where(denom > 0, (1 + b2) * tp / denom.clamp(min=1), torch.ones_like(tp))
        self.total += scores.sum()
        self.count += scores.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()


def multilabel_metrics(num_labels: int, prefix: str) -> MetricCollection:
    """At threshold 0.5: f2 (sample-averaged, the competition's), f2_macro (mean of per-tag F2) and
    acc (exact match: the whole tag set right, stricter than per-tag accuracy)."""
    return MetricCollection(
        {
            "f2": SampleFBeta(beta=2.0),
            "f2_macro": MultilabelFBetaScore(beta=2.0, num_labels=num_labels, average="macro"),
            "acc": MultilabelExactMatch(num_labels=num_labels),
        },
        prefix=prefix,
    )


def short_names(names: list[str], least: int = 3) -> list[str]:
    """The shortest prefixes (at least `least` characters) that tell the names apart, for captions."""
    out = []
    for name in names:
        n = least
        while n < len(name) and any(o != name and o[:n] == name[:n] for o in names):
            n += 1
        out.append(name[:n])
    return out


def fbeta_tags(probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray | float, beta: float) -> np.ndarray:
    """Each tag's F-beta over the rows (its predictions above its threshold against its 0/1 column); a tag
    never true and never predicted scores 1."""
    pred, truth = probs > np.asarray(thresholds), targets > 0
    tp, fp, fn = (pred & truth).sum(0), (pred & ~truth).sum(0), (~pred & truth).sum(0)
    denom = (1 + beta**2) * tp + beta**2 * fn + fp
    return np.where(denom > 0, (1 + beta**2) * tp / np.maximum(denom, 1), 1.0)


def row_fbeta(probs: np.ndarray, targets: np.ndarray, thresholds: np.ndarray | float, beta: float) -> np.ndarray:
    """Each row's F-beta of its tag set (the terms of the sample-averaged score)."""
    return np.array([fbeta_samples(p[None], t[None], thresholds, beta) for p, t in zip(probs, targets)])


class MultiLabelTask(CVTask):
    """A timm backbone with one logit per tag, BCE with logits, and per-tag decision thresholds.

    The thresholds live in the model (a buffer saved in every checkpoint): each validation epoch of `fit`
    tunes them on that epoch's validation probabilities for the sample-averaged F2, so a checkpoint carries
    the thresholds of its own validation split and `predict` uses them. `val/f2` is at 0.5; `val/f2_tuned`
    at the tuned thresholds (measured on the rows they were tuned on, so optimistic).

    Args:
        backbone: any `timm.list_models()` name, or "small_cnn".
        pretrained: start from the backbone's pretrained (ImageNet) weights, downloaded by timm.
        weights: a local file with those pretrained weights, for machines without network.
        drop_rate: dropout before the classifier.
        tta: test-time augmentation for validate/test/predict: none, hflip, flip (h + v) or d4
            (sigmoid probabilities averaged over the views).
        thresholds: a thresholds.json (e.g. from `lightning-cv cv`, tuned on out-of-fold predictions)
            used instead of the checkpoint's thresholds; during `fit` it fixes them (no tuning).
        beta: the F-beta the thresholds are tuned for (2: Planet's F2).
        **kwargs: the options every task shares (`CVTask`: optimizer, scheduler, image_size ...).
    """

    monitor = "val/f2"
    monitor_mode = "max"
    activation = "sigmoid"
    label_column = "tags"
    inference_options = ("tta", "thresholds")
    training_options = (*CVTask.training_options, "beta")

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        drop_rate: float = 0.0,
        tta: TTAMode = "none",
        thresholds: str | None = None,
        beta: float = 2.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.tta = tta
        self.beta = beta
        self.thresholds_file = thresholds
        self.register_buffer("label_thresholds", torch.full((self.num_classes,), 0.5))
        self._val_probs: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    def build_model(self) -> nn.Module:
        hp = self.hparams
        return create_classifier(hp.backbone, self.num_classes, self.in_chans, hp.pretrained, hp.weights, hp.drop_rate)

    def build_criterion(self) -> nn.Module:
        return nn.BCEWithLogitsLoss()

    @property
    def head(self) -> nn.Module:
        return self.model.get_classifier()

    def make_metrics(self, prefix: str) -> MetricCollection:
        return multilabel_metrics(self.num_classes, prefix)

    def compute_loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        """BCE with logits over the tags (float32)."""
        return self.criterion(outputs.float(), batch["target"].float())

    def metric_inputs(self, outputs: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs.float().sigmoid(), batch["target"].long()

    def predict_outputs(self, outputs: torch.Tensor, batch: dict) -> dict[str, Any]:
        return {"probs": outputs.float().sigmoid()}

    def prediction_meta(self, datamodule: Any) -> dict[str, Any]:
        return {"thresholds": self.label_thresholds.detach().cpu().numpy().round(6).tolist(), "beta": self.beta}

    # -- thresholds ---------------------------------------------------------------------------------
    def _use_thresholds_file(self) -> None:
        """Load --model.thresholds into the buffer (after any checkpoint was restored)."""
        if self.thresholds_file:
            values = load_thresholds(self.thresholds_file, self.class_names)
            self.label_thresholds.copy_(torch.as_tensor(values, dtype=self.label_thresholds.dtype))
            rank_zero_info(f"thresholds from {self.thresholds_file}: {np.round(values, 2).tolist()}")

    def on_validation_start(self) -> None:
        self._use_thresholds_file()

    def on_test_start(self) -> None:
        self._use_thresholds_file()

    def on_predict_start(self) -> None:
        self._use_thresholds_file()
        shown = ", ".join(f"{n} {t:.2f}" for n, t in zip(self.class_names, self.label_thresholds.tolist()))
        rank_zero_info(f"tag thresholds: {shown}")

    def on_validation_epoch_start(self) -> None:
        self._val_probs, self._val_targets = [], []

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        result = self._step(batch, "val")
        self._val_probs.append(result["outputs"].float().sigmoid().cpu())
        self._val_targets.append(batch["target"].float().cpu())
        return result

    def _gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """All ranks' rows (ranks may hold different counts: padded to the largest, then trimmed)."""
        if self.trainer.world_size == 1:
            return rows
        counts = self.all_gather(torch.tensor(len(rows), device=self.device)).flatten().tolist()
        padded = torch.zeros(max(counts), *rows.shape[1:], dtype=rows.dtype, device=self.device)
        padded[: len(rows)] = rows.to(self.device)
        gathered = self.all_gather(padded)
        return torch.cat([part[:n] for part, n in zip(gathered, counts)]).cpu()

    def on_validation_epoch_end(self) -> None:
        """Tune the thresholds on this epoch's validation probabilities (all ranks gathered), log the F2
        they reach, and keep them in the model when fitting (unless a thresholds file fixes them)."""
        if self.trainer.sanity_checking or not self._val_probs:
            return
        probs = self._gather_rows(torch.cat(self._val_probs)).numpy()
        targets = self._gather_rows(torch.cat(self._val_targets)).numpy()
        self._val_probs, self._val_targets = [], []
        tuned = tune_thresholds(probs, targets, beta=self.beta)
        self.log("val/f2_tuned", fbeta_samples(probs, targets, tuned, self.beta), sync_dist=False)
        if self.trainer.state.fn == TrainerFn.FITTING and not self.thresholds_file:
            self.label_thresholds.copy_(torch.as_tensor(tuned, dtype=self.label_thresholds.dtype))

    # -- pictures ------------------------------------------------------------------------------------
    def draw_validation(self, batch: dict, outputs: torch.Tensor) -> np.ndarray:
        """Validation images captioned "true>predicted" tags (at the model's thresholds), green when the
        sets match, red when not."""
        short = short_names(self.class_names)
        predicted = tags(outputs.float().sigmoid().cpu().numpy(), short, self.label_thresholds.cpu().numpy())
        true = tags(batch["target"].float().cpu().numpy(), short, 0.5)
        tiles = [caption(to_uint8_image(image), f"{t}>{p}", ok=t == p, scale=max(2, 192 // image.shape[-1]))
                 for image, t, p in zip(batch["image"], true, predicted)]
        return image_grid(tiles)

    # -- predictions ---------------------------------------------------------------------------------------
    # A table like classification's: the image, its tags (above the thresholds), a probability per tag.
    submission = classmethod(ClassificationTask.submission.__func__)
    oof_columns = classmethod(ClassificationTask.oof_columns.__func__)

    @classmethod
    def labels(cls, predictions: Predictions) -> np.ndarray:
        """Space-separated tags: each above its threshold, at least the most likely one."""
        thresholds = predictions.meta.get("thresholds", 0.5)
        return np.asarray(tags(predictions.arrays["probs"], predictions.class_names, np.asarray(thresholds)), dtype=object)

    @classmethod
    def combine(cls, predictions: list[Predictions], method: str = "mean", weights: list[float] | None = None,
                store: Path | None = None) -> Predictions:
        """Mean probabilities, or per tag the (weighted) share of models above their threshold (a vote,
        decided by a majority: its threshold becomes 0.5)."""
        if method != "vote":
            return super().combine(predictions, method, weights, store)
        w = ensemble_weights(weights, len(predictions))
        first = predictions[0]
        above = np.stack([p.arrays["probs"] > np.asarray(p.meta.get("thresholds", 0.5)) for p in predictions])
        arrays = {**first.arrays, "probs": np.tensordot(w, above.astype(np.float32), axes=1).astype(np.float32)}
        return Predictions(first.task, first.ids, arrays, first.class_names, {**first.meta, "thresholds": 0.5})

    @classmethod
    def score(cls, predictions: Predictions) -> dict[str, float]:
        """Sample-averaged F-beta at 0.5, exact-match accuracy, and F-beta at thresholds tuned on these
        same rows (f2_tuned: optimistic, like the checkpoint's own)."""
        probs, targets = predictions.arrays["probs"], predictions.targets
        beta = float(predictions.meta.get("beta", 2.0))
        exact = ((probs > 0.5) == (targets > 0)).all(axis=1).mean()
        return {"f2": fbeta_samples(probs, targets, 0.5, beta), "acc": float(exact),
                "f2_tuned": fbeta_samples(probs, targets, tune_thresholds(probs, targets, beta), beta)}

    @classmethod
    def tune(cls, predictions: Predictions, out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """Per-tag thresholds tuned on the out-of-fold probabilities, saved as out_dir/thresholds.json (for
        `predict --model.thresholds` and `ensemble`), with the OOF F-beta at 0.5 and at them."""
        probs, targets = predictions.arrays["probs"], predictions.targets
        beta = float(predictions.meta.get("beta", 2.0))
        thresholds = tune_thresholds(probs, targets, beta)
        tuned = fbeta_samples(probs, targets, thresholds, beta)
        path = Path(out_dir) / "thresholds.json"
        save_thresholds(path, predictions.class_names, thresholds, beta, tuned)
        print(f"out-of-fold F{beta:g} of {len(probs)} rows: {fbeta_samples(probs, targets, 0.5, beta):.4f} at 0.5, "
              f"{tuned:.4f} with per-tag thresholds -> {path} (use: predict --model.thresholds {path})")
        report = {"rows": len(probs), "f2": fbeta_samples(probs, targets, 0.5, beta), "f2_tuned": tuned, "thresholds": str(path)}
        return {"thresholds": thresholds.round(6).tolist()}, report


    @classmethod
    def report_sections(cls, predictions: Predictions, images: ImageSource) -> list[Section]:
        """Per-tag F-beta at 0.5 and at the tuned thresholds, F-beta against the threshold per tag, and the
        images whose tag sets are predicted worst."""
        probs, targets = predictions.arrays["probs"].astype(np.float64), np.asarray(predictions.targets)
        names, beta = predictions.class_names, float(predictions.meta.get("beta", 2.0))
        tuned = np.broadcast_to(np.asarray(predictions.meta.get("thresholds", 0.5), np.float64), (len(names),))
        plain, at_tuned = fbeta_tags(probs, targets, 0.5, beta), fbeta_tags(probs, targets, tuned, beta)
        f = f"F{beta:g}"
        table = Table(["tag", "support", "threshold", f"{f} at 0.5", f"{f} at threshold"],
                      [[n, int(s), t, a, b] for n, s, t, a, b in zip(names, (targets > 0).sum(0), tuned, plain, at_tuned)])
        curves = np.stack([fbeta_tags(probs, targets, t, beta) for t in GRID])
        series = {n: (GRID, curves[:, j]) for j, n in enumerate(names)}
        series[f"sample {f} (one threshold)"] = (GRID, [fbeta_samples(probs, targets, t, beta) for t in GRID])
        plot = line_plot(series, f"per-tag {f} against the threshold", "threshold", f,
                         styles={f"sample {f} (one threshold)": "--"},
                         colors={f"sample {f} (one threshold)": "black"}, marks=dict(zip(names, tuned)))
        tags_section = Section("Tags", [f"{f} at 0.5 and at each tag's threshold (tuned on these out-of-fold rows "
                                        "when the run tuned them; dotted lines in the plot)"], [table], [plot])
        scores = row_fbeta(probs, targets, tuned, beta)
        order = np.argsort(scores, kind="stable")
        order = order[scores[order] < 1]
        true, pred = tags(targets, names, 0.5), tags(probs, names, tuned)
        captions = [f"{f} {scores[i]:.2f}; true [{true[i]}], predicted [{pred[i]}]" for i in order]
        tiles, notes = gallery(predictions.ids[order], captions, images)
        worst = Section("Worst tag sets", [f"{len(order)} of {len(scores)} images have a wrong tag set at the thresholds; "
                                           "the lowest per-image score first", *notes], gallery=tiles)
        return [tags_section, worst]


register_task("multilabel", MultiLabelTask, MultiLabelDataModule, demo=make_multilabel,
              summary="multi-label classification: space-separated tags per image (Planet)")
