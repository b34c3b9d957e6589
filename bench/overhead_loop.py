"""The hand-written PyTorch loop that `bench_overhead` runs against `lightning-cv fit`, as its own process:
the same images (train.csv + train/), stratified 80/20 hold-out (seed 42), timm resnet18 from scratch,
ImageNet normalisation, AdamW (lr 1e-3, weight decay 1e-4), the same albumentations pipeline, batch size,
fp32 on the CPU; each epoch trains, validates (loss, accuracy) and saves the weights when accuracy improves.

    python bench/overhead_loop.py DATA_DIR OUT_DIR --epochs 8 --size 64 --batch 32 --threads 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

AUGMENT = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5),
           A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5)]


class Images(Dataset):
    def __init__(self, paths: list[Path], labels: np.ndarray, transform: A.Compose):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = cv2.cvtColor(cv2.imread(str(self.paths[i]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return self.transform(image=image)["image"], int(self.labels[i])


def pipeline(size: int, augment: bool) -> A.Compose:
    resize = A.Resize(size, size, interpolation=cv2.INTER_AREA, p=1.0)
    return A.Compose([resize, *(AUGMENT if augment else []), A.ToFloat(max_value=255.0), ToTensorV2()], seed=42)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    with open(args.data / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    paths = [args.data / "train" / r["image"] for r in rows]
    names = sorted({r["label"] for r in rows})
    labels = np.array([names.index(r["label"]) for r in rows])
    train, val = train_test_split(np.arange(len(rows)), test_size=0.2, random_state=42, stratify=labels)
    train_loader = DataLoader(Images([paths[i] for i in train], labels[train], pipeline(args.size, True)),
                              batch_size=args.batch, shuffle=True, drop_last=True, num_workers=0)
    val_loader = DataLoader(Images([paths[i] for i in val], labels[val], pipeline(args.size, False)),
                            batch_size=args.batch, num_workers=0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=len(names))
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    args.out.mkdir(parents=True, exist_ok=True)
    marks, best = [], -1.0
    for _ in range(args.epochs):
        marks.append(time.time())
        model.train()
        for images, targets in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model((images - mean) / std), targets)
            loss.backward()
            optimizer.step()
        model.eval()
        correct, total, val_loss = 0, 0, 0.0
        with torch.inference_mode():
            for images, targets in val_loader:
                logits = model((images - mean) / std)
                val_loss += float(criterion(logits, targets)) * len(targets)
                correct += int((logits.argmax(1) == targets).sum())
                total += len(targets)
        accuracy = correct / total
        if accuracy > best:
            best = accuracy
            torch.save(model.state_dict(), args.out / "best.pt")
    marks.append(time.time())
    (args.out / "epochs.json").write_text(json.dumps(marks))
    print(f"val accuracy {accuracy:.3f} (best {best:.3f}), val loss {val_loss / total:.3f}")


if __name__ == "__main__":
    main()
