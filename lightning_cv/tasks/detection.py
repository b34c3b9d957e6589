"""Object detection: every object's box and class, as detection competitions score them.

The model is torchvision's FCOS (one-stage, anchor-free) on a timm or torchvision backbone with an FPN
(`models.detectors`): `forward` returns dense outputs (a box, a centre-ness logit and class logits per feature
location), so the loss, the detections, TTA and an ONNX export all read one tensor. Predictions are saved as
padded arrays per image (boxes (N, K, 4) in original pixels, scores and labels (N, K), label -1 for padding):
rows that `take`, `align` and the out-of-fold gathering handle like any other task's; with TTA, each view's boxes
too (view_boxes (N, V, K, 4) ...). TTA views, and ensembles of folds and models, are fused by weighted boxes fusion;
a submission applies the decisions `cv` tunes on the out-of-fold boxes (NMS IoU, score threshold; with views, the
fusion IoU and the threshold after fusion) and writes the sample submission's prediction strings.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn
from torchmetrics import Metric, MetricCollection

from lightning_cv.data.augment import build_pipeline, image_hw, resize
from lightning_cv.data.demos import make_detection
from lightning_cv.data.detection import DetectionDataModule, unpadded
from lightning_cv.errors import UserInputError
from lightning_cv.io.box_tables import image_key
from lightning_cv.io.images import write_csv
from lightning_cv.models import box_metrics
from lightning_cv.models.box_metrics import METRICS, THRESHOLDED, scored
from lightning_cv.models.box_tta import view_predictions
from lightning_cv.models.detectors import EXTRA_LEVELS, DenseDetector, create_fpn_backbone, detections
from lightning_cv.pictures.draw import image_grid, to_uint8_image
from lightning_cv.pictures.plots import ImageSource, Section, Table, gallery, histogram
from lightning_cv.predictions.box_fusion import fuse_boxes, keep_above, nms
from lightning_cv.predictions.box_strings import long_rows, prediction_strings
from lightning_cv.predictions.decisions import load_decisions, save_decisions
from lightning_cv.predictions.files import Predictions
from lightning_cv.predictions.submission import SUBMISSION, follow_sample
from lightning_cv.tasks.base import CVTask
from lightning_cv.tasks.registry import register_task

BoxMetric = Literal["map", "map_50", "voc_map", "wheat", "rsna_boxes", "f2_boxes"]
TRUE_COLOR, PRED_COLOR = (0, 200, 0), (230, 0, 0)
# What cv searches on the out-of-fold boxes: the submission's score threshold and the NMS IoU (up to the one the
# predictions were made with: a looser one cannot bring suppressed boxes back).
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.86, 0.05), 2))
NMS_IOUS = (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
FUSION_IOUS = (0.4, 0.5, 0.55, 0.6, 0.7, 0.8)  # what cv searches for the WBF of an ensemble's members


def decided(pred: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """One image's boxes as a submission writes them: NMS at the decided IoU, then the score threshold."""
    return keep_above(nms(pred, float(meta.get("nms_iou", 0.5))), float(meta.get("threshold", 0.0)))


