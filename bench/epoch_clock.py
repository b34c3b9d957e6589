"""A callback for `bench_overhead`: the wall-clock start of every training epoch and the end of training,
written to a JSON file (`--trainer.callbacks+=epoch_clock.EpochClock --trainer.callbacks.out FILE`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class EpochClock(Callback):
    def __init__(self, out: str):
        self.out = out
        self.marks: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.marks.append(time.time())

    def on_train_end(self, trainer, pl_module) -> None:
        """After the last epoch's validation and checkpoints."""
        self.marks.append(time.time())
        Path(self.out).write_text(json.dumps(self.marks))
