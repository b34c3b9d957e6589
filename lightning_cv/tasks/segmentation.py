"""Semantic segmentation with any smp architecture and encoder (smp or `tu-` timm)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import timm
import torch
from torch import nn
from torchmetrics import MetricCollection

from lightning_cv.data.augment import image_hw
from lightning_cv.data.demos import make_seg
from lightning_cv.data.segmentation import SegmentationDataModule
from lightning_cv.errors import DataError, UserInputError
from lightning_cv.io.images import write_csv, write_image
from lightning_cv.io.masks import restore_mask, rle_encode
from lightning_cv.models.backbones import create_segmentation_model
from lightning_cv.models.losses import segmentation_loss
from lightning_cv.models.metrics import segmentation_metrics
from lightning_cv.models.tiling import predict_tiled
from lightning_cv.models.tta import TTAMode
from lightning_cv.pictures.draw import caption, image_grid, overlay, to_uint8_image
from lightning_cv.pictures.plots import (
    ImageSource,
    Section,
    Table,
    gallery,
    histogram,
    mask_overlay,
    side_by_side,
)
from lightning_cv.predictions.decisions import load_decisions, save_decisions
from lightning_cv.predictions.files import Predictions
from lightning_cv.predictions.postprocess import (
    THRESHOLDS,
    counted_dice,
    largest_component,
    largest_components,
    pair_counts,
    search_postprocess,
)
from lightning_cv.predictions.stores import array_chunks, chunk_rows
from lightning_cv.predictions.submission import SUBMISSION, follow_sample
from lightning_cv.tasks.base import CVTask
from lightning_cv.tasks.registry import register_task


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


def instance_rows(ids: np.ndarray, masks: Iterable[np.ndarray], order: str, sample: pd.DataFrame | None,
                  source: str | Path) -> pd.DataFrame:
    """A row per connected component of each binary mask, or one empty row (Airbus ships); with a sample,
    its images in its order (each expanded to its components) and its column names."""
    rows: dict[str, list[str]] = {}
    for id_, mask in zip(ids, masks):
        count, components = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)
        rows[str(id_)] = [rle_encode(components == k, order) for k in range(1, count)] or [""]
    columns = ["id", "rle_mask"]
    order_ids = sorted(rows)
    if sample is not None:
        columns = list(sample.columns[:2])
        stems = {Path(i).stem: i for i in rows}
        order_ids = []
        for row, key in enumerate(sample.iloc[:, 0], start=2):
            found = key if key in rows else stems.get(Path(str(key)).stem)
            if found is None:
                raise DataError(f"{source}: row {row}: {sample.columns[0]} {key!r} has no prediction")
            order_ids.append(found)
        keys = list(sample.iloc[:, 0])
        return pd.DataFrame([(k, r) for k, i in zip(keys, order_ids) for r in rows[i]], columns=columns)
    return pd.DataFrame([(i, r) for i in order_ids for r in rows[i]], columns=columns)


def decided_classes(probs: np.ndarray) -> np.ndarray:
    """(N, C, h, w) probabilities -> (N, h, w) class per pixel: above 0.5 for one sigmoid channel, else argmax."""
    return (probs[:, 0].astype(np.float32) > 0.5).astype(np.int64) if probs.shape[1] == 1 else probs.argmax(axis=1)


def foreground_dice(target: np.ndarray, pred: np.ndarray) -> float:
    """One image's Dice of the foreground pixels given the right class (1.0 when both are empty)."""
    inter, total = np.logical_and(target > 0, pred == target).sum(), (target > 0).sum() + (pred > 0).sum()
    return float(2 * inter / total) if total else 1.0


