"""Data: one LightningDataModule per task on `CVDataModule` (one setup template), their Datasets, folds and
hold-out splits, augmentations (the only module importing albumentations), pseudo-labels and the demo
competitions. May import `io`, `predictions` and `models`.
"""

from lightning_cv.data.base import CVDataModule
from lightning_cv.data.bbox import BBoxCropDataModule
from lightning_cv.data.classification import ClassificationDataModule
from lightning_cv.data.mnist import MNISTDataModule
from lightning_cv.data.multilabel import MultiLabelDataModule
from lightning_cv.data.segmentation import SegmentationDataModule

__all__ = ["BBoxCropDataModule", "CVDataModule", "ClassificationDataModule", "MNISTDataModule", "MultiLabelDataModule", "SegmentationDataModule"]
