"""Square-box regression: a timm backbone predicts one object's square (cx, cy, side) in [0, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchvision.ops import box_iou

from lightning_cv.data.bbox import BBoxCropDataModule
from lightning_cv.data.demos import make_bbox
from lightning_cv.errors import UserInputError
from lightning_cv.io.boxes import original_square
from lightning_cv.models.backbones import create_classifier
from lightning_cv.models.losses import box_loss, square_to_xyxy
from lightning_cv.pictures.draw import image_grid, to_uint8_image
from lightning_cv.pictures.plots import ImageSource, Section, Table, gallery, histogram
from lightning_cv.predictions.files import Predictions
from lightning_cv.predictions.submission import follow_sample
from lightning_cv.tasks.base import CVTask
from lightning_cv.tasks.registry import register_task

TRUE_COLOR, PRED_COLOR = (0, 200, 0), (230, 0, 0)


def square_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample IoU of (N, 3) squares (cx, cy, side)."""
    return box_iou(square_to_xyxy(pred.float()), square_to_xyxy(target.float())).diagonal()


def draw_squares(image: np.ndarray, squares: list[np.ndarray], side: int = 192) -> np.ndarray:
    """An RGB image scaled to `side` with (cx, cy, side) squares in [0, 1] drawn on it, true first (green),
    then predicted (red)."""
    tile = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA if image.shape[0] > side else cv2.INTER_NEAREST)
    for square, color in zip(squares, (TRUE_COLOR, PRED_COLOR)):
        cx, cy, s = (float(v) * side for v in square)
        cv2.rectangle(tile, (round(cx - s / 2), round(cy - s / 2)), (round(cx + s / 2), round(cy + s / 2)), color, 2)
    return tile


class MeanIoU(MeanMetric):
    """Mean IoU between predicted and true squares (or the share with IoU >= `threshold`)."""

    def __init__(self, threshold: float | None = None):
        super().__init__()
        self.threshold = threshold

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        iou = square_iou(pred, target)
        super().update(iou if self.threshold is None else (iou >= self.threshold).float())


