"""The task registry the contract and smoke tests run over: add a task here and it is tested.

Each spec builds a tiny module (no pretrained weights), a batch as its DataModule yields one, tiny
generated data for the CLI smoke test, and the shrunk CLI overrides for that smoke test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lightning_cv.tasks import ClassificationTask, SegmentationTask

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class TaskSpec:
    """name: registry key; config: the task's YAML; output_shape(n): forward's output shape for a
    batch of n; metric_keys: what validation logs; predict_file: what `predict` writes in its run dir;
    recipe_args: fit options off the config's defaults (size, layout, decisions) that a checkpoint must carry
    to predict, ensemble and package (tests give them to fit only, and compare with repeating them)."""

    name: str
    config: str
    make_module: Callable[[], torch.nn.Module]
    make_batch: Callable[[int], dict]
    make_data: Callable[[Path], Path]
    output_shape: Callable[[int], tuple[int, ...]]
    metric_keys: list[str]
    predict_file: str
    smoke_args: list[str] = field(default_factory=list)
    recipe_args: list[str] = field(default_factory=list)
    test_dir: str = "test"  # the demo's test images, under its data folder


def _cls_module() -> ClassificationTask:
    return ClassificationTask(num_classes=3, backbone="resnet10t", image_size=32)


def _cls_batch(n: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(n, 3, 32, 32, generator=g), "target": torch.arange(n) % 3,
            "id": [f"im{i}.png" for i in range(n)], "index": torch.arange(n)}


def _cls_data(root: Path) -> Path:
    from lightning_cv.data.demos import make_shapes

    make_shapes(root / "cls", n_train=40, n_test=8, size=(32, 32), seed=1)
    return root / "cls"


def _mnist_module() -> ClassificationTask:
    return ClassificationTask(num_classes=10, in_chans=1, backbone="small_cnn", image_size=28)


def _mnist_batch(n: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(n, 1, 28, 28, generator=g), "target": torch.arange(n) % 10,
            "id": [str(i) for i in range(n)], "index": torch.arange(n)}


def _mnist_data(root: Path) -> Path:
    from lightning_cv.data.demos import make_mnist

    make_mnist(root / "mnist")
    return root / "mnist"


def _seg_module() -> SegmentationTask:
    return SegmentationTask(num_classes=2, encoder="tu-test_resnet", image_size=32)


def _seg_batch(n: int) -> dict:
    g = torch.Generator().manual_seed(0)
    target = torch.zeros(n, 32, 32, dtype=torch.long)
    for i in range(n):
        y, x = torch.randint(0, 16, (2,), generator=g).tolist()
        target[i, y : y + 12, x : x + 12] = 1
    image = torch.rand(n, 3, 32, 32, generator=g) * 0.3 + target[:, None] * 0.6
    return {"image": image, "target": target, "id": [f"im{i}" for i in range(n)], "index": torch.arange(n),
            "size": torch.tensor([[32, 32]] * n), "valid": torch.tensor([[32, 32]] * n)}


def _seg_data(root: Path) -> Path:
    from lightning_cv.data.demos import make_shapes

    make_shapes(root / "seg", n_train=20, n_test=4, size=(32, 32), seed=1)
    return root / "seg"


def _bbox_module():
    from lightning_cv.tasks import BBoxCropTask

    # The shipped config's head: a soft-argmax heatmap on the stride-16 features.
    return BBoxCropTask(num_classes=1, backbone="test_resnet", image_size=32, head="softargmax", feature_stride=16)


def _bbox_batch(n: int) -> dict:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(n, 3, generator=g) * 0.4 + torch.tensor([0.3, 0.3, 0.2])
    image = torch.rand(n, 3, 32, 32, generator=g) * 0.3
    for i, (cx, cy, side) in enumerate((target * 32).round().int().tolist()):
        image[i, :, max(cy - side // 2, 0) : cy + side // 2, max(cx - side // 2, 0) : cx + side // 2] += 0.6
    return {"image": image, "target": target, "id": [f"im{i}.png" for i in range(n)], "index": torch.arange(n),
            "orig_size": torch.tensor([[96, 128]] * n)}


def _bbox_data(root: Path) -> Path:
    from lightning_cv.data.demos import make_bbox

    make_bbox(root / "bbox", n_train=20, n_test=4, size=(96, 128), seed=1, image_ext=".png")
    return root / "bbox"


def _multilabel_module():
    from lightning_cv.tasks import MultiLabelTask

    return MultiLabelTask(num_classes=4, backbone="resnet10t", image_size=32, class_names=["a", "b", "c", "d"])


def _multilabel_batch(n: int) -> dict:
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(n, 4, generator=g) < 0.4).float()
    target[torch.arange(n), torch.arange(n) % 4] = 1.0  # every image has a tag
    return {"image": torch.rand(n, 3, 32, 32, generator=g), "target": target,
            "id": [f"im{i}.png" for i in range(n)], "index": torch.arange(n)}


def _multilabel_data(root: Path) -> Path:
    from lightning_cv.data.demos import make_multilabel

    make_multilabel(root / "multilabel", n_train=40, n_test=8, size=(32, 32), seed=1)
    return root / "multilabel"


def _regression_module():
    from lightning_cv.tasks.regression import RegressionTask

    return RegressionTask(num_classes=2, backbone="resnet10t", image_size=32, class_names=["size", "area"])


def _regression_batch(n: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(n, 3, 32, 32, generator=g), "target": torch.rand(n, 2, generator=g) * 40 + 10,
            "id": [f"im{i}.png" for i in range(n)], "index": torch.arange(n)}


def _regression_data(root: Path) -> Path:
    from lightning_cv.data.demos import make_regression

    make_regression(root / "regression", n_train=40, n_test=8, size=(32, 32), seed=1)
    return root / "regression"


def _seg_multilabel_module():
    from lightning_cv.tasks.seg_multilabel import MultiLabelSegmentationTask

    return MultiLabelSegmentationTask(num_classes=3, class_names=["1", "2", "3"], encoder="tu-test_resnet", image_size=32)


def _seg_multilabel_batch(n: int) -> dict:
    batch = _seg_batch(n)
    target = torch.zeros(n, 3, 32, 32, dtype=torch.long)
    target[:, 0] = batch["target"]
    target[:, 2, 4:12, 4:20] = 1  # overlaps allowed
    batch["image"] = batch["image"] + target[:, 2, None] * 0.2
    return {**batch, "target": target}


def _seg_multilabel_data(root: Path) -> Path:
    from lightning_cv.data.demos import make_seg_multilabel

    make_seg_multilabel(root / "seg-multilabel", n_train=16, n_test=3, size=(32, 64), seed=1)
    return root / "seg-multilabel"


def _slides_module():
    from lightning_cv.tasks.slides import SlideSegmentationTask

    return SlideSegmentationTask(num_classes=2, encoder="tu-test_resnet", image_size=32)


def _slides_batch(n: int) -> dict:
    """Training tiles that are also whole one-tile images on the inference grid (validation stitches them)."""
    batch = _seg_batch(n)
    return {**batch, "id": [f"slide{i}" for i in range(n)], "pos": torch.zeros(n, 2, dtype=torch.long),
            "native": torch.tensor([[32, 8]] * n), "last": torch.ones(n, dtype=torch.bool),
            "truth": batch["target"].flatten(1).sum(1)}


def _slides_data(root: Path) -> Path:
    from lightning_cv.data.slides import make_slides

    make_slides(root / "slides", seed=1, n_train=4, n_test=2, train_size=(256, 256), test_size=(256, 320), per_mpx=150)
    return root / "slides"


def _detection_module():
    from lightning_cv.tasks.detection import DetectionTask

    # 64 px: GroupNorm takes no 1x1 level of a single image (the stride-32 level of a 32 px image).
    return DetectionTask(num_classes=2, class_names=["a", "b"], backbone="test_resnet", image_size=64, fpn_channels=32,
                         head_convs=1, extra_levels="none", min_score=0.01)


def _detection_batch(n: int) -> dict:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(n, 3, 64, 64, generator=g) * 0.3
    target = torch.full((n, 2, 5), -1.0)
    for i in range(n):
        for k in range(1 + i % 2):
            x, y = torch.randint(0, 40, (2,), generator=g).tolist()
            image[i, k, y : y + 20, x : x + 20] += 0.6
            target[i, k] = torch.tensor([x, y, x + 20, y + 20, k], dtype=torch.float32)
    return {"image": image, "target": target, "id": [f"im{i}.jpg" for i in range(n)], "index": torch.arange(n),
            "size": torch.tensor([[64, 48]] * n)}


def _detection_data(root: Path) -> Path:
    from lightning_cv.data.demos import make_detection

    make_detection(root / "detection", n_train=16, n_test=4, size=(64, 64), seed=1, multiclass=False)
    return root / "detection"


SPECS = [
    TaskSpec("cls", "configs/cls.yaml", _cls_module, _cls_batch, _cls_data, lambda n: (n, 3),
             ["val/acc", "val/f1"], "predictions.csv",
             ["--model.backbone", "resnet10t", "--data.image_size", "32", "--data.batch_size", "8"],
             ["--data.image_size", "40", "--data.channels", "1", "--model.tta", "hflip"]),
    TaskSpec("mnist", "configs/mnist.yaml", _mnist_module, _mnist_batch, _mnist_data, lambda n: (n, 10),
             ["val/acc", "val/f1"], "predictions.csv", ["--data.batch_size", "64"], ["--data.image_size", "32"]),
    TaskSpec("seg", "configs/seg.yaml", _seg_module, _seg_batch, _seg_data, lambda n: (n, 1, 32, 32),
             ["val/dice", "val/iou", "val/pixel_acc"], "submission.csv",
             ["--model.encoder", "tu-test_resnet", "--data.image_size", "32", "--data.batch_size", "8"],
             ["--data.image_size", "48", "--data.rle_csv", "train_masks.csv", "--model.threshold", "0.3"]),
    TaskSpec("bbox", "configs/bbox.yaml", _bbox_module, _bbox_batch, _bbox_data, lambda n: (n, 3),
             ["val/box_iou", "val/hit50"], "boxes.csv",
             ["--model.backbone", "test_resnet", "--data.image_size", "32", "--data.batch_size", "8"],
             ["--data.image_size", "48"]),
    TaskSpec("multilabel", "configs/multilabel.yaml", _multilabel_module, _multilabel_batch, _multilabel_data,
             lambda n: (n, 4), ["val/f2", "val/f2_macro", "val/acc"], "predictions.csv",
             ["--data.image_size", "32", "--data.batch_size", "8"], ["--data.image_size", "40", "--model.tta", "hflip"]),
    TaskSpec("seg-multilabel", "configs/seg-multilabel.yaml", _seg_multilabel_module, _seg_multilabel_batch,
             _seg_multilabel_data, lambda n: (n, 3, 32, 32), ["val/dice_pairs", "val/dice"], "submission.csv",
             ["--model.encoder", "tu-test_resnet", "--data.image_size", "[32, 64]", "--data.batch_size", "4"],
             ["--data.image_size", "32", "--data.keep_aspect", "true", "--model.threshold", "0.3"], "test_images"),
    TaskSpec("regression", "configs/regression.yaml", _regression_module, _regression_batch, _regression_data,
             lambda n: (n, 2), ["val/rmse", "val/mae"], "predictions.csv",
             ["--model.backbone", "resnet10t", "--data.image_size", "32", "--data.batch_size", "8"],
             ["--data.image_size", "40", "--model.tta", "hflip"]),
    TaskSpec("slides", "configs/slides.yaml", _slides_module, _slides_batch, _slides_data, lambda n: (n, 1, 32, 32),
             ["val/dice"], "submission.csv",
             ["--model.encoder", "tu-test_resnet", "--data.image_size", "64", "--data.batch_size", "8",
              "--data.tiles_per_image", "4", "--model.tile_size", "128", "--model.val_tile_size", "128"],
             ["--data.tile_scale", "2", "--model.threshold", "0.4"]),
    TaskSpec("detection", "configs/detection.yaml", _detection_module, _detection_batch, _detection_data,
             lambda n: (n, 84, 7), ["val/map", "val/map_50", "val/wheat"], "boxes.csv",
             ["--model.backbone", "test_resnet", "--model.fpn_channels", "32", "--model.head_convs", "1",
              "--model.extra_levels", "none", "--data.image_size", "64", "--data.batch_size", "8"],
             ["--data.image_size", "48", "--model.tta", "hflip"]),
]
