"""Segmentation of large images by tiles: trained on sampled tiles, validated and predicted tile by tile on
each image's grid and stitched band by band (`models.tiling.BandStitcher`), so memory is bounded by a row of
tiles whatever the image's size. Predictions are a probability map file per image (`predictions.maps`) and
its pixel counts at a few thresholds (scored and tuned by `cv` without reading a map again)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from lightning_cv.data.slides import SlideSegmentationDataModule, make_slides
from lightning_cv.errors import UserInputError
from lightning_cv.io.images import write_csv, write_image
from lightning_cv.models.tiling import BandStitcher
from lightning_cv.pictures.plots import ImageSource, Section, Table, gallery
from lightning_cv.predictions.decisions import save_decisions
from lightning_cv.predictions.files import Predictions
from lightning_cv.predictions.maps import MapWriter, map_rle, mean_map, preview
from lightning_cv.predictions.postprocess import THRESHOLDS, counted_dice, search_postprocess
from lightning_cv.predictions.submission import SUBMISSION, follow_sample
from lightning_cv.predictions.writer import PredictionWriter
from lightning_cv.tasks.base import CVTask, ensemble_weights
from lightning_cv.tasks.registry import register_task
from lightning_cv.tasks.segmentation import SegmentationTask

PREVIEW_SIDE = 1024


class SlideStitch:
    """One image's tiles -> blended bands -> its pixels above each threshold, those in the truth (labelled
    tiles), and, with a `path`, its probability map file."""

    def __init__(self, size: tuple[int, int], native: int, overlap: int, thresholds: Sequence[float], labelled: bool,
                 path: Path | None = None):
        self.size, self.labelled = size, labelled
        self.truth = 0  # the mask's pixels, blank tiles included (labelled images)
        self.stitcher = BandStitcher(size, native, overlap, channels=2 if labelled else 1)
        self.thresholds = list(thresholds)
        self.above, self.inter = np.zeros(len(thresholds), np.int64), np.zeros(len(thresholds), np.int64)
        self.writer = MapWriter(path, size) if path is not None else None

    def add(self, y: int, x: int, probs: np.ndarray, truth: np.ndarray | None) -> None:
        values = probs[None] if truth is None else np.stack([probs, truth.astype(np.float32)])
        self._take(self.stitcher.add(y, x, values))

    def finish(self) -> SlideStitch:
        self._take(self.stitcher.finish())
        if self.writer is not None:
            self.writer.close()
        return self

    def _take(self, bands: list[tuple[int, np.ndarray]]) -> None:
        for _, band in bands:
            if self.writer is not None:
                self.writer.add(band[0])
            if not band.any():  # rows of glass: nothing to count
                continue
            truth = band[1] > 0.5 if self.labelled else None
            for k, threshold in enumerate(self.thresholds):
                hit = band[0] > threshold
                self.above[k] += int(hit.sum())
                if truth is not None:
                    self.inter[k] += int((hit & truth).sum())


class SlideWriter(PredictionWriter):
    """`predict` of large images: a row per image (its map file under `maps/`, size and pixel counts) as
    soon as its last tile is stitched; then predictions.npz and submission.csv as for every task."""

    def __init__(self, output_dir: str | Path):
        super().__init__(output_dir)
        self._open: dict[str, SlideStitch] = {}

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int) -> None:
        if self._shard is None:
            self.on_predict_start(trainer, pl_module)
        maps = self.output_dir / "maps"
        for index, id_, done in pl_module.feed_tiles(self._open, prediction, maps):
            self._shard.append("id", [id_])
            self._shard.append("map", [str((maps / f"{id_}.npy").resolve())])
            self._shard.append("size", np.asarray([done.size], np.int64))
            self._shard.append("above", done.above[None, None])
            self._shard.append("inter", done.inter[None, None])
            self._shard.append("index", np.asarray([index], np.int64))


class SlideSegmentationTask(SegmentationTask):
    """Binary segmentation of large images by tiles (`SlideSegmentationDataModule`): an smp model on tiles.

    Args:
        val_tile_size: side (model pixels, a multiple of 32) of the tiles validation runs on, larger than the
            training tiles (the score does not change with it; larger tiles run faster); default: tile_size.
        **kwargs: segmentation's options (arch, encoder, threshold, tile_overlap, tta, postprocess ...); its
            `tile_size` is the side of the tiles `predict` runs on (default: the training tiles', --data.image_size).
    """

    outputs = ("map", "size", "above", "inter")
    inference_options = (*SegmentationTask.inference_options, "val_tile_size")
    combine_methods = ("mean",)
    combined = ("map",)  # averaged map files, by `combine`

    def __init__(self, val_tile_size: int | None = None, **kwargs: Any):
        if kwargs.get("num_classes", 2) != 2:
            raise UserInputError(f"large images are segmented into one foreground class, not {kwargs['num_classes'] - 1}")
        if val_tile_size is not None and (val_tile_size < 32 or val_tile_size % 32):
            raise ValueError(f"val_tile_size must be a positive multiple of 32 (the encoder stride), got {val_tile_size}")
        super().__init__(**kwargs)
        self.val_tile_size = val_tile_size
        self.val_slide_dice = MeanMetric()
        self._val_open: dict[str, SlideStitch] = {}

    def setup(self, stage: str) -> None:
        """The inference grid of this stage: validation's tiles for fit and validate, `tile_size` for predict."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if hasattr(datamodule, "arrange"):
            train_side = int(datamodule.tile)
            tile = (self.val_tile_size or self.tile_size) if stage in ("fit", "validate") else self.tile_size
            datamodule.arrange(tile or train_side, self.tile_overlap)

    def predict_forward(self, images: torch.Tensor) -> torch.Tensor:
        """Each tile whole (the grid is the data's), with TTA."""
        return CVTask.predict_forward(self, images)

    @property
    def count_thresholds(self) -> list[float]:
        return sorted({*THRESHOLDS, float(self.threshold)})

    def feed_tiles(self, open_: dict[str, SlideStitch], batch: dict[str, Any], maps: Path | None = None
                   ) -> list[tuple[int, str, SlideStitch]]:
        """Stitch a batch of grid tiles (with their `probs`) into their images; the images completed."""
        probs, done = batch["probs"].float(), []
        native = int(batch["native"][0][0])
        if probs.shape[-1] != native:
            probs = F.interpolate(probs, size=(native, native), mode="bilinear", align_corners=False)
        probs = probs[:, 0].cpu().numpy()
        for k, id_ in enumerate(batch["id"]):
            if id_ not in open_:
                size, overlap = tuple(int(v) for v in batch["size"][k]), int(batch["native"][k][1])
                open_[id_] = SlideStitch(size, native, overlap, self.count_thresholds, "target" in batch,
                                         None if maps is None else maps / f"{id_}.npy")
                open_[id_].truth = int(batch["truth"][k]) if "truth" in batch else 0
            y, x = (int(v) for v in batch["pos"][k])
            open_[id_].add(y, x, probs[k], batch["target"][k].cpu().numpy() if "target" in batch else None)
            if bool(batch["last"][k]):
                done.append((int(batch["index"][k]), id_, open_.pop(id_).finish()))
        return done

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        probs = self.predict_forward(batch["image"]).float().sigmoid()
        return {**{k: v for k, v in batch.items() if k != "image"}, "probs": probs}

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        """Tiles stitched into their images; an image's Dice once its last tile is in (val/dice: their mean)."""
        outputs = self.predict_forward(batch["image"])
        index = self.count_thresholds.index(float(self.threshold))
        for _, _, done in self.feed_tiles(self._val_open, {**batch, "probs": outputs.float().sigmoid()}):
            self.val_slide_dice.update(torch.tensor(float(counted_dice(done.above[index], done.inter[index], done.truth))))
        self.log("val/dice", self.val_slide_dice, on_step=False, on_epoch=True, prog_bar=True, batch_size=1)
        return {"outputs": outputs.detach()}

    def on_validation_epoch_start(self) -> None:
        self._val_open.clear()  # images a sanity check left half stitched

    def prediction_writer(self, output_dir: str | Path) -> PredictionWriter:
        return SlideWriter(output_dir)

    def prediction_meta(self, datamodule: Any) -> dict[str, Any]:
        return {**super().prediction_meta(datamodule), "count_thresholds": self.count_thresholds}

    def _examples(self, batch: dict, outputs: torch.Tensor, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Grid tiles' native masks shrunk to the model's tiles, for the pictures."""
        target = batch["target"][:n]
        if target.shape[-1] != outputs.shape[-1]:
            target = F.interpolate(target[:, None].float(), size=tuple(outputs.shape[-2:]), mode="nearest")[:, 0].long()
        return super()._examples({**batch, "target": target}, outputs, n)

    # -- predictions: counts, maps, submissions --------------------------------------------------------------
    @classmethod
    def _counts(cls, predictions: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
        above, inter = np.asarray(predictions.arrays["above"]), np.asarray(predictions.arrays["inter"])
        return above, inter, np.asarray(predictions.targets), list(predictions.meta.get("count_thresholds", THRESHOLDS))

    @staticmethod
    def _threshold_column(predictions: Predictions) -> int:
        """Which of the counted thresholds is the predictions' threshold (the nearest)."""
        thresholds = np.asarray(predictions.meta.get("count_thresholds", THRESHOLDS))
        return int(np.argmin(np.abs(thresholds - float(predictions.meta.get("threshold", 0.5)))))

    @classmethod
    def image_dice(cls, predictions: Predictions) -> np.ndarray:
        """Each labelled image's Dice at the predictions' threshold (and minimum area), from the counts."""
        above, inter, truth, _ = cls._counts(predictions)
        k = cls._threshold_column(predictions)
        return counted_dice(above[:, 0, k], inter[:, 0, k], truth[:, 0], float(predictions.meta.get("min_area", 0)))

    @classmethod
    def score(cls, predictions: Predictions) -> dict[str, float]:
        """The mean Dice over the images (HuBMAP's metric)."""
        return {"dice": float(cls.image_dice(predictions).mean())}

    @classmethod
    def tune(cls, predictions: Predictions, out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """The threshold that maximises the mean Dice over the out-of-fold images, into postprocess.json."""
        above, inter, truth, thresholds = cls._counts(predictions)
        raw = float(cls.image_dice(predictions.with_meta(threshold=0.5, min_area=0)).mean())
        (threshold,), (area,), tuned = search_postprocess((above, inter, truth), tuple(thresholds), (0,))
        decisions = {"threshold": threshold, "min_area": area}
        path = save_decisions(out_dir, predictions.class_names[1:], decisions, {"dice_mean": tuned, "dice_mean_raw": raw})
        print(f"out-of-fold mean Dice of {len(predictions)} images: {raw:.4f} at 0.5, {tuned:.4f} at threshold {threshold} "
              f"-> {path} (use: predict --model.postprocess {path})")
        return decisions, {"dice_mean_raw": raw, "dice_mean_tuned": tuned, "postprocess": str(path)}

    @classmethod
    def combine(cls, predictions: list[Predictions], method: str = "mean", weights: list[float] | None = None,
                store: Path | None = None) -> Predictions:
        """The weighted mean of the members' maps, image by image and band by band, into maps beside `store`
        (the ensemble's folder); the members' counts do not carry over."""
        if method not in cls.combine_methods:
            raise UserInputError(f"--method {method}: maps of large images combine by mean")
        w = ensemble_weights(weights, len(predictions))
        first = predictions[0]
        folder = (store.parent if store is not None else Path.cwd()) / "ensemble-maps"
        maps = [str(mean_map([p.arrays["map"][i] for p in predictions], w, folder / f"{id_}.npy").resolve())
                for i, id_ in enumerate(first.ids)]
        zeros = np.zeros_like(np.asarray(first.arrays["above"]))
        arrays = {**first.arrays, "map": np.asarray(maps), "above": zeros, "inter": zeros}
        return Predictions(first.task, first.ids, arrays, first.class_names, dict(first.meta))

    @classmethod
    def submission(cls, predictions: Predictions, sample: pd.DataFrame | None = None,
                   source: str | Path = "sample submission", masks: Any = None) -> pd.DataFrame:
        """id, rle_mask (in a sample's shape: its ids, order and columns), each encoded band by band from its map."""
        meta = predictions.meta
        rles = [map_rle(path, float(meta.get("threshold", 0.5)), meta.get("rle_order", "C"), float(meta.get("min_area", 0)))
                for path in predictions.arrays["map"]]
        if sample is not None:
            return follow_sample(predictions.ids, {"rle_mask": np.asarray(rles, dtype=object)}, sample, source)
        return pd.DataFrame({"id": predictions.ids, "rle_mask": rles})

    @classmethod
    def write_outputs(cls, predictions: Predictions, out_dir: Path, sample: pd.DataFrame | None,
                      source: str | Path = "sample submission") -> None:
        """submission.csv, and previews/<id>.png: each map's probabilities at most 1024 px on a side."""
        for id_, path in zip(predictions.ids, predictions.arrays["map"]):
            write_image(out_dir / "previews" / f"{id_}.png", preview(path, PREVIEW_SIDE))
        frame = cls.submission(predictions, sample, source)
        write_csv(frame, out_dir / SUBMISSION)
        print(f"wrote {len(predictions)} masks to {out_dir / SUBMISSION} (probability maps in {out_dir / 'maps'}, "
              f"previews in {out_dir / 'previews'})")

    @classmethod
    def oof_columns(cls, predictions: Predictions) -> pd.DataFrame:
        """Each image's Dice and predicted pixels at the threshold."""
        frame = pd.DataFrame({"predicted_pixels": np.asarray(predictions.arrays["above"])[:, 0, cls._threshold_column(predictions)]})
        if predictions.targets is not None:
            frame.insert(0, "dice", cls.image_dice(predictions).round(4))
        return frame

    @classmethod
    def report_sections(cls, predictions: Predictions, images: ImageSource) -> list[Section]:
        """Each image's Dice, true and predicted pixels (worst first)."""
        dice = cls.image_dice(predictions)
        pixels = cls.oof_columns(predictions)["predicted_pixels"].to_numpy()
        truth = np.asarray(predictions.targets)[:, 0]
        order = np.argsort(dice, kind="stable")
        rows = [[str(predictions.ids[i]), int(truth[i]), int(pixels[i]), round(float(dice[i]), 4)] for i in order]
        tiles, notes = gallery(predictions.ids[order], [f"Dice {dice[i]:.3f}" for i in order], images, side=256)
        return [Section("Images", ["Dice per image at full resolution, stitched from the tiles, worst first", *notes],
                        [Table(["image", "true pixels", "predicted pixels", "Dice"], rows)], gallery=tiles)]


register_task("slides", SlideSegmentationTask, SlideSegmentationDataModule, demo=make_slides,
              summary="segmentation of large images (slides, scenes) by tiles; RLE written band by band")
