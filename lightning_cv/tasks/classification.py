"""Single-label image classification with a timm backbone (also the MNIST task), with the training
tricks competitions use (mixup/cutmix, class weights) and an optional coarse-group head."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy

from lightning_cv.data.classification import ClassificationDataModule
from lightning_cv.data.demos import make_cls, make_mnist
from lightning_cv.data.mnist import MNISTDataModule
from lightning_cv.errors import UserInputError
from lightning_cv.models.backbones import create_classifier
from lightning_cv.models.metrics import classification_metrics, confusion_matrix, is_ordinal
from lightning_cv.models.tta import TTAMode
from lightning_cv.pictures.draw import caption, image_grid, to_uint8_image
from lightning_cv.pictures.plots import ImageSource, Section, Table, confusion_plot, gallery, reliability_plot
from lightning_cv.predictions.files import Predictions
from lightning_cv.predictions.submission import follow_sample
from lightning_cv.tasks.base import CVTask
from lightning_cv.tasks.registry import register_task


# -- hierarchical labels: coarse groups of fine classes --------------------------------------------------
def group_members(groups: dict[str, list[str]], class_names: list[str]) -> torch.Tensor:
    """The (groups, classes) 0/1 membership matrix; every class must be in exactly one group."""
    if not groups:
        raise UserInputError("--model.groups is empty: give each group's classes, e.g. {animal: [cat, dog], vehicle: [car]}")
    index = {name: i for i, name in enumerate(class_names)}
    member = torch.zeros(len(groups), len(class_names))
    seen: dict[str, str] = {}
    for g, (group, names) in enumerate(groups.items()):
        for name in names:
            if name not in index:
                raise UserInputError(f"--model.groups: {name!r} (group {group!r}) is not a class; the classes are {class_names}")
            if name in seen:
                raise UserInputError(f"--model.groups: class {name!r} is in two groups, {seen[name]!r} and {group!r}")
            seen[name] = group
            member[g, index[name]] = 1.0
    missing = [name for name in class_names if name not in seen]
    if missing:
        raise UserInputError(f"--model.groups: class {missing[0]!r} is in no group (every class needs exactly one)")
    return member


def group_log_probs(log_probs: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """(N, classes) log-probabilities (or logits) -> (N, groups) log-sum-exp over each group's classes."""
    masked = log_probs.float().unsqueeze(1).masked_fill(member == 0, float("-inf"))
    return masked.logsumexp(dim=-1)


