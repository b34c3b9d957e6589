"""torchmetrics collections per task, keyed "split/metric"."""

from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryJaccardIndex,
    MulticlassAccuracy,
    MulticlassCohenKappa,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)
from torchmetrics.segmentation import DiceScore, MeanIoU
from torchmetrics.wrappers.abstract import WrapperMetric

from lightning_cv.io.labels import integer_names
from lightning_cv.io.masks import component_ious, instance_f2


def is_ordinal(class_names: list[str]) -> bool:
    """Classes named by integers are grades (diabetic retinopathy 0-4, ISUP 0-5): scored by QWK too."""
    return len(class_names) > 2 and integer_names(class_names)


def classification_metrics(num_classes: int, prefix: str, ordinal: bool = False) -> MetricCollection:
    """Accuracy and macro F1 of the argmax; for grades (`ordinal`), quadratic weighted kappa as well."""
    metrics: dict[str, Metric] = {
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "f1": MulticlassF1Score(num_classes, average="macro"),
    }
    if ordinal:
        metrics["qwk"] = MulticlassCohenKappa(num_classes, weights="quadratic")
    return MetricCollection(metrics, prefix=prefix)


def confusion_matrix(num_classes: int) -> MulticlassConfusionMatrix:
    return MulticlassConfusionMatrix(num_classes)


class OneClass(WrapperMetric):
    """A binary metric of one class of index masks (pixels == index), so it logs as a scalar."""

    def __init__(self, metric: Metric, index: int):
        super().__init__()
        self.metric = metric
        self.index = index

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.metric.update((preds == self.index).long(), (target == self.index).long())

    def compute(self) -> torch.Tensor:
        return self.metric.compute()

    def reset(self) -> None:
        self.metric.reset()
        super().reset()


class MeanOverImages(Metric):
    """The mean of a per-image (or per image x class) score over every image of the split, all ranks summed;
    a subclass's `update` adds its scores with `add`."""

    full_state_update = False
    higher_is_better = True

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def add(self, scores: torch.Tensor) -> None:
        self.total += scores.double().sum()
        self.count += scores.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()


class IoUMap(MeanOverImages):
    """TGS Salt's metric per image, averaged: the share of IoU thresholds 0.5 ... 0.95 the predicted
    foreground clears; an empty truth scores 1 when predicted empty, else 0 (and an empty prediction 0)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("thresholds", torch.arange(0.5, 1.0, 0.05), persistent=False)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.flatten(1) > 0, target.flatten(1) > 0
        inter, union = (pred & target).sum(1).double(), (pred | target).sum(1).double()
        iou = inter / union.clamp(min=1)
        cleared = (iou[:, None] > self.thresholds.to(iou)).double().mean(1)
        empty = (pred.sum(1) == 0) | (target.sum(1) == 0)
        self.add(torch.where(empty, (pred.sum(1) == target.sum(1)).double(), cleared))


class F2Instances(MeanOverImages):
    """Airbus' metric per image, averaged: F2 of the predicted instances (connected components) matched to
    the true ones over IoU thresholds 0.5 ... 0.95 (`instance_f2`). Computed on the CPU."""

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.detach().cpu().numpy(), target.detach().cpu().numpy()
        self.add(torch.tensor([instance_f2(component_ious(p, t)) for p, t in zip(pred, target)], dtype=torch.float64))


def segmentation_metrics(class_names: list[str], prefix: str) -> MetricCollection:
    """Pixel metrics of index masks (N, H, W), pooled over the split: dice, iou, pixel_acc.

    Binary (2 classes): dice and IoU of the foreground, iou_map (TGS Salt's per-image metric) and
    f2_instances (Airbus' per-image F2 of matched connected components). Multiclass: dice and iou are means
    over the foreground classes (class 0 is background), plus dice_<class> and iou_<class> for each of them.
    """
    num_classes = len(class_names)
    if num_classes <= 2:
        metrics: dict[str, Metric] = {"dice": BinaryF1Score(), "iou": BinaryJaccardIndex(), "pixel_acc": BinaryAccuracy(),
                                      "iou_map": IoUMap(), "f2_instances": F2Instances()}
    else:
        metrics = {
            # input_format="index": the default "one-hot" silently misreads index masks.
            "dice": DiceScore(num_classes, include_background=False, average="macro", input_format="index",
                              aggregation_level="global"),
            "iou": MeanIoU(num_classes, include_background=False, input_format="index"),
            "pixel_acc": MulticlassAccuracy(num_classes, average="micro"),
        }
        for k, name in enumerate(class_names[1:], start=1):
            metrics[f"dice_{name}"] = OneClass(BinaryF1Score(), k)
            metrics[f"iou_{name}"] = OneClass(BinaryJaccardIndex(), k)
    return MetricCollection(metrics, prefix=prefix)
