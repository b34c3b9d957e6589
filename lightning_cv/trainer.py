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