class BoxMetrics(Metric):
    """Every validation image's predicted and true boxes (original pixels), scored together at the epoch's end:
    COCO mAP (map, map_50, map_75), PASCAL VOC mAP (voc_map at `voc_iou`), Global Wheat's and RSNA Pneumonia's
    per-image scores and the Reef's F2 (these three of the boxes above `threshold`). States are flat rows keyed by
    the dataset index (DDP-safe)."""

    full_state_update = False

    def __init__(self, threshold: float = 0.3, voc_iou: float = 0.4):
        super().__init__()
        self.threshold, self.voc_iou = threshold, voc_iou
        self.add_state("preds", default=[], dist_reduce_fx="cat")  # (K, 7) index, box, score, label
        self.add_state("truths", default=[], dist_reduce_fx="cat")  # (M, 6) index, box, label
        self.add_state("images", default=[], dist_reduce_fx="cat")  # (N,) index

    def update(self, preds: list[dict[str, torch.Tensor]], truths: list[dict[str, torch.Tensor]], index: torch.Tensor) -> None:
        for i, pred, truth in zip(index.tolist(), preds, truths):
            key = torch.full((len(pred["boxes"]), 1), float(i), device=self.device)
            self.preds.append(torch.cat([key, pred["boxes"].float(), pred["scores"].float()[:, None],
                                         pred["labels"].float()[:, None]], dim=1))
            key = torch.full((len(truth["boxes"]), 1), float(i), device=self.device)
            self.truths.append(torch.cat([key, truth["boxes"].float(), truth["labels"].float()[:, None]], dim=1))
        self.images.append(index.to(self.device).float())

    def compute(self) -> dict[str, torch.Tensor]:
        def rows(state: Any, width: int) -> np.ndarray:
            if isinstance(state, torch.Tensor):
                return state.cpu().numpy().reshape(-1, width)
            return torch.cat(state).cpu().numpy().reshape(-1, width) if state else np.zeros((0, width), np.float32)

        p, t, ids = rows(self.preds, 7), rows(self.truths, 6), np.unique(rows(self.images, 1))
        preds = [{"boxes": p[p[:, 0] == i, 1:5], "scores": p[p[:, 0] == i, 5], "labels": p[p[:, 0] == i, 6].astype(np.int64)}
                 for i in ids]
        truths = [{"boxes": t[t[:, 0] == i, 1:5], "labels": t[t[:, 0] == i, 5].astype(np.int64)} for i in ids]
        above = [keep_above(x, self.threshold) for x in preds]
        values = {**box_metrics.coco_map(preds, truths),
                  "voc_map": box_metrics.voc_map(preds, truths, iou_threshold=self.voc_iou),
                  **{name: scored(name, above, truths)[name] for name in THRESHOLDED}}
        return {k: torch.tensor(float(np.nan_to_num(v, nan=0.0))) for k, v in values.items()}