class PoolHead(nn.Module):
    """Global average pooling and a linear layer; sigmoid keeps the square inside [0, 1]."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.mean(dim=(2, 3))).sigmoid()


class SoftArgmaxHead(nn.Module):
    """Where-and-how-big: a heatmap over the feature grid locates the centre (soft-argmax plus a
    learned sub-cell offset); features pooled under the heatmap give the side.

    Global pooling throws away position, which a backbone trained from scratch on a few hundred
    images then has to relearn; the heatmap keeps it.
    """

    def __init__(self, channels: int, hidden: int = 128):
        super().__init__()
        self.heat = nn.Conv2d(channels, 1, 1)
        self.offset = nn.Conv2d(channels, 2, 1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.side = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n, c, h, w = features.shape
        weights = self.heat(features).flatten(1).softmax(dim=1)  # (N, h*w)
        ys = (torch.arange(h, device=features.device, dtype=features.dtype) + 0.5) / h
        xs = (torch.arange(w, device=features.device, dtype=features.dtype) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        offset = torch.tanh(self.offset(features)).flatten(2)  # (N, 2, h*w), up to one cell
        cx = (weights * (grid_x.flatten() + offset[:, 0] / w)).sum(1)
        cy = (weights * (grid_y.flatten() + offset[:, 1] / h)).sum(1)
        pooled = torch.einsum("nk,nck->nc", weights, features.flatten(2))
        side = self.side(pooled).squeeze(1).sigmoid()
        return torch.stack([cx, cy, side], dim=1)


HEADS = {"pool": PoolHead, "softargmax": SoftArgmaxHead}


def feature_level(backbone: nn.Module, stride: int) -> int:
    """Index of the backbone stage whose features are `stride` times smaller than the input."""
    info = getattr(backbone, "feature_info", None)
    reductions = [f["reduction"] for f in info] if info else []
    if stride not in reductions or not hasattr(backbone, "prune_intermediate_layers"):
        raise UserInputError(
            f"--model.feature_stride {stride}: the backbone offers feature strides {reductions or 'none'} "
            "(timm models with forward_intermediates); pick one of them, or leave it unset for the last stage"
        )
    return len(reductions) - 1 - reductions[::-1].index(stride)


class BoxRegressor(nn.Module):
    """timm backbone features + a box head; output (N, 3) squares (cx, cy, side) in [0, 1].

    With `feature_stride`, the backbone stops at that stage (later stages are removed, not just
    skipped): a finer grid for the heatmap head, and less compute on small letterboxes.
    """

    def __init__(self, backbone: nn.Module, head: str, feature_stride: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.level = None if feature_stride is None else feature_level(backbone, feature_stride)
        if self.level is None:
            channels = backbone.head_hidden_size if hasattr(backbone, "head_hidden_size") else backbone.num_features
        else:
            backbone.prune_intermediate_layers(indices=[self.level], prune_norm=True, prune_head=True)
            channels = backbone.feature_info[self.level]["num_chs"]
        self.head = HEADS[head](channels)
        self.pretrained_cfg = getattr(backbone, "pretrained_cfg", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.level is None:
            return self.head(self.backbone.forward_features(x))
        return self.head(self.backbone.forward_intermediates(x, indices=[self.level], intermediates_only=True)[0])


class BBoxCropTask(CVTask):
    """One object's square box from a letterboxed image, for crop-then-classify pipelines.

    `forward` returns the square (cx, cy, side) as fractions of the letterboxed image (the head's
    sigmoid/soft-argmax is part of the box parameterisation, not a post-processing step).

    Args:
        num_classes: object classes in the box CSV (1: the box has no class); linked from the data.
        backbone: any `timm.list_models()` name.
        pretrained: start from the backbone's pretrained (ImageNet) weights, downloaded by timm.
        weights: a local file with those pretrained weights, for machines without network.
        head: "softargmax" (heatmap locates the centre) or "pool" (global pooling + linear).
        feature_stride: take the features of the backbone stage at this stride (e.g. 16: a 4x4 grid
            at 64 px instead of 2x2) and drop the later stages; unset: the last stage.
        loss: smooth_l1, mse, giou, or giou_smooth_l1, on the normalised squares.
        **kwargs: the options every task shares (`CVTask`: optimizer, scheduler, image_size: the
            letterbox side ...).
    """

    monitor = "val/box_iou"
    monitor_mode = "max"
    outputs = ("box", "orig_size")
    combined = ("box",)
    combine_methods = ("mean",)
    predictions_file = "boxes.csv"

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        head: Literal["softargmax", "pool"] = "softargmax",
        feature_stride: int | None = None,
        loss: str = "giou_smooth_l1",
        num_classes: int = 1,
        **kwargs: Any,
    ):
        super().__init__(num_classes=num_classes, **kwargs)

    def build_model(self) -> nn.Module:
        hp = self.hparams
        return BoxRegressor(create_classifier(hp.backbone, 0, self.in_chans, hp.pretrained, hp.weights), hp.head, hp.feature_stride)

    def build_criterion(self) -> nn.Module:
        return box_loss(self.hparams.loss)

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    @property
    def head(self) -> nn.Module:
        return self.model.head

    def make_metrics(self, prefix: str) -> MetricCollection:
        return MetricCollection({"box_iou": MeanIoU(), "hit50": MeanIoU(threshold=0.5)}, prefix=prefix)

    def metric_inputs(self, outputs: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs, batch["target"]

    def predict_outputs(self, outputs: torch.Tensor, batch: dict) -> dict[str, Any]:
        return {"box": outputs.float(), "orig_size": batch["orig_size"]}

    def prediction_meta(self, datamodule: Any) -> dict[str, Any]:
        return {"image_size": self.image_size}

    def draw_validation(self, batch: dict, outputs: torch.Tensor) -> np.ndarray:
        """Validation images with the true square in green and the predicted one in red, IoU above."""
        ious = square_iou(outputs, batch["target"]).tolist()
        scale = max(1, 128 // batch["image"].shape[-1])
        tiles = []
        for image, target, pred, iou in zip(batch["image"], batch["target"], outputs, ious):
            tile = cv2.resize(to_uint8_image(image), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            size = tile.shape[0]
            for box, color in ((target, TRUE_COLOR), (pred, PRED_COLOR)):
                x0, y0, x1, y1 = (int(round(float(v) * size)) for v in square_to_xyxy(box.float()))
                cv2.rectangle(tile, (x0, y0), (x1, y1), color, 1)
            strip = np.full((14, tile.shape[1], 3), 255, np.uint8)
            cv2.putText(strip, f"IoU {iou:.2f}", (2, 11), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(np.vstack([tile, strip]))
        return image_grid(tiles)

    # -- predictions ---------------------------------------------------------------------------------------
    @classmethod
    def submission(cls, predictions: Predictions, sample: pd.DataFrame | None = None,
                   source: str | Path = "sample submission") -> pd.DataFrame:
        """image, x, y, size: each predicted square in its original's whole pixels (the box-training format)."""
        size = int(predictions.meta.get("image_size", 64))
        squares = [original_square(box, int(h), int(w), size)
                   for box, (h, w) in zip(predictions.arrays["box"], predictions.arrays["orig_size"])]
        frame = pd.DataFrame(squares, columns=["x", "y", "size"]).assign(image=predictions.ids)[["image", "x", "y", "size"]]
        if sample is not None:
            return follow_sample(frame["image"].to_numpy(), {c: frame[c].to_numpy() for c in ("x", "y", "size")}, sample, source)
        return frame.sort_values("image", kind="stable").reset_index(drop=True)

    @classmethod
    def oof_columns(cls, predictions: Predictions) -> pd.DataFrame:
        """The predicted square (original pixels) and its IoU with the true one."""
        frame = cls.submission(predictions).set_index("image").loc[predictions.ids].reset_index(drop=True)
        return frame.add_prefix("pred_").assign(iou=cls._ious(predictions).round(4))

    @classmethod
    def _ious(cls, predictions: Predictions) -> np.ndarray:
        return square_iou(torch.from_numpy(predictions.arrays["box"]), torch.from_numpy(predictions.targets)).numpy()

    @classmethod
    def score(cls, predictions: Predictions) -> dict[str, float]:
        """Mean IoU of the predicted and true squares, and the share with IoU >= 0.5."""
        ious = cls._ious(predictions)
        return {"box_iou": float(ious.mean()), "hit50": float((ious >= 0.5).mean())}


    @classmethod
    def report_sections(cls, predictions: Predictions, images: ImageSource) -> list[Section]:
        """The IoU distribution and the worst boxes drawn on their (letterboxed) images."""
        ious = cls._ious(predictions)
        table = Table(["images", "mean IoU", "median IoU", "IoU >= 0.5", "IoU >= 0.75"],
                      [[len(ious), float(ious.mean()), float(np.median(ious)), float((ious >= 0.5).mean()),
                        float((ious >= 0.75).mean())]])
        boxes = Section("Boxes", tables=[table], plots=[histogram({"out of fold": ious}, "IoU of the predicted square",
                                                                 "IoU", value_range=(0, 1))])
        order = np.argsort(ious, kind="stable")[:12]
        true, pred = np.asarray(predictions.targets)[order], predictions.arrays["box"][order]
        tiles, notes = gallery(predictions.ids[order], [f"IoU {ious[i]:.2f}" for i in order], images,
                               lambda i, image: draw_squares(image, [true[i], pred[i]]))
        worst = Section("Worst boxes", ["true square green, predicted red, on the letterboxed image the model saw; "
                                        "lowest IoU first", *notes], gallery=tiles)
        return [boxes, worst]


register_task("bbox", BBoxCropTask, BBoxCropDataModule, demo=make_bbox,
              summary="square-box regression on a downscaled image, to crop the full-resolution original")