def overlaps(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per image of (N, h, w) 0/1 masks: dice and iou (NaN where both are empty), and whether the truth
    and the prediction are empty."""
    pred, truth = pred.reshape(len(pred), -1) > 0, truth.reshape(len(truth), -1) > 0
    inter, p, t = (pred & truth).sum(1), pred.sum(1), truth.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice, iou = 2 * inter / (p + t), inter / (p + t - inter)
    return {"dice": dice, "iou": iou, "pred_empty": p == 0, "true_empty": t == 0}


def overlap_row(name: str, stats: dict[str, np.ndarray]) -> list[Any]:
    """A class's line of the report: images with it, Dice / IoU over the images where either mask has
    pixels, and the empty-mask mistakes."""
    dice, iou, p0, t0 = stats["dice"], stats["iou"], stats["pred_empty"], stats["true_empty"]
    some = np.isfinite(dice)
    mean = (lambda v: float(np.mean(v[some]))) if some.any() else (lambda v: float("nan"))
    return [name, int((~t0).sum()), mean(dice), float(np.median(dice[some])) if some.any() else float("nan"), mean(iou),
            int((t0 & ~p0).sum()), int((~t0 & p0).sum()), int((t0 & p0).sum())]


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
        tile_size: validate and predict by blended overlapping tiles of this side (a multiple of 32) the
            images with a side larger than it (smaller ones run whole), e.g. whole images of a model trained on
            --data.crop, or a larger --data.image_size than the training one.
        tile_overlap: share of a tile that neighbouring tiles overlap.
        tta: test-time augmentation for validate/predict: none, hflip, flip (h + v) or d4; mask
            probabilities are flipped back and averaged (on each tile when tiled).
        postprocess: a postprocess.json (from `lightning-cv cv`: the threshold and minimum area tuned on
            out-of-fold predictions; per class for multi-label masks) used instead of `threshold`: a binary
            mask with fewer pixels above the threshold (at model resolution) is emptied.
        **kwargs: the options every task shares (`CVTask`: optimizer, scheduler, image_size ...).
    """

    monitor = "val/dice"
    monitor_mode = "max"
    dynamic_spatial = True

    predictions_file = SUBMISSION
    outputs = ("probs", "size")
    inference_options = ("tta", "threshold", "tile_size", "tile_overlap", "postprocess")

    def __init__(
        self,
        arch: str = "Unet",
        encoder: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        decoder_attention_type: str | None = None,
        loss: str | None = None,
        threshold: float = 0.5,
        tile_size: int | None = None,
        tile_overlap: float = 0.25,
        tta: TTAMode = "none",
        postprocess: str | None = None,
        **kwargs: Any,
    ):
        if kwargs.get("num_classes", 2) < 2:
            raise ValueError(f"segmentation needs at least 2 classes (background + one), got {kwargs['num_classes']}")
        if tile_size is not None and (tile_size < 32 or tile_size % 32):
            raise ValueError(f"tile_size must be a positive multiple of 32 (the encoder stride), got {tile_size}")
        super().__init__(**kwargs)
        self.threshold = threshold
        self.tta = tta
        self.activation = "sigmoid" if self.binary else "softmax"
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.postprocess = postprocess

    @property
    def binary(self) -> bool:
        """Two classes: one sigmoid channel for the foreground."""
        return self.num_classes == 2

    def build_model(self) -> nn.Module:
        hp = self.hparams
        model = create_segmentation_model(hp.arch, hp.encoder, 1 if self.binary else self.num_classes, self.in_chans,
                                          hp.pretrained, hp.weights, hp.decoder_attention_type)
        # Read by the normalisation in CVTask, as on timm models.
        model.pretrained_cfg = preprocessing(hp.encoder, hp.pretrained or bool(hp.weights))
        return model

    def build_criterion(self) -> nn.Module:
        return segmentation_loss(self.hparams.loss or ("bce+dice" if self.binary else "ce+dice"), self.num_classes)

    def example_size(self) -> tuple[int, int]:
        return tuple(-(-side // 32) * 32 for side in image_hw(self.image_size))  # type: ignore[return-value]

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

    def predict_forward(self, images: torch.Tensor) -> torch.Tensor:
        """Whole images, or (tile_size) blended overlapping tiles when a side is larger than a tile: in
        validation, test and predict alike; TTA runs on each tile."""
        if self.tile_size is None or max(images.shape[-2:]) <= self.tile_size:
            return super().predict_forward(images)
        return predict_tiled(super().predict_forward, images, self.tile_size, self.tile_overlap)

    def prediction_meta(self, datamodule: Any) -> dict[str, Any]:
        # The RLE pixel order is the competition's: the DataModule's.
        meta = {"threshold": self.threshold, "min_area": 0, "min_component": 0, "rle_order": getattr(datamodule, "rle_order", "C"),
                "instances": bool(getattr(datamodule, "instance_rows", False)),
                "keep_aspect": bool(getattr(datamodule, "keep_aspect", False))}
        return {**meta, **(load_decisions(self.postprocess, self.class_names[1:]) if self.postprocess else {})}

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
            dice = foreground_dice(target, pred)
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

    def wandb_table(self, batch: dict, outputs: torch.Tensor) -> tuple[list[str], list[list[Any]]]:
        """The image with its true and predicted masks (toggled in W&B) and the image's foreground Dice."""
        labels = dict(enumerate(self.class_names))
        rows = []
        for image, target, pred in self._examples(batch, outputs, len(batch["image"])):
            rows.append([{"data_or_path": image, "masks": {"truth": {"mask_data": target, "class_labels": labels},
                                                           "prediction": {"mask_data": pred, "class_labels": labels}}},
                         round(foreground_dice(target, pred), 4)])
        return ["image", "dice"], rows

    # -- predictions ---------------------------------------------------------------------------------------
    @classmethod
    def combine(cls, predictions: list[Predictions], method: str = "mean", weights: list[float] | None = None,
                store: Path | None = None) -> Predictions:
        """As every task, once the members' pixels line up (all letterboxed, or none)."""
        if len({bool(p.meta.get("keep_aspect", False)) for p in predictions}) > 1:
            raise DataError("predictions made with and without --data.keep_aspect cannot be combined: their pixels "
                            "do not line up (predict every member with the same data options)")
        return super().combine(predictions, method, weights, store)

    @classmethod
    def masks(cls, predictions: Predictions) -> Iterator[np.ndarray]:
        """Each image's index mask at its original size (letterbox padding dropped, probabilities resized,
        then decided), one image at a time."""
        probs, sizes = predictions.arrays["probs"], predictions.arrays["size"]
        binary, threshold = probs.shape[1] == 1, float(predictions.meta.get("threshold", 0.5))
        letterboxed, min_area = bool(predictions.meta.get("keep_aspect", False)), float(predictions.meta.get("min_area", 0))
        min_component = float(predictions.meta.get("min_component", 0))
        for p, s in zip(probs, sizes):
            mask = restore_mask(p, tuple(s), binary, threshold, letterboxed)
            # The tuned minimum areas count pixels at model resolution, as the tuning did.
            kept = True
            if binary and (min_area or min_component):
                above = p[0] > threshold
                kept = ((not min_area or above.sum() >= min_area)
                        and (not min_component or largest_component(above) >= min_component))
            yield mask if kept else np.zeros_like(mask)

    @classmethod
    def submission(cls, predictions: Predictions, sample: pd.DataFrame | None = None,
                   source: str | Path = "sample submission", masks: Iterable[np.ndarray] | None = None) -> pd.DataFrame:
        """id, rle_mask (binary); id, class, rle_mask per foreground class (multiclass); an empty mask is
        an empty string. In a sample's shape (binary masks): its ids, order and columns."""
        masks = cls.masks(predictions) if masks is None else masks
        order = predictions.meta.get("rle_order", "C")
        binary = predictions.arrays["probs"].shape[1] == 1
        if binary and predictions.meta.get("instances"):
            return instance_rows(predictions.ids, masks, order, sample, source)
        classes = [1] if binary else range(1, predictions.arrays["probs"].shape[1])
        rows = [(i, k, rle_encode(m == k, order)) for i, m in zip(predictions.ids, masks) for k in classes]
        frame = pd.DataFrame(rows, columns=["id", "class", "rle_mask"]).sort_values(["id", "class"], kind="stable")
        if sample is not None:
            if not binary:
                raise UserInputError(f"{source}: sample submissions are for binary masks; multiclass predictions "
                                     "are written as id,class,rle_mask")
            return follow_sample(frame["id"].to_numpy(), {"rle_mask": frame["rle_mask"].to_numpy()}, sample, source)
        return (frame.drop(columns="class") if binary else frame).reset_index(drop=True)

    @classmethod
    def oof_columns(cls, predictions: Predictions) -> pd.DataFrame:
        """The share of each image predicted as foreground (at model resolution)."""
        shares = [(decided_classes(chunk) > 0).reshape(len(chunk), -1).mean(axis=1)
                  for chunk in array_chunks(predictions.arrays["probs"])]
        return pd.DataFrame({"foreground_share": np.concatenate(shares).round(4)})

    @classmethod
    def write_outputs(cls, predictions: Predictions, out_dir: Path, sample: pd.DataFrame | None,
                      source: str | Path = "sample submission") -> None:
        """masks/<id>.png at each image's original size (0/255 when binary, else class index) and
        submission.csv (in the sample's shape when there is one)."""
        binary = predictions.arrays["probs"].shape[1] == 1

        def written() -> Iterator[np.ndarray]:  # each mask saved as its RLE is computed: one image in memory
            for id_, mask in zip(predictions.ids, cls.masks(predictions)):
                write_image(out_dir / "masks" / f"{id_}.png", mask * 255 if binary else mask)
                yield mask

        frame = cls.submission(predictions, sample, source, masks=written())
        write_csv(frame, out_dir / SUBMISSION)
        print(f"wrote {len(predictions)} masks to {out_dir / 'masks'} and {out_dir / SUBMISSION}")

    @classmethod
    def tune(cls, predictions: Predictions, out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """Binary masks: the threshold and the minimum area that maximise the mean Dice over the out-of-fold
        images (an empty truth predicted empty scores 1), the area counted over the mask's pixels or over its
        largest component (TGS's rule), whichever scores higher; saved as out_dir/postprocess.json for `predict
        --model.postprocess` and `ensemble`. Class-index masks: nothing to tune."""
        probs = predictions.arrays["probs"]
        if probs.shape[1] != 1:
            return {}, {}
        counts = pair_counts(probs, predictions.targets, THRESHOLDS)
        (threshold,), (area,), tuned = search_postprocess(counts)
        (c_threshold,), (component,), by_component = search_postprocess(counts, sizes=largest_components(probs, THRESHOLDS))
        above, inter, truth = counts
        raw = float(counted_dice(above[:, 0, THRESHOLDS.index(0.5)], inter[:, 0, THRESHOLDS.index(0.5)], truth[:, 0]).mean())
        decisions = {"threshold": threshold, "min_area": area, "min_component": 0}
        if by_component > tuned:
            decisions, tuned = {"threshold": c_threshold, "min_area": 0, "min_component": component}, by_component
        path = save_decisions(out_dir, predictions.class_names[1:], decisions, {"dice_mean": tuned, "dice_mean_raw": raw})
        rule = (f"largest component at least {decisions['min_component']} px" if decisions["min_component"]
                else f"minimum area {decisions['min_area']}")
        print(f"out-of-fold mean Dice of {len(predictions)} images: {raw:.4f} at 0.5, {tuned:.4f} at threshold "
              f"{decisions['threshold']} and {rule} -> {path} (use: predict --model.postprocess {path})")
        return decisions, {"dice_mean_raw": raw, "dice_mean_tuned": tuned, "postprocess": str(path)}

    @classmethod
    def score(cls, predictions: Predictions) -> dict[str, float]:
        """Dice and IoU of the foreground, pooled over every pixel of the rows (at model resolution)."""
        probs, inter, total = predictions.arrays["probs"], 0, 0
        step = chunk_rows(probs)
        for start in range(0, len(probs), step):
            pred, truth = decided_classes(probs[start:start + step]), np.asarray(predictions.targets[start:start + step])
            inter += int(np.logical_and(pred > 0, pred == truth).sum())
            total += int((pred > 0).sum() + (truth > 0).sum())
        union = total - inter
        return {"dice": float(2 * inter / total) if total else 1.0, "iou": float(inter / union) if union else 1.0}


    # -- report ---------------------------------------------------------------------------------------------
    @classmethod
    def report_classes(cls, predictions: Predictions) -> list[str]:
        """The classes the report measures: the foreground ones."""
        return predictions.class_names[1:]

    @classmethod
    def class_masks(cls, predictions: Predictions, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(predicted, true) (N, h, w) 0/1 masks of report class c, at model resolution, as decided."""
        probs, truth = predictions.arrays["probs"], np.asarray(predictions.targets)
        if probs.shape[1] == 1:
            return probs[:, 0].astype(np.float32) > float(predictions.meta.get("threshold", 0.5)), truth > 0
        return probs.argmax(axis=1) == c + 1, truth == c + 1

    @classmethod
    def class_overlaps(cls, predictions: Predictions) -> list[dict[str, np.ndarray]]:
        """overlaps() of each report class's masks, the maps read a chunk of images at a time."""
        probs, classes = predictions.arrays["probs"], len(cls.report_classes(predictions))
        step, parts = chunk_rows(probs, itemsize=4), []
        for start in range(0, len(predictions), step):
            part = predictions.take(np.arange(start, min(start + step, len(predictions))))
            part = replace(part, arrays={**part.arrays, "probs": np.asarray(part.arrays["probs"])})  # one read
            parts.append([overlaps(*cls.class_masks(part, c)) for c in range(classes)])
        if not parts:
            return [overlaps(np.zeros((0, 1)), np.zeros((0, 1))) for _ in range(classes)]
        return [{k: np.concatenate([p[c][k] for p in parts]) for k in parts[0][c]} for c in range(classes)]

    @classmethod
    def report_sections(cls, predictions: Predictions, images: ImageSource) -> list[Section]:
        """Per class: Dice / IoU over the images, empty-mask false positives and negatives; the images with
        the lowest mean Dice as image | truth | prediction overlays."""
        names = cls.report_classes(predictions)
        stats = cls.class_overlaps(predictions)
        table = Table(["class", "images with it", "mean Dice", "median Dice", "mean IoU", "empty predicted as mask (FP)",
                       "mask predicted empty (FN)", "both empty"], [overlap_row(n, s) for n, s in zip(names, stats)])
        plots = [histogram({n: s[k] for n, s in zip(names, stats)}, f"{k} per image and class", k, value_range=(0, 1))
                 for k in ("dice", "iou")]
        classes = Section("Masks", ["Dice and IoU per image, over the images where the truth or the prediction has the "
                                    "class (both empty: counted apart); at model resolution, with the run's decisions"],
                          [table], plots)
        per_image = np.mean(np.stack([np.where(np.isfinite(s["dice"]), s["dice"], 1.0) for s in stats]), axis=0)
        order = np.argsort(per_image, kind="stable")
        order = order[per_image[order] < 1][:12]
        worst = predictions.take(order)
        masks = [np.stack(pair, axis=1) for pair in zip(*(cls.class_masks(worst, c) for c in range(len(names))))]

        def draw(i: int, image: np.ndarray) -> np.ndarray:
            return side_by_side([mask_overlay(image, 0 * masks[0][i]), mask_overlay(image, masks[1][i]),
                                 mask_overlay(image, masks[0][i])])

        tiles, notes = gallery(worst.ids, [f"Dice {per_image[i]:.2f}" for i in order], images, draw, side=3 * 128)
        return [classes, Section("Worst masks", ["image | truth | prediction, lowest mean Dice over the classes first",
                                                *notes], gallery=tiles)]


register_task("seg", SegmentationTask, SegmentationDataModule, demo=make_seg,
              summary="semantic segmentation: mask files or an RLE table (Carvana)")
