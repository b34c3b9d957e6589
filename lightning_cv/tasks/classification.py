"""Single-label image classification with a timm backbone (also the MNIST task)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MetricCollection

from lightning_cv.augment import to_uint8_image
from lightning_cv.backbones import create_classifier
from lightning_cv.callbacks import caption, image_grid
from lightning_cv.metrics import classification_metrics, confusion_matrix
from lightning_cv.tasks.base import CVTask, _adamw
from lightning_cv.tta import TTAMode
from lightning_cv.writers import ClassificationWriter


class ClassificationTask(CVTask):
    """A timm backbone with a `num_classes` head, cross-entropy, accuracy and macro F1.

    Args:
        backbone: any `timm.list_models()` name, or "small_cnn" (a tiny CNN for MNIST-sized inputs).
        pretrained: start from the backbone's pretrained (ImageNet) weights, downloaded by timm.
        weights: a local file with those pretrained weights, for machines without network.
        drop_rate: dropout before the classifier.
        label_smoothing: cross-entropy label smoothing.
        image_size: the training resolution, used for the example input (export, summaries).
        tta: test-time augmentation for validate/test/predict: none, hflip, flip (h + v) or d4
            (probabilities averaged over the views).
        channels_last: run the model in channels_last memory format (often faster on GPUs with tensor cores).
        compile: torch.compile the model (slow first steps; pays off on long GPU runs).
    """

    monitor = "val/acc"
    monitor_mode = "max"

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        class_names: list[str] | None = None,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        drop_rate: float = 0.0,
        label_smoothing: float = 0.0,
        image_size: int = 64,
        tta: TTAMode = "none",
        optimizer: OptimizerCallable = _adamw,
        scheduler: LRSchedulerCallable | None = None,
        backbone_lr_scale: float = 1.0,
        freeze_backbone_epochs: int = 0,
        channels_last: bool = False,
        compile: bool = False,
    ):
        super().__init__(num_classes, in_chans, class_names, optimizer, scheduler, backbone_lr_scale, freeze_backbone_epochs,
                         channels_last=channels_last, compile=compile)
        # tta is chosen at inference: kept out of the hparams, which `--ckpt_path` would restore over the command line.
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "tta"])
        self.image_size = image_size
        self.tta = tta
        self.model = create_classifier(backbone, num_classes, in_chans, pretrained, weights, drop_rate)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self._init_normalization()
        self.val_confusion = confusion_matrix(num_classes)

    def example_size(self) -> tuple[int, int]:
        return (self.image_size, self.image_size)

    @property
    def head(self) -> nn.Module:
        return self.model.get_classifier()

    def make_metrics(self, prefix: str) -> MetricCollection:
        return classification_metrics(self.num_classes, prefix)

    def metric_inputs(self, outputs: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs.argmax(dim=1), batch["target"]

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        result = self._step(batch, "val")
        self.val_confusion.update(result["outputs"].argmax(dim=1), batch["target"])
        return result

    def predict_outputs(self, outputs: torch.Tensor, batch: dict) -> dict[str, Any]:
        return {"probs": outputs.float().softmax(dim=1)}

    def prediction_writer(self, output_dir: str | Path) -> ClassificationWriter:
        return ClassificationWriter(output_dir, self.class_names)

    def draw_validation(self, batch: dict, outputs: torch.Tensor) -> np.ndarray:
        """Validation images captioned "true>predicted", green when right, red when wrong."""
        preds = outputs.argmax(dim=1).tolist()
        tiles = []
        for image, target, pred in zip(batch["image"], batch["target"].tolist(), preds):
            text = f"{self.class_names[target]}>{self.class_names[pred]}"
            tiles.append(caption(to_uint8_image(image), text, ok=target == pred, scale=max(1, 128 // image.shape[-1])))
        return image_grid(tiles)
