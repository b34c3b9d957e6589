"""Semantic segmentation with any smp architecture and encoder (smp or `tu-` timm)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MetricCollection

from lightning_cv.augment import to_uint8_image
from lightning_cv.backbones import create_segmentation_model
from lightning_cv.callbacks import caption, image_grid
from lightning_cv.losses import segmentation_loss
from lightning_cv.metrics import segmentation_metrics
from lightning_cv.tasks.base import CVTask, _adamw
from lightning_cv.tiling import predict_tiled
from lightning_cv.tta import TTAMode
from lightning_cv.writers import SegmentationWriter

# Overlay colours per class (RGB); class 0 (background) is left transparent.
PALETTE = np.array([[0, 0, 0], [255, 40, 40], [40, 200, 40], [60, 90, 255], [255, 200, 0], [200, 0, 200],
                    [0, 200, 200], [255, 120, 0]], np.uint8)


def preprocessing(encoder: str, pretrained: bool) -> dict[str, tuple[float, ...]]:
    """The mean/std the encoder was pretrained with: timm's config for `tu-` encoders (offline),
    smp's for downloaded smp weights (its config comes with them), else ImageNet's."""
    if encoder.startswith("tu-"):
        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        if cfg is not None:
            return {"mean": tuple(cfg.mean), "std": tuple(cfg.std)}
    elif pretrained:
        import segmentation_models_pytorch as smp

        params = smp.encoders.get_preprocessing_params(encoder)
        return {"mean": tuple(params["mean"]), "std": tuple(params["std"])}
    return {"mean": timm.data.IMAGENET_DEFAULT_MEAN, "std": timm.data.IMAGENET_DEFAULT_STD}


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Colour the non-background classes of an index mask over an RGB image."""
    colours = PALETTE[mask % len(PALETTE)]
    out = image.astype(np.float32)
    fg = mask > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    return out.round().astype(np.uint8)


