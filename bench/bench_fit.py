"""`lightning-cv fit` (its Trainer, task and DataModule) against a hand-written loop; precision.

Both sides train the same model on the same batches with the same optimiser; each side's second
epoch is timed (the first pays for setup and warm-up), so the ratio is the per-step framework cost.
"""

from __future__ import annotations

import time

import common
import torch
from common import Row
from torch import nn
from torch.utils.data import DataLoader, Dataset

N, SIZE, BATCH = 192, 32, 32


class Tensors(Dataset):
    """In-memory samples shaped like the project's: dict of image, target, id, index."""

    def __init__(self, n: int, size: int):
        gen = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, size, size, generator=gen)
        self.targets = torch.randint(0, 4, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "target": int(self.targets[i]), "id": str(i), "index": i}


def _loader() -> DataLoader:
    return DataLoader(Tensors(N, SIZE), batch_size=BATCH, shuffle=True, num_workers=0, drop_last=True)


def _task(backbone: str):
    from lightning_cv.tasks.classification import ClassificationTask

    torch.manual_seed(0)
    return ClassificationTask(num_classes=4, backbone=backbone, image_size=SIZE)


class EpochTimer:
    """A callback timing the last training epoch."""

    def __init__(self):
        from lightning.pytorch.callbacks import Callback

        timer = self

        class _CB(Callback):
            def on_train_epoch_start(self, trainer, module):
                timer.start = time.perf_counter()

            def on_train_epoch_end(self, trainer, module):
                timer.seconds = time.perf_counter() - timer.start

        self.callback = _CB()
        self.seconds = 0.0


def lightning_epoch(backbone: str, precision: str = "32-true", epochs: int = 2, limit: float | int = 1.0) -> float:
    from lightning_cv.training.trainer import Trainer

    timer = EpochTimer()
    trainer = Trainer(max_epochs=epochs, precision=precision, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      limit_train_batches=limit, callbacks=[timer.callback], num_sanity_val_steps=0)
    trainer.fit(_task(backbone), train_dataloaders=_loader())
    return timer.seconds


def loop_epoch(backbone: str, epochs: int = 2) -> float:
    task = _task(backbone)
    model, criterion = task.model, nn.CrossEntropyLoss()
    mean, std = task.mean, task.std
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    loader = _loader()
    seconds = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model((batch["image"] - mean) / std), batch["target"])
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
    return seconds


def run(quick: bool = False) -> list[Row]:
    from lightning_cv.training.trainer import auto_precision

    rows = []
    samples = N // BATCH * BATCH
    backbone = "small_cnn"
    t = common.side_by_side({"fit": lambda: lightning_epoch(backbone), "loop": lambda: loop_epoch(backbone)},
                            repeats=3, warmup=False)
    fit_sps, loop_sps = samples / t["fit"], samples / t["loop"]
    rows.append(Row(f"`lightning-cv fit` ÷ hand-written loop ({backbone}, {SIZE} px, batch {BATCH}, fp32)",
                    "fit", fit_sps, "loop", loop_sps, "samples/s", ">=0.97", fit_sps / loop_sps,
                    "second epoch of each, 3 interleaved repeats, median"))

    # Precision: a few steps each (bf16 autocast on a CPU without native bf16 is many times slower).
    steps = 2
    t = common.side_by_side({p: (lambda p=p: lightning_epoch("small_cnn", p, epochs=2, limit=steps))
                             for p in ("32-true", "bf16-mixed")}, repeats=3, warmup=False)
    chosen, reason = auto_precision("auto")
    speed = {p: steps * BATCH / s for p, s in t.items()}
    best = max(speed.values())
    rows.append(Row(f"default precision (auto -> {chosen}) ÷ faster of 32-true and bf16-mixed (samples/s)",
                    "32-true", speed["32-true"], "bf16-mixed", speed["bf16-mixed"], "samples/s", ">=0.95",
                    speed.get(chosen, float("nan")) / best, f"auto: {reason}"))
    return rows


if __name__ == "__main__":
    for row in run():
        row.show()
