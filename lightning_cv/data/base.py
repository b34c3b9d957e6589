"""What every task's DataModule shares: standard options, the setup template, hold-out split, DDP-safe loaders."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_info
from sklearn.model_selection import StratifiedGroupKFold, train_test_split
from torch.utils.data import DataLoader, Dataset, DistributedSampler, WeightedRandomSampler

from lightning_cv.data.augment import AugmentSpec, Preprocess, build_pipeline, image_hw, resize, seed_worker
from lightning_cv.data.dataset import ImageDataset
from lightning_cv.data.folds import fold_split, read_folds
from lightning_cv.data.survey import Reading, Survey
from lightning_cv.errors import UserInputError
from lightning_cv.io.cache import ArrayCache, CachedReader, CacheMode, check_mode, default_cache_dir, describe
from lightning_cv.io.images import IMAGE_EXTENSIONS, DataError, ImageReader
from lightning_cv.io.intensity import Window, check_window
from lightning_cv.pictures.draw import to_uint8_image
from lightning_cv.predictions.submission import read_sample, sample_for, sample_rows

SamplerMode = Literal["none", "balanced"]


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_num_workers() -> int:
    """Loader workers from the CPU count: none on 2 cores, where workers only compete with training."""
    cpus = usable_cpus()
    return 0 if cpus <= 2 else min(8, cpus - 1)


def input_path(data_dir: Path, name: str) -> Path:
    """An input file given relative to the data folder (the training config's way), else as written
    (absolute, or relative to the working directory: a test folder's sample submission)."""
    path = Path(name)
    if path.is_absolute() or (data_dir / path).exists() or not path.exists():
        return data_dir / path
    return path


def no_images_hint(directory: Path, option: str) -> str:
    """What to try when `directory` holds no images: the option that names it, and its subfolders (TGS's
    `train/images` and `train/masks`)."""
    folders = sorted(p.name for p in directory.iterdir() if p.is_dir())[:4] if directory.is_dir() else []
    hint = f"point {option} at the folder that holds them"
    if folders:
        hint += f"; it has folders {', '.join(f'{f}/' for f in folders)}: e.g. {option} {directory.name}/{folders[0]}"
    return hint


def list_images(directory: Path, channel_suffix: str | None = None, option: str = "--data.image_dir") -> list[Path]:
    """The images of a folder, sorted; with `channel_suffix` (per-channel files), the stems of the files
    that end with it (`<id>_red.png` -> `<id>`). `option` names the option that points at the folder."""
    if not directory.is_dir():
        raise DataError(f"{directory}: image directory not found ({option})")
    if channel_suffix:
        paths = sorted(p.with_name(p.name[: -len(channel_suffix)]) for p in directory.glob(f"*{channel_suffix}"))
        if not paths:
            raise DataError(f"{directory}: no images ending with {channel_suffix!r} (--data.channel_suffixes) found")
        return paths
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise DataError(f"{directory}: no images ({', '.join(IMAGE_EXTENSIONS)}) found: {no_images_hint(directory, option)}")
    return paths


def check_group_pattern(pattern: str | None) -> None:
    """--data.group_pattern is a regular expression with one group (else a one-line UserInputError)."""
    if pattern is None:
        return
    try:
        if re.compile(pattern).groups != 1:
            raise re.error("needs exactly one (group)")
    except re.error as err:
        raise UserInputError(f"--data.group_pattern {pattern!r}: {err} (e.g. '^([^_]+)_' for Carvana's car id)") from None


def check_holdout(n: int, val_fraction: float) -> None:
    """A hold-out of `val_fraction` of `n` rows is possible (else a one-line DataError)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--data.val_fraction must be in (0, 1), got {val_fraction}")
    if n < 2:
        raise DataError(f"{n} training image(s): a train/validation split needs at least 2")


def holdout_split(
    n: int, val_fraction: float, seed: int, stratify: Sequence[Any] | None = None, names: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-seed train/val indices, stratified by `stratify` (class indices into `names`) when given; with
    `groups`, every group on one side (the first of round(1 / val_fraction) grouped folds, as `cv` makes them)."""
    check_holdout(n, val_fraction)
    indices = np.arange(n)
    if groups is not None:
        n_splits = max(2, int(round(1 / val_fraction)))
        if len(set(groups)) < n_splits:
            raise DataError(f"{len(set(groups))} groups (--data.group_pattern) cannot hold out a {val_fraction:g} share "
                            f"of the rows: needs at least {n_splits} groups")
        labels = np.zeros(n) if stratify is None else np.asarray(stratify)
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
        train, val = next(splitter.split(indices, labels, np.asarray(groups)))
    elif stratify is not None:
        values, counts = np.unique(np.asarray(stratify), return_counts=True)
        if (counts < 2).any():
            rare = ", ".join(str(names[v] if names else v) for v in values[counts < 2])
            raise DataError(f"class(es) {rare} have a single image: a stratified hold-out needs at least 2 per class")
        n_val = max(int(round(n * val_fraction)), len(values))
        train, val = train_test_split(indices, test_size=n_val, random_state=seed, stratify=stratify)
    else:
        train, val = train_test_split(indices, test_size=val_fraction, random_state=seed)
    return np.sort(train), np.sort(val)


@dataclass
class Rows:
    """The rows a Dataset is built from: ids, items (image paths, or indices into an array), targets
    (None when unlabelled) and per-row extras (original sizes, mask sources ...)."""

    ids: list[str]
    items: list[Any]
    targets: Any = None
    extra: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: Sequence[int] | np.ndarray) -> Rows:
        rows = np.asarray(rows, dtype=np.int64)
        return Rows([self.ids[i] for i in rows], [self.items[i] for i in rows],
                    None if self.targets is None else np.asarray(self.targets)[rows],
                    {k: [v[i] for i in rows] for k, v in self.extra.items()})

    def __add__(self, other: Rows) -> Rows:
        targets = None if self.targets is None else np.concatenate([np.asarray(self.targets), np.asarray(other.targets)])
        return Rows(self.ids + other.ids, self.items + other.items, targets,
                    {k: v + other.extra[k] for k, v in self.extra.items()})


class CVDataModule(L.LightningDataModule):
    """Standard options, the one `setup` every task shares, and DDP-safe loaders.

    `setup` is a template: labelled rows (`labelled_rows`) are split into train / val by the hold-out
    (`holdout`) or by `fold` of `folds_csv`, unlabelled images (`unlabelled_rows`) are predicted, a
    sample submission is checked against them; `build_dataset` turns rows into a Dataset. A task's
    DataModule implements those hooks (and `fold_table`, `class_names`) and nothing else.

    Args:
        data_dir: the competition folder.
        image_size: side of the square the model sees, or [height, width] (e.g. [256, 1600] plates).
        batch_size: per device.
        num_workers: DataLoader workers; null picks from the CPU count (0 on 2 cores).
        val_fraction: share of the training rows held out for validation (stratified, seeded).
        seed: seed of the hold-out split and of the augmentation streams.
        train_augment: albumentations pipeline for training, as a list (see `lightning_cv.data.augment`).
        predict_dir: folder of images for `predict`; defaults to `data_dir/test`.
        fold: validate on this fold of `folds_csv` and train on the others (instead of the hold-out).
        folds_csv: the fold of every training row (written by `lightning-cv cv`).
        predict_split: what `predict` runs on: "test" (predict_dir) or "val" (the held-out rows,
            e.g. a fold's out-of-fold predictions).
        sample_submission: the competition's sample submission (relative to data_dir, or absolute):
            `predict` also writes submission.csv with its ids, order and columns.
        cache: decode and resize every image (and mask) once into `cache_dir`: "memmap" (.npy read
            through a memory map), "npz" (compressed), or "none". Entries are keyed by source file,
            size, mtime and the resize; augmentations still run every epoch.
        cache_dir: where the cache lives (never inside the data): default $LIGHTNING_CV_CACHE, else
            ~/.cache/lightning-cv.
        sampler: how training batches are drawn: "none" (shuffled, each image once per epoch) or
            "balanced" (single-label classes: drawn with replacement, each class equally likely;
            len(train) draws per epoch, split between ranks by Lightning's DistributedSamplerWrapper).
        channels: input channels read from each image: 3 (RGB), 1 (grey), or 4 and more (RGBA kept, a
            multi-band TIFF's bands); the model's first layer takes as many (timm adapts pretrained ones).
        channel_suffixes: one grey file per channel, named `<id><suffix>` (HPA: [_red.png, _green.png,
            _blue.png, _yellow.png]), stacked in this order; sets `channels` to their number.
        window: how 16-bit, float and DICOM intensities become 8 bits: [center, width] in the image's
            units (DICOM: after RescaleSlope/Intercept, e.g. [40, 400] for CT soft tissue), "file"
            (each DICOM's own WindowCenter/Width), "percentile" (0.5-99.5 % of each image), or null
            (16-bit: the bits the image uses; DICOM: the range of its BitsStored).
        group_pattern: a regular expression with one group that takes a row's group from its id (e.g.
            '^([^_]+)_' for Carvana's 16 views of a car): `cv` keeps each group inside one fold.
    """

    task_name: ClassVar[str] = "task"  # set by `register_task`
    # Labels are space-separated tags: folds by iterative stratification over them.
    multilabel: ClassVar[bool] = False

    def __init__(
        self,
        data_dir: str = "data",
        image_size: int | list[int] = 64,
        batch_size: int = 32,
        num_workers: int | None = None,
        val_fraction: float = 0.2,
        seed: int = 42,
        train_augment: AugmentSpec | None = None,
        predict_dir: str | None = None,
        fold: int | None = None,
        folds_csv: str | None = None,
        predict_split: Literal["test", "val"] = "test",
        sample_submission: str | None = None,
        cache: CacheMode = "none",
        cache_dir: str | None = None,
        sampler: SamplerMode = "none",
        group_pattern: str | None = None,
        channels: int = 3,
        channel_suffixes: list[str] | None = None,
        window: Window = None,
    ):
        super().__init__()
        # The recipe a checkpoint carries (`datamodule_hyper_parameters`): every option, and at fit the facts
        # read from the training files (`recipe_facts`), so predicting needs neither the config nor those files.
        self.save_hyperparameters(logger=False)
        self.data_dir = Path(data_dir)
        self.image_size = image_size
        try:
            self.image_hw = image_hw(image_size)
        except ValueError as err:
            raise DataError(f"--data.image_size: {err}") from None
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.train_augment = train_augment
        self.predict_dir = Path(predict_dir) if predict_dir else self.data_dir / "test"
        self.fold = fold
        self.folds_csv = Path(folds_csv) if folds_csv else None
        self.predict_split = predict_split
        self.sample_submission = input_path(self.data_dir, sample_submission) if sample_submission else None
        self.cache = check_mode(cache)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        if sampler not in ("none", "balanced"):
            raise UserInputError(f"--data.sampler {sampler!r}: choose none or balanced")
        self.sampler = sampler
        self.group_pattern = group_pattern
        if channels < 1:
            raise UserInputError(f"--data.channels must be at least 1, got {channels}")
        self.channel_suffixes = list(channel_suffixes) if channel_suffixes else None
        self.channels = len(self.channel_suffixes) if self.channel_suffixes else channels
        self.window = window
        self.decoder = ImageReader(self.channels, check_window(window), self.channel_suffixes)
        check_group_pattern(group_pattern)
        self.datasets: dict[str, Dataset] = {}
        self.split: pd.DataFrame | None = None  # id, split (train / pseudo / val) once set up for fit
        self._reported = False

    # -- recognizing a competition folder (`lightning-cv init`) ------------------------------------
    @classmethod
    def recognize(cls, survey: Survey) -> Reading | None:
        """How sure this task is that `survey`'s folder is its kind, and the options it would set (None: not
        its kind). Each task's DataModule teaches `init` its layouts here."""
        return None

    # -- the setup template ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.hparams.update(self.recipe_facts())
        if stage in ("fit", "validate") and "val" not in self.datasets:
            rows = self.labelled_rows()
            train, val = self.split_rows(rows)
            training = self.training_rows(rows.take(train))
            self.datasets["train"] = self.train_dataset(training)
            self.datasets["val"] = self.build_dataset(rows.take(val), None)
            # Which row trained and which validated (rows a task adds, pseudo labels, after the training split).
            self.split = pd.DataFrame({"id": [*training.ids, *rows.take(val).ids],
                                       "split": ["train"] * len(train) + ["pseudo"] * (len(training) - len(train))
                                       + ["val"] * len(val)})
        if stage == "test" and "test" not in self.datasets:
            self.datasets["test"] = self.build_dataset(self.test_rows(), None)
        if stage == "predict" and "predict" not in self.datasets:
            if self.predict_split == "val":
                self.setup("validate")
                self.datasets["predict"] = self.datasets["val"]
            else:
                self.datasets["predict"] = self.build_dataset(self.unlabelled_rows(self.predict_dir), None)
        sample = sample_for(self)
        if stage == "predict" and sample is not None:
            self.check_sample(read_sample(sample), sample)

    # -- hooks: what a task's data is -----------------------------------------------------------------------
    def recipe_facts(self) -> dict[str, Any]:
        """Options whose defaults are read from the training files (the classes ...), as the values read:
        saved with the checkpoint, so predicting with it never reads those files again."""
        return {"classes": list(self.class_names)} if "classes" in self.hparams else {}

    def labelled_rows(self) -> Rows:
        """Every training row with its target, checked (files exist, values are valid)."""
        raise NotImplementedError

    def test_rows(self) -> Rows:
        """Labelled rows for `test`."""
        raise DataError("`test` needs labelled test rows; use `validate`, or `predict` for the test folder")

    def unlabelled_rows(self, directory: Path) -> Rows:
        """The images of a folder, for `predict`; extra `size`: each image's (height, width)."""
        paths = list_images(directory, self.channel_suffixes[0] if self.channel_suffixes else None, "--data.predict_dir")
        return Rows([p.name for p in paths], paths, None, {"size": [self.decoder.check(p) for p in paths]})

    def training_rows(self, rows: Rows) -> Rows:
        """The training split's rows, plus any the task adds (pseudo labels): never validation rows."""
        return rows

    def build_dataset(self, rows: Rows, augment: AugmentSpec | None) -> Dataset:
        raise NotImplementedError

    def train_dataset(self, rows: Rows) -> Dataset:
        """The training split's Dataset: `build_dataset` with the training augmentations (a task may add
        training-only steps, e.g. segmentation's random crops)."""
        return self.build_dataset(rows, self.train_augment)

    def stratify(self, rows: Rows) -> Sequence[Any] | None:
        """What the hold-out is stratified by (class indices), or None."""
        return None

    def holdout(self, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        """Fixed-seed train / val indices; with --data.group_pattern, no group on both sides."""
        groups = self.fold_groups(pd.Series(rows.ids))
        return holdout_split(len(rows), self.val_fraction, self.seed, stratify=self.stratify(rows), names=self.class_names,
                             groups=None if groups is None else groups.tolist())

    def check_sample(self, sample: pd.DataFrame, source: Path) -> None:
        """Before the model runs: every id of the sample must be among the images to predict."""
        sample_rows(self.datasets["predict"].ids, sample, source)

    def fold_table(self) -> tuple[pd.DataFrame, str, str | None]:
        """(training rows as a DataFrame, its key column, the column folds are stratified by, or None):
        the keys are the ids of `labelled_rows`."""
        rows = self.labelled_rows()
        return pd.DataFrame({"id": rows.ids}), "id", None

    def fold_groups(self, ids: pd.Series) -> pd.Series | None:
        """Each row's group by --data.group_pattern (None without one); an id it does not match is an error."""
        if self.group_pattern is None:
            return None
        groups = ids.astype(str).str.extract(self.group_pattern, expand=False)
        if groups.isna().any():
            raise DataError(f"--data.group_pattern {self.group_pattern!r} does not match id {ids[groups.isna()].iloc[0]!r}")
        return groups

    def image_dataset(self, rows: Rows, augment: AugmentSpec | None, target_dtype: type = np.int64) -> ImageDataset:
        """Images resized to image_size (h x w), in the pipeline or once into the cache (then not
        again in the pipeline), with the rows' targets as `target_dtype`."""
        pre = [resize(*self.image_hw)]
        reader = self.image_reader(pre)
        pipeline = build_pipeline(augment, pre=[] if reader else pre, seed=self.seed)
        return ImageDataset(rows.items, rows.targets, pipeline, rows.ids, reader or self.decoder,
                            target_dtype=target_dtype)

    def report_images(self, rows: Rows) -> list[np.ndarray]:
        """The rows' images as the model sees them (resized, not augmented), HxWx3 uint8, for reports."""
        dataset = self.build_dataset(rows, None)
        return [to_uint8_image(dataset[k]["image"]) for k in range(len(rows))]

    # -- train/val split -----------------------------------------------------------------------------------
    def split_rows(self, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        """Train/val indices: the rows of `fold` in `folds_csv` when a fold is set, else the hold-out."""
        if self.fold is None:
            return self.holdout(rows)
        if self.folds_csv is None:
            raise DataError("--data.fold needs --data.folds_csv (the folds.csv that `lightning-cv cv` writes)")
        _, key, _ = self.fold_table()
        return fold_split(rows.ids, read_folds(self.folds_csv, key), key, self.fold)

    def targets(self, split: str, ids: Sequence[str] | None = None) -> np.ndarray | None:
        """The targets of a split's dataset (class indices, tag rows, masks, boxes ...), as the model sees
        them without augmentation, in its order or that of `ids`; None when unlabelled."""
        dataset = self.datasets[split]
        targets = getattr(dataset, "targets", None)
        if targets is None:
            samples = (dataset[i] for i in range(len(dataset)))
            found = [self.sample_target(sample) for sample in samples if "target" in sample]
            targets = np.stack(found) if found else None
        if targets is None or ids is None:
            return None if targets is None else np.asarray(targets)
        order = {str(i): r for r, i in enumerate(dataset.ids)}
        return np.asarray(targets)[[order[str(i)] for i in ids]]

    def sample_target(self, sample: dict[str, Any]) -> np.ndarray:
        target = sample["target"]
        return target.numpy() if isinstance(target, torch.Tensor) else np.asarray(target)

    # -- the preprocessing cache -----------------------------------------------------------------
    def array_cache(self, pre: Sequence[Any]) -> ArrayCache | None:
        """The cache of arrays preprocessed by `pre` (fixed transforms), or None with --data.cache none."""
        prep = " ".join(p for p in (describe(pre), repr(self.decoder)) if p)
        return None if self.cache == "none" else ArrayCache(self.cache_dir, self.cache, prep)

    def image_reader(self, pre: Sequence[Any]) -> CachedReader | None:
        """A Dataset `reader` returning images already through `pre`, from the cache (None: no cache)."""
        cache = self.array_cache(pre)
        return None if cache is None else CachedReader(cache, Preprocess(pre), self.decoder)

    # -- linked to the model ------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def in_chans(self) -> int:
        return self.channels

    # -- class balance -------------------------------------------------------------------------
    def train_targets(self) -> np.ndarray:
        """The class index of every training image (after `setup("fit")`), for balanced sampling and
        class weights; an error for tasks without one class per image."""
        targets = getattr(self.datasets.get("train"), "targets", None)
        if targets is None or np.ndim(targets) != 1 or not np.issubdtype(np.asarray(targets).dtype, np.integer):
            raise UserInputError(f"{type(self).__name__} has no single-label class targets: --data.sampler balanced and "
                                 "--model.class_weights balanced are for single-label classification")
        return np.asarray(targets)

    def balanced_sampler(self) -> WeightedRandomSampler:
        """Each class equally likely per draw (weights 1 / class count), len(train) draws with replacement."""
        targets = self.train_targets()
        counts = np.bincount(targets)
        weights = torch.as_tensor(1.0 / counts[targets], dtype=torch.double)
        return WeightedRandomSampler(weights, num_samples=len(targets), replacement=True,
                                     generator=torch.Generator().manual_seed(self.seed))

    # -- loaders -------------------------------------------------------------------------------
    def eval_sampler(self, dataset: Dataset, world_size: int, rank: int) -> DistributedSampler:
        """How validation, test and prediction rows are split between DDP ranks: each row once (the default
        DistributedSampler pads with duplicates, which would be counted in the metrics)."""
        return UnrepeatedDistributedSampler(dataset, world_size, rank, shuffle=False)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise DataError(f"no {split} data: check --data.data_dir ({self.data_dir})")
        dataset = self.datasets[split]
        sampler = None
        trainer = self.trainer
        drop_last = shuffle and len(dataset) > self.batch_size
        if shuffle and self.sampler == "balanced":
            # Under DDP, Lightning wraps any custom sampler (use_distributed_sampler=True, the default).
            sampler, shuffle = self.balanced_sampler(), False
        elif not shuffle and trainer is not None and trainer.world_size > 1:
            sampler = self.eval_sampler(dataset, trainer.world_size, trainer.global_rank)
        pin_memory = torch.cuda.is_available()
        if not self._reported:
            self._reported = True
            rank_zero_info(f"data loading: num_workers={self.num_workers} ({usable_cpus()} CPUs; none on <= 2), "
                           f"pin_memory={pin_memory}, persistent_workers={self.num_workers > 0}, cache={self.cache}")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=pin_memory,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=seed_worker,
            drop_last=drop_last,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
