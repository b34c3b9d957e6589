"""One LightningModule per task, all built on `CVTask`."""

from lightning_cv.tasks.base import CVTask
from lightning_cv.tasks.bbox import BBoxCropTask
from lightning_cv.tasks.classification import ClassificationTask
from lightning_cv.tasks.multilabel import MultiLabelTask
from lightning_cv.tasks.segmentation import SegmentationTask

__all__ = ["BBoxCropTask", "CVTask", "ClassificationTask", "MultiLabelTask", "SegmentationTask"]