def hierarchical_log_probs(fine: torch.Tensor, coarse: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """log p(class) = log p(class | its group) + log p(group): the fine logits renormalised within each
    group, times the coarse head's group probabilities; the exp sums to 1 over the classes."""
    group_of = member.argmax(dim=0)  # (classes,) group index of each class
    fine = fine.float()
    within = fine - group_log_probs(fine, member)[:, group_of]
    return within + coarse.float().log_softmax(dim=1)[:, group_of]


class HierarchicalClassifier(nn.Module):
    """A timm classifier plus a linear head for the coarse group, both on the pooled features.

    `forward` returns the combined log-probabilities (one tensor, export-ready); in training mode it
    returns the raw fine and coarse logits side by side, (N, classes + groups), for the two losses.
    """

    def __init__(self, net: nn.Module, member: torch.Tensor):
        super().__init__()
        missing = [a for a in ("forward_features", "forward_head", "get_classifier") if not hasattr(net, a)]
        if missing:
            raise UserInputError(f"--model.groups needs a backbone with timm's {'/'.join(missing)} (pooled features); "
                                 f"{type(net).__name__} has none")
        classifier = net.get_classifier()
        width = classifier.in_features if isinstance(classifier, nn.Linear) else getattr(net, "head_hidden_size", net.num_features)
        self.net = net
        self.coarse = nn.Linear(width, member.shape[0])
        self.register_buffer("member", member, persistent=False)
        self.pretrained_cfg = getattr(net, "pretrained_cfg", None) or {}

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        return self.net.get_classifier()(pooled), self.coarse(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine, coarse = self.heads(x)
        if self.training:
            return torch.cat([fine, coarse], dim=1)
        return hierarchical_log_probs(fine, coarse, self.member)

    def get_classifier(self) -> nn.Module:
        return nn.ModuleList([self.net.get_classifier(), self.coarse])


def balanced_class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse class frequency, n / (classes * count), as scikit-learn's "balanced"; 0 for absent classes."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(targets) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)



def _fill_class_weights(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Checkpoints from before class weights have no `criterion.weight`: load them as unweighted."""
    if isinstance(getattr(module, "weight", None), torch.Tensor) and state_dict and f"{prefix}weight" not in state_dict:
        state_dict[f"{prefix}weight"] = torch.ones_like(module.weight)


class ClassificationTask(CVTask):
    """A timm backbone with a `num_classes` head, cross-entropy, accuracy and macro F1.

    Args:
        backbone: any `timm.list_models()` name, or "small_cnn" (a tiny CNN for MNIST-sized inputs).
        pretrained: start from the backbone's pretrained (ImageNet) weights, downloaded by timm.
        weights: a local file with those pretrained weights, for machines without network.
        drop_rate: dropout before the classifier.
        label_smoothing: cross-entropy label smoothing (with mixup/cutmix, applied to the mixed targets).
        tta: test-time augmentation for validate/test/predict: none, hflip, flip (h + v) or d4
            (probabilities averaged over the views).
        mixup_alpha: mixup (timm `Mixup`) of training batches, Beta(alpha, alpha) mixing; 0 is off.
        cutmix_alpha: cutmix of training batches; 0 is off. With both on, each batch takes one of them.
        mixup_prob: probability that a training batch is mixed at all.
        mixup_switch_prob: with both on, probability of cutmix rather than mixup.
        class_weights: cross-entropy class weights: "balanced" (inverse class frequency of the training
            split) or one weight per class; saved in the checkpoint.
        groups: coarse groups of the classes, {group: [class, ...]}, every class in exactly one group:
            adds a coarse head on the pooled features, trained with `coarse_weight` x its cross-entropy;
            predictions are p(class | its group) x p(group), and `val/coarse_acc` is logged.
        coarse_weight: weight of the coarse cross-entropy.
        **kwargs: the options every task shares (`CVTask`: optimizer, scheduler, image_size ...).
    """

    monitor = "val/acc"
    monitor_mode = "max"
    label_column: ClassVar[str] = "label"
    training_options = (*CVTask.training_options, "label_smoothing", "mixup_alpha", "cutmix_alpha", "mixup_prob",
                        "mixup_switch_prob", "class_weights", "coarse_weight")

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        drop_rate: float = 0.0,
        label_smoothing: float = 0.0,
        tta: TTAMode = "none",
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        class_weights: Literal["balanced"] | list[float] | None = None,
        groups: dict[str, list[str]] | None = None,
        coarse_weight: float = 1.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.tta = tta
        self.label_smoothing = label_smoothing
        self.coarse_weight = coarse_weight
        self.class_weights = class_weights
        self.mixup = self._make_mixup(mixup_alpha, cutmix_alpha, mixup_prob, mixup_switch_prob)
        self._warned_odd_batch = False
        self.val_confusion = confusion_matrix(self.num_classes)
        if self.num_classes == 2:  # binary competitions are scored by ROC AUC of P(positive)
            self.val_auc, self.test_auc = BinaryAUROC(), BinaryAUROC()
        self.val_logloss, self.test_logloss = MeanMetric(), MeanMetric()
        if self.groups is not None:
            self.val_coarse_acc = MulticlassAccuracy(len(self.groups), average="micro")
            self.test_coarse_acc = MulticlassAccuracy(len(self.groups), average="micro")

    # -- build hooks ------------------------------------------------------------------------------------
    @property
    def groups(self) -> dict[str, list[str]] | None:
        groups = self.hparams.get("groups")
        return dict(groups) if groups is not None else None

    def build_model(self) -> nn.Module:
        hp = self.hparams
        model = create_classifier(hp.backbone, self.num_classes, self.in_chans, hp.pretrained, hp.weights, hp.drop_rate)
        if self.groups is not None:
            model = HierarchicalClassifier(model, group_members(self.groups, self.class_names))
        return model

    def build_criterion(self) -> nn.Module:
        # The weight buffer always exists (ones when unweighted), so checkpoints load strictly either way.
        weights = self._initial_class_weights(self.hparams.get("class_weights"))
        criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=self.hparams.get("label_smoothing", 0.0))
        criterion.register_load_state_dict_pre_hook(_fill_class_weights)
        return criterion

    # -- tricks -------------------------------------------------------------------------------------
    def _initial_class_weights(self, class_weights: str | list[float] | None) -> torch.Tensor:
        if class_weights is None or class_weights == "balanced":
            return torch.ones(self.num_classes)  # "balanced" is filled from the training split in setup("fit")
        if isinstance(class_weights, str):
            raise UserInputError(f"--model.class_weights {class_weights!r}: use balanced, or one weight per class")
        if len(class_weights) != self.num_classes or any(w < 0 for w in class_weights):
            raise UserInputError(f"--model.class_weights: {len(class_weights)} weights given for {self.num_classes} classes "
                                 f"{self.class_names[:10]}; give one non-negative weight per class, in that order")
        return torch.tensor([float(w) for w in class_weights])

    def _make_mixup(self, mixup_alpha: float, cutmix_alpha: float, prob: float, switch_prob: float) -> Any:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise UserInputError(f"--model.mixup_alpha / cutmix_alpha must be >= 0, got {mixup_alpha} / {cutmix_alpha}")
        if mixup_alpha == 0 and cutmix_alpha == 0:
            return None
        from timm.data import Mixup

        return Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob, switch_prob=switch_prob,
                     label_smoothing=self.label_smoothing, num_classes=self.num_classes)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.class_weights == "balanced":
            datamodule = self.trainer.datamodule
            if datamodule is None or not hasattr(datamodule, "train_targets"):
                raise UserInputError("--model.class_weights balanced counts the training split's classes: it needs a "
                                     "lightning_cv DataModule (or give the weights as a list)")
            weights = balanced_class_weights(datamodule.train_targets(), self.num_classes)
            self.criterion.weight.copy_(weights.to(self.criterion.weight))
            rank_zero_info(f"class weights (balanced): {dict(zip(self.class_names, [round(w, 3) for w in weights.tolist()]))}")

    def on_fit_start(self) -> None:
        batch_size = getattr(self.trainer.datamodule, "batch_size", None)
        if self.mixup is not None and batch_size is not None and batch_size % 2:
            raise UserInputError(f"mixup/cutmix mixes each batch with its reverse and needs an even batch size; "
                                 f"--data.batch_size is {batch_size}")

    def mix(self, batch: dict) -> dict:
        """Mixup/cutmix the images and turn the targets into mixed, smoothed probabilities ("soft_target").

        timm mixes a batch with its reverse, so it needs an even count: a short odd batch (a training
        split not larger than one batch) keeps its last image unmixed."""
        from timm.data.mixup import mixup_target

        images, target = batch["image"], batch["target"]
        n = images.shape[0] - images.shape[0] % 2
        if n < images.shape[0] and not self._warned_odd_batch:
            self._warned_odd_batch = True
            rank_zero_warn(f"mixup/cutmix: a batch of {images.shape[0]} images is odd; its last image is not mixed")
        if n == 0:
            return {**batch, "soft_target": mixup_target(target, self.num_classes, 1.0, self.label_smoothing)}
        mixed, soft = self.mixup(images[:n].clone(), target[:n])
        if n < images.shape[0]:
            mixed = torch.cat([mixed, images[n:]])
            soft = torch.cat([soft, mixup_target(target[n:], self.num_classes, 1.0, self.label_smoothing)])
        return {**batch, "image": mixed, "soft_target": soft}

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        if self.mixup is not None:
            batch = self.mix(batch)
        return self._step(batch, "train")

    def compute_loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        """Cross-entropy (soft targets after mixup, class weights if set); with groups, plus
        `coarse_weight` x the coarse cross-entropy, the coarse target derived from the class target."""
        if self.groups is None:
            return self._class_loss(outputs, batch)
        fine, coarse = self.split_outputs(outputs)
        member, soft = self.model.member, batch.get("soft_target")
        coarse_target = member.argmax(dim=0)[batch["target"]] if soft is None else soft @ member.T
        coarse_smoothing = self.label_smoothing if soft is None else 0.0
        coarse_loss = F.cross_entropy(coarse, coarse_target, label_smoothing=coarse_smoothing)
        return self._class_loss(fine, batch) + self.coarse_weight * coarse_loss

    def _class_loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """The class cross-entropy (float32, class weights): on the mixed, already smoothed targets after
        mixup, else the criterion's (with label smoothing) on the class indices."""
        soft = batch.get("soft_target")
        if soft is None:
            return self.criterion(logits.float(), batch["target"])
        return F.cross_entropy(logits.float(), soft, weight=self.criterion.weight)

    def split_outputs(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fine, coarse) logits: raw in training, else the combined log-probabilities and their group sums
        (cross-entropy treats both alike: log-softmax leaves normalised log-probabilities unchanged)."""
        outputs = outputs.float()
        if outputs.shape[1] == self.num_classes + len(self.groups):
            return outputs[:, : self.num_classes], outputs[:, self.num_classes :]
        return outputs, group_log_probs(outputs, self.model.member)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        _fill_class_weights(self.criterion, checkpoint.get("state_dict") or {}, "criterion.")
        super().on_load_checkpoint(checkpoint)

    @property
    def head(self) -> nn.Module:
        return self.model.get_classifier()

    def make_metrics(self, prefix: str) -> MetricCollection:
        return classification_metrics(self.num_classes, prefix, ordinal=is_ordinal(self.class_names))

    def metric_inputs(self, outputs: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs.argmax(dim=1), batch["target"]

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        result = self._step(batch, "val")
        self.val_confusion.update(result["outputs"].argmax(dim=1), batch["target"])
        self._coarse_accuracy(result["outputs"], batch, "val")
        self._probability_metrics(result["outputs"], batch, "val")
        return result

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        result = self._step(batch, "test")
        self._coarse_accuracy(result["outputs"], batch, "test")
        self._probability_metrics(result["outputs"], batch, "test")
        return result

    def _probability_metrics(self, outputs: torch.Tensor, batch: dict, split: str) -> None:
        """`<split>/logloss` (mean negative log-likelihood of the true class, no label smoothing) and,
        with two classes, `<split>/auc` of P(the second class)."""
        n, logits = outputs.shape[0], outputs.float()
        logloss = getattr(self, f"{split}_logloss")
        logloss.update(F.cross_entropy(logits, batch["target"], reduction="none"))
        self.log(f"{split}/logloss", logloss, on_epoch=True, batch_size=n)
        if self.num_classes == 2:
            auc = getattr(self, f"{split}_auc")
            auc.update(logits.softmax(dim=1)[:, 1], batch["target"])
            self.log(f"{split}/auc", auc, on_epoch=True, batch_size=n, prog_bar=True)

    def _coarse_accuracy(self, outputs: torch.Tensor, batch: dict, split: str) -> None:
        if self.groups is None:
            return
        member = self.model.member
        metric = getattr(self, f"{split}_coarse_acc")
        metric.update(group_log_probs(outputs, member).argmax(dim=1), member.argmax(dim=0)[batch["target"]])
        self.log(f"{split}/coarse_acc", metric, on_epoch=True, batch_size=outputs.shape[0], prog_bar=True)

    def predict_outputs(self, outputs: torch.Tensor, batch: dict) -> dict[str, Any]:
        return {"probs": outputs.float().softmax(dim=1)}

    def draw_validation(self, batch: dict, outputs: torch.Tensor) -> np.ndarray:
        """Validation images captioned "true>predicted", green when right, red when wrong."""
        preds = outputs.argmax(dim=1).tolist()
        tiles = []
        for image, target, pred in zip(batch["image"], batch["target"].tolist(), preds):
            text = f"{self.class_names[target]}>{self.class_names[pred]}"
            tiles.append(caption(to_uint8_image(image), text, ok=target == pred, scale=max(1, 128 // image.shape[-1])))
        return image_grid(tiles)

    def wandb_table(self, batch: dict, outputs: torch.Tensor) -> tuple[list[str], list[list[Any]]]:
        """Image, true label, predicted label and its probability."""
        confidence, preds = outputs.float().softmax(dim=1).max(dim=1)
        rows = [[to_uint8_image(image), self.class_names[t], self.class_names[p], round(c, 4)]
                for image, t, p, c in zip(batch["image"], batch["target"].tolist(), preds.tolist(), confidence.tolist())]
        return ["image", "truth", "prediction", "probability"], rows

    # -- predictions ---------------------------------------------------------------------------------------
    def prediction_meta(self, datamodule: Any) -> dict[str, Any]:
        return {"submission_labels": bool(getattr(datamodule, "submission_labels", False))}

    @classmethod
    def labels(cls, predictions: Predictions) -> np.ndarray:
        """The predicted label of each row (argmax)."""
        return np.asarray(predictions.class_names, dtype=object)[predictions.arrays["probs"].argmax(axis=1)]

    @classmethod
    def submission(cls, predictions: Predictions, sample: pd.DataFrame | None = None,
                   source: str | Path = "sample submission") -> pd.DataFrame:
        """image, label, prob_<class>; in a sample's shape, a class-name column gets that class's
        probability and any other column the label, or with two classes P(the positive, second class)
        unless the predictions were made with --data.submission_labels true."""
        probs, names = predictions.arrays["probs"], predictions.class_names
        column, labels = cls.label_column, cls.labels(predictions)
        values = {column: labels, **{name: probs[:, j].round(6) for j, name in enumerate(names)}}
        if len(names) == 2 and cls.activation == "softmax" and not predictions.meta.get("submission_labels"):
            # Binary (AUC, log loss): a column not named after a class gets P(the second, positive class).
            values = {"positive": probs[:, 1].round(6), **values}
        if sample is not None:
            return follow_sample(predictions.ids, values, sample, source)
        frame = pd.DataFrame({"image": predictions.ids, column: labels,
                              **{f"prob_{name}": probs[:, j].round(6) for j, name in enumerate(names)}})
        return frame.sort_values("image", kind="stable").reset_index(drop=True)

    @classmethod
    def oof_columns(cls, predictions: Predictions) -> pd.DataFrame:
        frame = cls.submission(predictions).set_index("image").loc[predictions.ids].reset_index(drop=True)
        return frame.rename(columns={frame.columns[0]: "pred"})

    @classmethod
    def score(cls, predictions: Predictions) -> dict[str, float]:
        """Accuracy, macro F1 and log loss; with two classes ROC AUC of P(positive); for grades QWK."""
        from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, log_loss, roc_auc_score

        probs, targets = predictions.arrays["probs"], np.asarray(predictions.targets)
        pred, labels = probs.argmax(axis=1), np.arange(probs.shape[1])
        scores = {"acc": float(accuracy_score(targets, pred)),
                  "f1": float(f1_score(targets, pred, average="macro", labels=labels, zero_division=0)),
                  "logloss": float(log_loss(targets, probs.astype(np.float64), labels=labels))}
        if probs.shape[1] == 2 and len(np.unique(targets)) == 2:
            scores["auc"] = float(roc_auc_score(targets, probs[:, 1]))
        if is_ordinal(predictions.class_names):
            scores["qwk"] = float(cohen_kappa_score(targets, pred, labels=labels, weights="quadratic"))
        return scores


    @classmethod
    def report_sections(cls, predictions: Predictions, images: ImageSource) -> list[Section]:
        """Confusion matrix, per-class precision / recall / F1, a reliability plot and the most confidently
        wrong images."""
        from sklearn.metrics import confusion_matrix as counts
        from sklearn.metrics import precision_recall_fscore_support

        probs, targets, names = predictions.arrays["probs"].astype(np.float64), np.asarray(predictions.targets), predictions.class_names
        pred, labels = probs.argmax(axis=1), np.arange(probs.shape[1])
        precision, recall, f1, support = precision_recall_fscore_support(targets, pred, labels=labels, zero_division=0)
        table = Table(["class", "precision", "recall", "F1", "support"],
                      [[n, p, r, f, int(s)] for n, p, r, f, s in zip(names, precision, recall, f1, support)])
        confidence = probs.max(axis=1)
        classes = Section("Classes", tables=[table], plots=[confusion_plot(counts(targets, pred, labels=labels), names),
                                                             reliability_plot(confidence, pred == targets)])
        wrong = np.flatnonzero(pred != targets)
        wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
        captions = [f"true {names[targets[i]]} ({probs[i, targets[i]]:.2f}), predicted {names[pred[i]]} ({confidence[i]:.2f})"
                    for i in wrong]
        tiles, notes = gallery(predictions.ids[wrong], captions, images)
        worst = Section("Most confidently wrong", [f"{len(wrong)} of {len(pred)} out-of-fold images are misclassified; "
                                                   "the most confident mistakes first (label noise? a bad crop?)", *notes],
                        gallery=tiles)
        return [classes, worst]


register_task("cls", ClassificationTask, ClassificationDataModule, demo=make_cls,
              summary="image classification: one label per image (CSV or one folder per class)")
register_task("mnist", ClassificationTask, MNISTDataModule, demo=make_mnist,
              summary="MNIST digits from the four IDX files")
