"""One LightningDataModule per task, built on `CVDataModule`."""

from lightning_cv.data.base import CVDataModule
from lightning_cv.data.classification import ClassificationDataModule
from lightning_cv.data.mnist import MNISTDataModule

__all__ = ["CVDataModule", "ClassificationDataModule", "MNISTDataModule"]
