"""Detection training speed: `lightning-cv fit` next to torchvision's reference training loop, same model and data.

The reference side is the loop of torchvision's `references/detection/engine.py` (`train_one_epoch`): a list of
image tensors and target dicts into `model(images, targets)`, the sum of its loss dict, backward, step; its
images go through `ToTensor` and a random horizontal flip as its presets' "hflip" augmentation does, and
torchvision's FCOS resizes and normalises them itself (`GeneralizedRCNNTransform`, min and max size set to the
demo's side so nothing is rescaled). The model is the same: the project's FCOS head and FPN on a timm ResNet-18,
as configs/detection.yaml builds it. The project side runs `fit` on the same images with the same batch size,
optimizer and flip, no validation; both count training images per second of the training loop alone
(Lightning's Timer of the train stage; the reference from its first to its last step).

    PYTHONPATH=. .venv/bin/python bench/detection_speed.py [--data data/detection] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision.models.detection import FCOS  # noqa: E402

from lightning_cv.cli import build_cli  # noqa: E402
from lightning_cv.data.demos import make_detection  # noqa: E402
from lightning_cv.data.detection import DetectionDataModule, unpadded  # noqa: E402
from lightning_cv.io.images import read_image  # noqa: E402
from lightning_cv.tasks.detection import DetectionTask  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # epoch_clock, the callback the project side is timed with
BATCH, LR, SIDE = 16, 2e-3, 128


class ReferenceDataset(Dataset):
    """The reference's dataset: a decoded image as a [0, 1] tensor, its target dict, a horizontal flip at p=0.5."""

    def __init__(self, paths: list[Path], targets: np.ndarray, seed: int = 0):
        self.paths, self.targets, self.rng = paths, targets, np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = torch.from_numpy(read_image(self.paths[index])).permute(2, 0, 1).float() / 255
        boxes = unpadded(self.targets[index])
        target = {"boxes": torch.from_numpy(boxes["boxes"]), "labels": torch.from_numpy(boxes["labels"])}
        if self.rng.random() < 0.5:
            width = image.shape[-1]
            image = image.flip(-1)
            target["boxes"] = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([width, 0, width, 0])
        return image, target


class DictFeatures(torch.nn.Module):
    """The FPN's levels as the ordered dict torchvision's FCOS.forward reads."""

    def __init__(self, fpn: torch.nn.Module):
        super().__init__()
        self.fpn, self.out_channels = fpn, fpn.out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict:
        return OrderedDict((str(i), f) for i, f in enumerate(self.fpn(x)))


def reference(data: Path, epochs: int) -> float:
    """Images per second of torchvision's reference loop (engine.train_one_epoch) on the same FCOS."""
    datamodule = DetectionDataModule(data_dir=str(data), image_size=SIDE)
    rows = datamodule.labelled_rows()
    train = rows.take(datamodule.holdout(rows)[0])
    task = DetectionTask(num_classes=1, backbone="resnet18", image_size=SIDE, fpn_channels=64, head_convs=2)
    parts = task.model.net
    model = FCOS(DictFeatures(parts.backbone), 1, min_size=SIDE, max_size=SIDE, anchor_generator=parts.anchor_generator, head=parts.head,
                 image_mean=task.mean.flatten().tolist(), image_std=task.std.flatten().tolist())
    loader = DataLoader(ReferenceDataset(train.items, train.targets), batch_size=BATCH, shuffle=True, drop_last=True,
                        collate_fn=lambda batch: tuple(zip(*batch)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    model.train()
    images, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch_images, targets in loader:
            loss_dict = model(list(batch_images), list(targets))
            losses = sum(loss for loss in loss_dict.values())
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
            images += len(batch_images)
    return images / (time.perf_counter() - start)


def project(data: Path, epochs: int) -> float:
    """Images per second of `lightning-cv fit`'s training loop (epoch_clock.EpochClock: from the first epoch's
    start to the end of training; no validation)."""
    with tempfile.TemporaryDirectory() as out:
        marks = Path(out) / "marks.json"
        build_cli(["fit", "--config", str(ROOT / "configs" / "detection.yaml"), "--data.data_dir", str(data),
                   "--data.train_augment", '[{"HorizontalFlip": {"p": 0.5}}]', "--data.batch_size", str(BATCH),
                   "--trainer.max_epochs", str(epochs), "--trainer.limit_val_batches", "0",
                   "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
                   "--trainer.precision", "32-true", "--trainer.logger", "false", "--trainer.default_root_dir", out,
                   "--trainer.callbacks+=epoch_clock.EpochClock", "--trainer.callbacks.out", str(marks)])
        times = json.loads(marks.read_text())
        images = DetectionDataModule(data_dir=str(data), image_size=SIDE).labelled_rows()
        steps = int(len(images) * 0.8) // BATCH  # the hold-out's training rows, whole batches (drop_last)
        return steps * BATCH * epochs / (times[-1] - times[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "detection")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not args.data.is_dir():
        make_detection(args.data, multiclass=False)
    torch.manual_seed(0)
    ours = project(args.data, args.epochs)
    theirs = reference(args.data, args.epochs)
    print(f"torch threads {torch.get_num_threads()}, batch {BATCH}, {SIDE} px, fp32")
    print(f"lightning-cv fit:             {ours:.1f} images/s")
    print(f"torchvision reference loop:   {theirs:.1f} images/s")


if __name__ == "__main__":
    main()