class DetectionTask(CVTask):
    """FCOS (torchvision) with an FPN on a timm or torchvision backbone; boxes and classes of every object.

    Args:
        num_classes: foreground classes (linked from the data; no background or "no finding" class).
        backbone: a timm name (any model with `features_only`: resnet18, convnext_tiny, efficientnet_b0 ...), or
            `tv-<resnet>` for torchvision's own ResNets (tv-resnet50).
        pretrained: start the backbone from its pretrained (ImageNet) weights, downloaded by timm / torchvision.
        weights: a local file of those weights, for machines without network.
        out_indices: the backbone stages the FPN reads (2, 3, 4: strides 8, 16, 32; add 1 for stride 4 and
            small objects).
        fpn_channels: the FPN's and the heads' width (a multiple of 32).
        head_convs: convolutions in each FCOS tower (4 in the paper; 2 is cheaper on CPUs).
        extra_levels: coarser levels above the last stage: p6p7 (two strided convolutions, FCOS's), pool, none.
        center_sampling_radius: FCOS's centre sampling radius, in strides.
        metric: the competition's metric (the one `cv` reports and tunes for): map (COCO 0.5:0.95), map_50,
            voc_map (PASCAL VOC at IoU > 0.4: VinBigData), wheat (Global Wheat), rsna_boxes (RSNA Pneumonia: wheat's
            per-image score from IoU 0.4), f2_boxes (Great Barrier Reef).
        tta: test-time augmentation of predictions: none, hflip, flip (4 views), d4 (+ quarter turns: 8 views);
            the views' boxes mapped back and fused by WBF.
        min_score: detections below this score are not kept in the predictions.
        nms_iou: class-wise NMS IoU of one model's detections (cv may tune a lower one for submissions).
        max_detections: boxes kept per image.
        threshold: the score a box needs to be written into a submission (cv tunes it on out-of-fold boxes).
        fusion_iou: the IoU at which weighted boxes fusion joins boxes of TTA views and of ensemble members.
        postprocess: a postprocess.json of `lightning-cv cv` (tuned threshold, NMS IoU and, with TTA, fusion IoU)
            for predictions.
        **kwargs: the options every task shares (`CVTask`: optimizer, scheduler, image_size ...).
    """

    monitor = "val/map"
    monitor_mode = "max"
    activation = "sigmoid"
    outputs = ("boxes", "scores", "labels", "size")
    combined = ("boxes", "scores", "labels")
    combine_methods = ("wbf", "nms", "soft_nms", "nmw")
    predictions_file = "boxes.csv"
    inference_options = ("tta", "min_score", "nms_iou", "max_detections", "threshold", "fusion_iou", "postprocess")
    training_options = (*CVTask.training_options, "metric")

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        out_indices: list[int] | None = None,
        fpn_channels: int = 128,
        head_convs: int = 4,
        extra_levels: Literal["p6p7", "pool", "none"] = "p6p7",
        center_sampling_radius: float = 1.5,
        metric: BoxMetric = "map",
        tta: Literal["none", "hflip", "flip", "d4"] = "none",
        min_score: float = 0.05,
        nms_iou: float = 0.6,
        max_detections: int = 100,
        threshold: float = 0.3,
        fusion_iou: float = 0.55,
        postprocess: str | None = None,
        num_classes: int = 1,
        **kwargs: Any,
    ):
        if metric not in METRICS:
            raise UserInputError(f"--model.metric {metric!r}: choose {', '.join(METRICS)}")
        if tta not in ("none", "hflip", "flip", "d4"):
            raise UserInputError(f"--model.tta {tta!r}: boxes take none, hflip, flip or d4")
        if extra_levels not in EXTRA_LEVELS:
            raise UserInputError(f"--model.extra_levels {extra_levels!r}: choose {', '.join(EXTRA_LEVELS)}")
        self.tta, self.min_score, self.nms_iou, self.max_detections = tta, min_score, nms_iou, max_detections
        self.threshold, self.fusion_iou, self.postprocess, self.metric = threshold, fusion_iou, postprocess, metric
        super().__init__(num_classes=num_classes, **kwargs)

    def build_model(self) -> nn.Module:
        hp = self.hparams
        backbone = create_fpn_backbone(hp.backbone, self.in_chans, hp.pretrained, hp.weights, hp.fpn_channels,
                                       tuple(hp.out_indices or (2, 3, 4)), hp.extra_levels)
        return DenseDetector(backbone, self.num_classes, hp.head_convs, hp.center_sampling_radius)

    def build_criterion(self) -> nn.Module:
        return nn.Identity()  # FCOS's losses are the detector's own (`DenseDetector.loss`)

    def make_metrics(self, prefix: str) -> MetricCollection:
        return MetricCollection({"boxes": BoxMetrics(self.threshold)}, prefix=prefix)

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone.body

    @property
    def head(self) -> nn.Module:
        return nn.ModuleList([self.model.backbone.fpn, self.model.head])

    # -- outputs ------------------------------------------------------------------------------------------
    def predict_forward(self, images: torch.Tensor) -> torch.Tensor:
        """The dense outputs (TTA works on detections: `predict_step`)."""
        return self(images)

    def compute_loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        targets = [{"boxes": t[t[:, 4] >= 0, :4].float(), "labels": t[t[:, 4] >= 0, 4].long()} for t in batch["target"]]
        losses = self.model.loss(outputs, targets, tuple(batch["image"].shape[-2:]))
        return losses["classification"] + losses["bbox_regression"] + losses["bbox_ctrness"]

    def detect(self, outputs: torch.Tensor, size: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
        return detections(outputs, self.min_score, self.nms_iou, self.max_detections, size=size)

    def original_pixels(self, preds: list[dict[str, torch.Tensor]], batch: dict) -> list[dict[str, torch.Tensor]]:
        """Detections in the model's pixels scaled to each original image (batch["size"]: its H, W)."""
        size = tuple(batch["image"].shape[-2:])
        return [rescaled(pred, size, hw) for pred, hw in zip(preds, batch["size"].tolist())]

    def metric_inputs(self, outputs: torch.Tensor, batch: dict) -> tuple[list, list, torch.Tensor]:
        preds = self.original_pixels(self.detect(outputs, tuple(batch["image"].shape[-2:])), batch)
        truths = [{"boxes": t[t[:, 4] >= 0, :4].float(), "labels": t[t[:, 4] >= 0, 4].long()} for t in batch["target"]]
        return preds, self.original_pixels(truths, batch), batch["index"]

    def log_metrics(self, metrics: MetricCollection, batch_size: int) -> None:
        """Box metrics are computed once per epoch over every image (`on_validation_epoch_end`)."""

    def _log_epoch(self, split: str) -> None:
        metrics = getattr(self, f"{split}_metrics")
        self.log_dict(metrics.compute(), prog_bar=True, sync_dist=False)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        """Detections of every TTA view (boxes flipped back), each NMS-ed at the decided IoU and fused by WBF, in
        original pixels, padded to `max_detections` rows per image; with TTA each view's detections too."""
        images = batch["image"]
        size = (int(images.shape[-2]), int(images.shape[-1]))
        per_image = [[as_numpy(rescaled(v, size, hw)) for v in views] for views, hw in
                     zip(view_predictions(lambda x: self.detect(self(x), tuple(x.shape[-2:])), images, self.tta),
                         batch["size"].tolist())]
        if self.tta == "none":
            return {"id": batch["id"], **pad_predictions([views[0] for views in per_image], self.max_detections),
                    "size": batch["size"]}
        decisions = self.decisions
        boxes = fused(per_image, batch["size"].cpu().numpy(), decisions["fusion_iou"], nms_iou=decisions["nms_iou"])
        # Each view's own boxes too (view_boxes (N, V, K, 4) ...): `cv` tunes the fusion on them out of fold, and
        # `ensemble` fuses every view of every member at once.
        views = [pad_predictions([v[j] for v in per_image], self.max_detections) for j in range(len(per_image[0]))]
        return {"id": batch["id"], **pad_predictions(boxes, self.max_detections), "size": batch["size"],
                **{f"view_{k}": np.stack([v[k] for v in views], axis=1) for k in ("boxes", "scores", "labels")}}

    def find_boxes(self, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """The boxes a submission keeps (`decided`: the model's threshold and NMS IoU, or its postprocess.json's),
        in each image's own pixels; TTA as the model predicts."""
        pipeline = build_pipeline(None, pre=[resize(*image_hw(self.image_size))])
        batch = {"image": torch.stack([pipeline(image=im)["image"] for im in images]).to(self.device),
                 "size": torch.tensor([im.shape[:2] for im in images]), "id": [str(i) for i in range(len(images))]}
        with torch.no_grad():
            arrays = self.predict_step(batch, 0)
        saved = Predictions("detection", np.asarray(batch["id"]), {k: arrays[k] for k in ("boxes", "scores", "labels")}, [])
        meta = self.prediction_meta(None)
        return [decided(p, meta) for p in image_predictions(saved)]

    @property
    def decisions(self) -> dict[str, float]:
        """The NMS IoU, fusion IoU (of TTA views) and score threshold predictions are made with: the model's
        options, or those `cv` tuned (`--model.postprocess`)."""
        if "_decisions" not in self.__dict__:
            tuned = load_decisions(self.postprocess, self.class_names) if self.postprocess else {}
            self._decisions = {k: float(tuned.get(k, getattr(self, k))) for k in ("nms_iou", "fusion_iou", "threshold")}
        return self._decisions

    def prediction_meta(self, datamodule: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {"image_size": self.image_size, "metric": self.metric, **self.decisions}
        if datamodule is not None:
            meta.update(box_style=datamodule.box_style, box_decimals=datamodule.box_decimals, no_finding=datamodule.no_finding)
        return meta

    def draw_validation(self, batch: dict, outputs: torch.Tensor) -> np.ndarray:
        """Validation images with their true boxes (green) and the detections above the threshold (red)."""
        preds = self.detect(outputs.float(), tuple(batch["image"].shape[-2:]))
        tiles = []
        for image, target, pred in zip(batch["image"][:16], batch["target"], preds):
            truth = unpadded(target.cpu().numpy())
            shown = keep_above({k: v.cpu().numpy() for k, v in pred.items()}, self.threshold)
            tiles.append(draw_boxes(to_uint8_image(image), truth["boxes"], shown["boxes"]))
        return image_grid(tiles)

    # -- predictions: ensembles, out-of-fold scores, submissions ----------------------------------------------
    @classmethod
    def combine(cls, predictions: list[Predictions], method: str = "wbf", weights: list[float] | None = None,
                store: Path | None = None) -> Predictions:
        """Each image's boxes of every member (of each of its TTA views when it has them), NMS-ed at the member's
        decided IoU, fused at the decided fusion IoU (weighted boxes fusion by default; or nms, soft_nms, nmw),
        weighted by `weights`; the fused boxes are submitted above the decided threshold (postprocess.json)."""
        if method not in cls.combine_methods:
            raise UserInputError(f"--method {method}: boxes combine by {', '.join(cls.combine_methods)}")
        first = predictions[0]
        if len(predictions) == 1 and "view_boxes" not in first.arrays:  # nothing to fuse
            return first
        # Members with TTA views bring each view (each NMS-ed at its member's decided IoU): one fusion of every
        # view of every member, as `cv` tuned the fusion on views.
        members = [(member_views(p), float(p.meta.get("nms_iou", 0.5)), w)
                   for p, w in zip(predictions, weights or [1.0] * len(predictions))]
        per_image = [[nms(view, iou) for views, iou, _ in members for view in views[i]] for i in range(len(first))]
        view_weights = None if weights is None else [w for views, _, w in members for _ in views[0]]
        iou = float(first.meta.get("fusion_iou", 0.55))
        boxes = fused(per_image, np.asarray(first.arrays["size"]), iou, method, view_weights)
        arrays = {**pad_predictions(boxes, max(len(f["scores"]) for f in boxes)), "size": np.asarray(first.arrays["size"])}
        return Predictions(first.task, first.ids, arrays, first.class_names, dict(first.meta), first.targets)

    @classmethod
    def submission(cls, predictions: Predictions, sample: pd.DataFrame | None = None,
                   source: str | Path = "sample submission") -> pd.DataFrame:
        """image_id, PredictionString (`--data.box_style`: conf x y w h ..., or class conf x_min y_min x_max y_max
        ... with the no-finding token) of the boxes the decisions keep; with a sample, its ids, order and columns."""
        return submission_frame(predictions, [decided(p, predictions.meta) for p in image_predictions(predictions)],
                                sample, source)

    @classmethod
    def write_outputs(cls, predictions: Predictions, out_dir: Path, sample: pd.DataFrame | None,
                      source: str | Path = "sample submission") -> None:
        """boxes.csv (a row per box the decisions keep: image_id, class, score, x_min, y_min, x_max, y_max) and,
        with a sample, submission.csv in its shape."""
        preds = [decided(p, predictions.meta) for p in image_predictions(predictions)]
        frame = long_rows([str(i) for i in predictions.ids], preds)
        names = np.asarray(predictions.class_names, dtype=object)
        frame.insert(1, "class", names[frame.pop("label").to_numpy(np.int64)] if len(frame) else [])
        write_csv(frame.round({"score": 4, "x_min": 1, "y_min": 1, "x_max": 1, "y_max": 1}), out_dir / cls.predictions_file)
        print(f"wrote {len(frame)} boxes of {len(predictions)} images to {out_dir / cls.predictions_file}")
        if sample is not None:
            submission = submission_frame(predictions, preds, sample, source)
            write_csv(submission, out_dir / SUBMISSION)
            print(f"wrote {len(submission)} rows shaped like {source} to {out_dir / SUBMISSION}")

    @classmethod
    def score(cls, predictions: Predictions) -> dict[str, float]:
        """COCO mAP (all boxes) and the task's metric (wheat and f2 of the boxes the decisions keep)."""
        preds, truths = image_predictions(predictions), [unpadded(t) for t in predictions.targets]
        metric = predictions.meta.get("metric", "map")
        values = box_metrics.coco_map(preds, truths)
        if metric not in values:
            kept = [decided(p, predictions.meta) for p in preds] if metric in THRESHOLDED else preds
            values.update(scored(metric, kept, truths))
        return {k: float(v) for k, v in values.items()}

    @classmethod
    def tune(cls, predictions: Predictions, out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """The decisions that maximise the task's metric on the out-of-fold boxes, saved as out_dir/postprocess.json
        (for `predict --model.postprocess` and `ensemble`): the NMS IoU and score threshold of one model's boxes
        (of its plain view when predicted with TTA), then, with TTA views, the WBF IoU that fuses them and the
        score threshold after fusion: the views of each held-out image stand in for the members of an ensemble,
        which no fold model has seen it with."""
        meta = predictions.meta
        metric = meta.get("metric", "map")
        truths = [unpadded(t) for t in predictions.targets]
        raw = scored(metric, [decided(p, meta) for p in image_predictions(predictions)], truths)[metric]
        views = member_views(predictions)
        sizes = np.asarray(predictions.arrays["size"])
        made = float(meta.get("nms_iou", 0.6))  # a looser IoU than the predictions' cannot bring suppressed boxes back
        value, decisions = search_decisions(metric, [v[:1] for v in views], sizes, truths, [i for i in NMS_IOUS if i <= made])
        scores = {f"{metric}_raw": raw, f"{metric}_tuned": value}
        print(f"tuned on out-of-fold boxes: NMS IoU {decisions['nms_iou']}, score threshold {decisions['threshold']}: "
              f"{metric} {raw:.4f} -> {value:.4f}")
        if len(views[0]) > 1:
            plain = value
            value, decisions = search_decisions(metric, views, sizes, truths, (decisions["nms_iou"],), FUSION_IOUS)
            scores[f"{metric}_fused"] = value
            print(f"tuned on out-of-fold fusions of {len(views[0])} TTA views: WBF IoU {decisions['fusion_iou']}, score "
                  f"threshold {decisions['threshold']}: {metric} {value:.4f}")
            if value < plain:
                print(f"the fused views score below the plain view out of fold ({value:.4f} < {plain:.4f}): predict with "
                      "fewer views (a model trained without quarter turns does not see objects turned by d4)", file=sys.stderr)
        path = save_decisions(out_dir, predictions.class_names, decisions, scores)
        print(f"decisions -> {path} (use: predict --model.postprocess {path}; `ensemble` of the CV run reads them)")
        return decisions, {**scores, "postprocess": str(path)}

    @classmethod
    def report_sections(cls, predictions: Predictions, images: ImageSource) -> list[Section]:
        """Precision and recall per class (IoU 0.5, boxes the decisions keep) and the worst images with their
        true (green) and predicted (red) boxes."""
        preds = [decided(p, predictions.meta) for p in image_predictions(predictions)]
        truths = [unpadded(t) for t in predictions.targets]
        counts = np.stack([box_metrics.match_counts(p, t, (0.5,))[0] for p, t in zip(preds, truths)])
        per_image = counts[:, 0] / np.maximum(counts.sum(1), 1)
        table = Table(["class", "true boxes", "predicted", "precision", "recall"], class_rows(preds, truths, predictions.class_names),
                      "IoU >= 0.5, the boxes above the decided score threshold")
        boxes = Section("Boxes", [f"{len(preds)} images, {int(counts[:, 0].sum())} true positives, {int(counts[:, 1].sum())} "
                                  f"false positives, {int(counts[:, 2].sum())} missed at IoU 0.5"], tables=[table],
                        plots=[histogram({"out of fold": per_image}, "matched share per image", "TP / (TP + FP + FN) at IoU 0.5",
                                         value_range=(0, 1))])
        order = np.argsort(per_image, kind="stable")
        sizes = np.asarray(predictions.arrays["size"])

        def draw(i: int, image: np.ndarray) -> np.ndarray:
            k = order[i]
            scale = np.array([image.shape[1] / sizes[k][1], image.shape[0] / sizes[k][0]] * 2, np.float32)
            return draw_boxes(image, truths[k]["boxes"] * scale, preds[k]["boxes"] * scale)

        tiles, notes = gallery(predictions.ids[order], [f"TP/(TP+FP+FN) {per_image[k]:.2f}" for k in order], images, draw)
        worst = Section("Worst images", ["true boxes green, predicted red (the boxes a submission keeps); lowest share "
                                         "of matched boxes first", *notes], gallery=tiles)
        return [boxes, worst]


def submission_frame(predictions: Predictions, preds: list[dict[str, np.ndarray]], sample: pd.DataFrame | None,
                     source: str | Path) -> pd.DataFrame:
    """The prediction strings of each image's kept boxes `preds` (in the style of the predictions' meta); with a
    sample, in its ids, order and columns."""
    meta = predictions.meta
    frame = prediction_strings([image_key(i) for i in predictions.ids], preds, meta.get("box_style", "conf_xywh"),
                               meta.get("no_finding"), classes=predictions.class_names,
                               decimals=int(meta.get("box_decimals", 0)))
    if sample is not None:
        return follow_sample(predictions.ids, {sample.columns[1]: frame["PredictionString"].to_numpy()}, sample, source)
    return frame


def view_members(predictions: Predictions) -> list[list[dict[str, np.ndarray]]]:
    """Per image, the boxes of each TTA view saved beside the fused ones (`view_boxes` ...; padding dropped)."""
    boxes, scores = np.asarray(predictions.arrays["view_boxes"]), np.asarray(predictions.arrays["view_scores"])
    labels = np.asarray(predictions.arrays["view_labels"])
    return [[{"boxes": b[lab >= 0].astype(np.float32), "scores": s[lab >= 0].astype(np.float32), "labels": lab[lab >= 0]}
             for b, s, lab in zip(*views)] for views in zip(boxes, scores, labels)]


def member_views(predictions: Predictions) -> list[list[dict[str, np.ndarray]]]:
    """Per image, its TTA views' boxes, or its boxes as the one view of predictions made without TTA."""
    return view_members(predictions) if "view_boxes" in predictions.arrays else [[p] for p in image_predictions(predictions)]


def fused(members: list[list[dict[str, Any]]], sizes: np.ndarray, fusion_iou: float, method: str = "wbf",
          weights: list[float] | None = None, nms_iou: float | None = None) -> list[dict[str, np.ndarray]]:
    """Per image (`members[i]`: its members' boxes; `sizes[i]`: its height and width), the members' boxes fused;
    with `nms_iou`, each member's boxes NMS-ed first (the boxes it would submit before the threshold), so that
    fusion joins members' boxes of one object, not a member's near-duplicates."""
    if nms_iou is not None:
        members = [[nms(m, nms_iou) for m in image] for image in members]
    return [fuse_boxes(image, (int(h), int(w)), method, iou_thr=fusion_iou, weights=weights)
            for image, (h, w) in zip(members, sizes)]


def search_decisions(metric: str, members: list[list[dict[str, np.ndarray]]], sizes: np.ndarray, truths: list[dict],
                     nms_ious: Sequence[float], fusion_ious: Sequence[float | None] = (None,)) -> tuple[float, dict[str, float]]:
    """The best value of `metric` and its decisions over NMS IoUs, fusion IoUs (None: the first member's boxes
    alone, not fused) and score thresholds (only the lowest for the threshold-free mAPs)."""
    thresholds = THRESHOLDS if metric in THRESHOLDED else (min(THRESHOLDS),)
    best: tuple[float, dict[str, float]] = (-np.inf, {})
    for nms_iou in nms_ious:
        for fusion_iou in fusion_ious:
            boxes = [m[0] for m in members] if fusion_iou is None else fused(members, sizes, fusion_iou, nms_iou=nms_iou)
            boxes = [nms(p, nms_iou) for p in boxes]
            for threshold in thresholds:
                value = scored(metric, [keep_above(p, threshold) for p in boxes], truths)[metric]
                if value > best[0] + 1e-9:
                    best = (value, {"nms_iou": nms_iou, **({} if fusion_iou is None else {"fusion_iou": fusion_iou}),
                                    "threshold": float(threshold)})
    return best


def class_rows(preds: list[dict], truths: list[dict], class_names: list[str]) -> list[list[Any]]:
    """Per class: true boxes, predicted boxes, precision and recall at IoU 0.5."""
    rows = []
    for k, name in enumerate(class_names):
        only = [({**p, **{f: p[f][p["labels"] == k] for f in ("boxes", "labels", "scores")}},
                 {f: t[f][t["labels"] == k] for f in ("boxes", "labels")}) for p, t in zip(preds, truths)]
        tp, fp, fn = sum(box_metrics.match_counts(p, t, (0.5,))[0] for p, t in only)
        rows.append([name, int(tp + fn), int(tp + fp), float(tp / max(tp + fp, 1)), float(tp / max(tp + fn, 1))])
    return rows


def draw_boxes(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, side: int = 192) -> np.ndarray:
    """An RGB image scaled to `side` with true boxes (green) and predicted ones (red), in the image's pixels."""
    scale = side / max(image.shape[:2])
    tile = cv2.resize(np.ascontiguousarray(image), (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                      interpolation=cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA)
    for boxes, color in ((truth, TRUE_COLOR), (pred, PRED_COLOR)):
        for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4) * scale:
            cv2.rectangle(tile, (round(x0), round(y0)), (round(x1), round(y1)), color, 1)
    return tile


def rescaled(pred: dict[str, torch.Tensor], size: tuple[int, int], to: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Boxes found in an image of `size` (height, width) in the pixels of one of size `to`."""
    (height, width), (h, w) = size, to
    scale = torch.tensor([w / width, h / height, w / width, h / height], device=pred["boxes"].device)
    return {**pred, "boxes": pred["boxes"] * scale}


def as_numpy(pred: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """One image's detections as numpy: boxes and scores float32, labels int64."""
    return {k: v.detach().cpu().numpy().astype(np.int64 if k == "labels" else np.float32) for k, v in pred.items()}


def pad_predictions(preds: list[dict[str, np.ndarray]], rows: int) -> dict[str, np.ndarray]:
    """Per-image detections as padded arrays: boxes (N, K, 4), scores (N, K) (0 for padding), labels (N, K) (-1)."""
    rows = max(rows, 1)
    boxes, scores = np.zeros((len(preds), rows, 4), np.float32), np.zeros((len(preds), rows), np.float32)
    labels = np.full((len(preds), rows), -1, np.int64)
    for i, p in enumerate(preds):
        order = np.argsort(-np.asarray(p["scores"]), kind="stable")[:rows]
        n = len(order)
        boxes[i, :n], scores[i, :n], labels[i, :n] = np.asarray(p["boxes"])[order], np.asarray(p["scores"])[order], np.asarray(p["labels"])[order]
    return {"boxes": boxes, "scores": scores, "labels": labels}


def image_predictions(predictions: Predictions) -> list[dict[str, np.ndarray]]:
    """The saved padded arrays back as one {"boxes", "scores", "labels"} per image (padding dropped)."""
    boxes, scores = np.asarray(predictions.arrays["boxes"]), np.asarray(predictions.arrays["scores"])
    labels = np.asarray(predictions.arrays["labels"])
    return [{"boxes": b[lab >= 0].astype(np.float32), "scores": s[lab >= 0].astype(np.float32), "labels": lab[lab >= 0].astype(np.int64)}
            for b, s, lab in zip(boxes, scores, labels)]


register_task("detection", DetectionTask, DetectionDataModule, demo=make_detection,
              summary="object detection (FCOS on an FPN): every object's box and class, WBF ensembles, box metrics")