class SegmentationTask(CVTask):
    """An smp model (encoder + decoder), a named mask loss, dice / IoU / pixel accuracy.

    Binary masks (2 classes) get one logit channel (sigmoid); more classes get one channel each (softmax).

    Args:
        arch: smp architecture: Unet, UnetPlusPlus, FPN, DeepLabV3Plus, Linknet, PSPNet, PAN, MAnet, Segformer...
        encoder: smp encoder name (resnet34, efficientnet-b0, ...) or a timm one as `tu-<timm name>`.
        pretrained: start from the encoder's pretrained (ImageNet) weights, downloaded by smp / timm.
        weights: a local file with the encoder's pretrained weights (needs a `tu-` encoder).
        decoder_attention_type: "scse" for squeeze-and-excitation in the Unet / Unet++ decoder.
        loss: dice, bce, ce, focal, lovasz, or a sum (bce+dice); default bce+dice (binary), ce+dice (multiclass).
        threshold: foreground probability threshold for binary masks (pictures, predictions).
        image_size: the training resolution, for the example input (export, summaries).
        tile_size: predict by blended overlapping tiles of this side (a multiple of 32) instead of the
            whole image, e.g. when predicting at a larger --data.image_size than the training one.
        tile_overlap: share of a tile that neighbouring tiles overlap.
        tta: test-time augmentation for validate/predict: none, hflip, flip (h + v) or d4; mask
            probabilities are flipped back and averaged (whole-image prediction, not with tile_size).
        channels_last: run the model in channels_last memory format (often faster on GPUs with tensor cores).
        compile: torch.compile the model (slow first steps; pays off on long GPU runs).
    """

    monitor = "val/dice"
    monitor_mode = "max"
    dynamic_spatial = True

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        class_names: list[str] | None = None,
        arch: str = "Unet",
        encoder: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        decoder_attention_type: str | None = None,
        loss: str | None = None,
        threshold: float = 0.5,
        image_size: int = 96,
        tile_size: int | None = None,
        tile_overlap: float = 0.25,
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
        if num_classes < 2:
            raise ValueError(f"segmentation needs at least 2 classes (background + one), got {num_classes}")
        # tta is chosen at inference: kept out of the hparams, which `--ckpt_path` would restore over the command line.
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "tta"])
        self.binary = num_classes == 2
        self.image_size = image_size
        self.threshold = threshold
        self.tta = tta
        self.activation = "sigmoid" if self.binary else "softmax"
        if tile_size is not None and (tile_size < 32 or tile_size % 32):
            raise ValueError(f"tile_size must be a positive multiple of 32 (the encoder stride), got {tile_size}")
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.model = create_segmentation_model(arch, encoder, 1 if self.binary else num_classes, in_chans,
                                               pretrained, weights, decoder_attention_type)
        # Read by CVTask._init_normalization, as on timm models.
        self.model.pretrained_cfg = preprocessing(encoder, pretrained or bool(weights))
        self.criterion = segmentation_loss(loss or ("bce+dice" if self.binary else "ce+dice"), num_classes)
        self._init_normalization()

    def example_size(self) -> tuple[int, int]:
        side = -(-self.image_size // 32) * 32
        return (side, side)

    @property
    def backbone(self) -> nn.Module:
        return self.model.encoder

    @property
    def head(self) -> nn.Module:
        return nn.ModuleList(m for name, m in self.model.named_children() if name != "encoder")

    # -- outputs --------------------------------------------------------------------------------
    @staticmethod
    def _crop(tensor: torch.Tensor, batch: dict) -> torch.Tensor:
        """Drop the stride padding: every sample of a batch has the same valid (height, width)."""
        if "valid" not in batch:
            return tensor
        h, w = (int(v) for v in batch["valid"][0])
        return tensor[..., :h, :w]

    def compute_loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.criterion(self._crop(outputs, batch).float(), self._crop(batch["target"], batch))

    def labels(self, outputs: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) -> index masks (N, H, W)."""
        if self.binary:
            return (outputs[:, 0].float().sigmoid() > self.threshold).long()
        return outputs.argmax(dim=1)

    def make_metrics(self, prefix: str) -> MetricCollection:
        return segmentation_metrics(self.class_names, prefix)

    def metric_inputs(self, outputs: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.labels(self._crop(outputs, batch)), self._crop(batch["target"], batch)

    def predict_outputs(self, outputs: torch.Tensor, batch: dict) -> dict[str, Any]:
        """Probabilities at model resolution (padding dropped, float16) and each image's original size;
        the writer resizes them back."""
        outputs = self._crop(outputs, batch).float()
        probs = outputs.sigmoid() if self.binary else outputs.softmax(dim=1)
        return {"probs": probs.half(), "size": batch["size"]}

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        if self.tile_size is None:
            return super().predict_step(batch, batch_idx)
        outputs = predict_tiled(self, batch["image"], self.tile_size, self.tile_overlap)
        return {"id": batch["id"], **self.predict_outputs(outputs, batch)}

    def prediction_writer(self, output_dir: str | Path) -> SegmentationWriter:
        return SegmentationWriter(output_dir, binary=self.binary, threshold=self.threshold)

    # -- pictures --------------------------------------------------------------------------------
    def _examples(self, batch: dict, outputs: torch.Tensor, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        images = self._crop(batch["image"][:n], batch)
        targets = self._crop(batch["target"][:n], batch).cpu().numpy().astype(np.int64)
        preds = self.labels(self._crop(outputs[:n], batch)).cpu().numpy()
        return [(to_uint8_image(im), t, p) for im, t, p in zip(images, targets, preds)]

    def draw_validation(self, batch: dict, outputs: torch.Tensor) -> np.ndarray:
        """Rows of image | true mask | predicted mask overlays, captioned with the image's dice."""
        tiles = []
        for image, target, pred in self._examples(batch, outputs, 8):
            inter, total = np.logical_and(target > 0, pred == target).sum(), (target > 0).sum() + (pred > 0).sum()
            dice = 2 * inter / total if total else 1.0
            scale = max(1, 128 // image.shape[0])
            tiles += [caption(image, "image", scale=scale), caption(overlay(image, target), "true", scale=scale),
                      caption(overlay(image, pred), f"pred {dice:.2f}", ok=dice >= 0.9, scale=scale)]
        return image_grid(tiles, columns=6)

    def wandb_validation(self, batch: dict, outputs: torch.Tensor) -> dict[str, Any]:
        """W&B mask panels (true and predicted) over the first validation images."""
        labels = dict(enumerate(self.class_names))
        examples = self._examples(batch, outputs, 8)
        return {
            "key": "val/masks",
            "images": [image for image, _, _ in examples],
            "masks": [{"gt": {"mask_data": target, "class_labels": labels},
                       "pred": {"mask_data": pred, "class_labels": labels}} for _, target, pred in examples],
        }
