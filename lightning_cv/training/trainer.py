"""The Trainer with `precision="auto"`: picked from what the hardware reports, and said in the log."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them bf16 autocast on CPU is emulated and many times slower."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check() for check in checks if check is not None)


def auto_precision(accelerator: Any = "auto") -> tuple[str, str]:
    """(precision, reason) for the accelerator the Trainer will use."""
    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    if name in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", f"{torch.cuda.get_device_name()} supports bf16"
        return "16-mixed", f"{torch.cuda.get_device_name()} has no bf16"
    if name in ("auto", "gpu", "mps") and torch.backends.mps.is_available():
        return "16-mixed", "Apple MPS"
    if cpu_has_native_bf16():
        return "bf16-mixed", "CPU with native bf16 (AVX512-BF16/AMX)"
    return "32-true", "CPU without native bf16 (AVX512-BF16/AMX), where bf16 autocast is many times slower"


class Trainer(L.Trainer):
    """Lightning's Trainer; `precision="auto"` picks bf16/16-mixed where the hardware pays for it.

    Args:
        precision: "auto", or any Lightning precision ("32-true", "bf16-mixed", "16-mixed", ...).
    """

    def __init__(self, *args: Any, precision: str | int | None = "auto", **kwargs: Any):
        if precision in ("auto", None):
            precision, reason = auto_precision(kwargs.get("accelerator", "auto"))
            rank_zero_info(f"precision: auto -> {precision} ({reason})")
        if torch.cuda.is_available():
            torch.set_float32_matmul_precision("high")
        super().__init__(*args, precision=precision, **kwargs)

    def lr_find(self, model: L.LightningModule, datamodule: L.LightningDataModule | None = None, min_lr: float = 1e-6,
                max_lr: float = 1.0, num_training: int = 100, early_stop_threshold: float | None = 4.0) -> float | None:
        """`lightning-cv lr_find`: Lightning's learning-rate range test on the task's model, optimizer and data
        (its finder moves every parameter group at one rate; in training the backbone then gets its
        backbone_lr_scale share of the suggestion); prints the suggestion and the override line, and plots
        loss against learning rate into lr_find.png in the run directory.

        Args:
            min_lr: the smallest learning rate tried.
            max_lr: the largest learning rate tried.
            num_training: optimizer steps of the range test (the rate grows exponentially over them).
            early_stop_threshold: stop when the loss exceeds this multiple of the best loss (null: never).
        """
        from pathlib import Path

        from lightning.pytorch.tuner import Tuner

        finder = Tuner(self).lr_find(model, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr, num_training=num_training,
                                     early_stop_threshold=early_stop_threshold, update_attr=False, attr_name="lr")
        if finder is None or not self.is_global_zero:
            return None
        suggestion = finder.suggestion()
        plot = Path(self.default_root_dir) / "lr_find.png"
        figure = finder.plot(suggest=suggestion is not None)
        figure.savefig(plot, dpi=100)
        if suggestion is None:
            print(f"no suggestion: the loss did not fall over {len(finder.results['lr'])} steps; see {plot}")
            return None
        print(f"learning rate suggestion: {suggestion:.3g} (steepest fall of the smoothed loss) -> {plot}\n"
              f"use: --model.optimizer.lr {suggestion:.3g}")
        return suggestion
