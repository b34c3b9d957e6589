"""Learning-rate schedules whose length comes from the Trainer: per optimizer step, with linear warmup.

A named schedule (`cosine`, `linear`, `constant`, `onecycle`, or timm's `timm-cosine`, `timm-tanh`,
`timm-poly`) is built from the Trainer's number of
optimizer steps (`estimated_stepping_batches`: max_epochs or max_steps, gradient accumulation and devices
counted), so `--trainer.max_epochs 20` is the whole story: no second number in the config to forget. Any
torch scheduler given by class path works too; a length it leaves unset (OneCycleLR's `total_steps`) is
filled in the same way.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Literal

import torch
from torch.optim.lr_scheduler import LambdaLR, LinearLR, LRScheduler, OneCycleLR, SequentialLR

from lightning_cv.errors import UserInputError

ScheduleName = Literal["cosine", "linear", "constant", "onecycle", "timm-cosine", "timm-tanh", "timm-poly"]
SCHEDULES = ("cosine", "linear", "constant", "onecycle", "timm-cosine", "timm-tanh", "timm-poly")


def lr_factor(step: int, total: int, warmup: int, kind: str, min_lr_scale: float = 0.0) -> float:
    """The share of its base learning rate a group gets at optimizer step `step` of `total`: linear warmup
    from ~0 over `warmup` steps, then `kind` (cosine / linear decay to `min_lr_scale`, or constant)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress
    return min_lr_scale + (1.0 - min_lr_scale) * shape


def timm_schedule(optimizer: torch.optim.Optimizer, kind: str, total: int, warmup: int, min_lr_scale: float) -> Any:
    """timm's scheduler by name (`timm-cosine` -> create_scheduler_v2(sched="cosine")), counted in optimizer
    steps (stepped with `step_update`); its floor is min_lr_scale of the first group's learning rate."""
    from timm.scheduler import create_scheduler_v2

    floor = min_lr_scale * optimizer.param_groups[0]["lr"]
    scheduler, _ = create_scheduler_v2(optimizer, sched=kind.removeprefix("timm-"), num_epochs=total - warmup, warmup_epochs=warmup,
                                       min_lr=floor, warmup_lr=floor or 1e-6, warmup_prefix=True, step_on_epochs=False,
                                       updates_per_epoch=1)
    return scheduler


def named_schedule(optimizer: torch.optim.Optimizer, kind: str, total: int, warmup: int, min_lr_scale: float) -> Any:
    if kind.startswith("timm-"):
        return timm_schedule(optimizer, kind, total, warmup, min_lr_scale)
    if kind == "onecycle":  # warmup is its rising phase (default: 30 % of the steps)
        peaks = [group["lr"] for group in optimizer.param_groups]
        return OneCycleLR(optimizer, max_lr=peaks, total_steps=total, pct_start=warmup / total if warmup else 0.3)
    if kind not in SCHEDULES:
        raise UserInputError(f"--model.scheduler {kind!r}: choose {', '.join(SCHEDULES)}, or a torch scheduler class path")
    return LambdaLR(optimizer, partial(lr_factor, total=total, warmup=warmup, kind=kind, min_lr_scale=min_lr_scale))


def with_length(scheduler: Any, total: int) -> Any:
    """A configured torch scheduler with the lengths it left unset filled from the Trainer (OneCycleLR's
    total_steps)."""
    keywords = getattr(scheduler, "keywords", None)
    if isinstance(keywords, dict) and "total_steps" in keywords and keywords["total_steps"] is None \
            and keywords.get("epochs") is None:
        return partial(scheduler, total_steps=total)
    return scheduler


def with_warmup(optimizer: torch.optim.Optimizer, scheduler: LRScheduler, warmup: int) -> LRScheduler:
    """Linear warmup for `warmup` steps before a configured scheduler (stepped per optimizer step)."""
    ramp = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, scheduler], milestones=[warmup])


def total_steps(trainer: Any) -> int:
    """The optimizer steps of the whole fit, from the Trainer (a one-line error when it has no end)."""
    steps = trainer.estimated_stepping_batches
    if not math.isfinite(steps) or steps <= 0:
        raise UserInputError("the learning-rate schedule takes its length from the Trainer: set --trainer.max_epochs "
                             "or --trainer.max_steps")
    return int(steps)
