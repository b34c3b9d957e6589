"""Helpers for the tests that start real `lightning-cv` processes (resume after a kill, DDP)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
from specs import ROOT


def child_env() -> dict:
    # WANDB_SERVICE (set once this test process has used wandb) would make the children share one
    # wandb service, where a killed run's stream outlives the process.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}


def mnist_fit_args(data_dir, run_dir, *extra):
    return [sys.executable, "-m", "lightning_cv", "fit", "--config", str(ROOT / "configs/mnist.yaml"),
            "--data.data_dir", str(data_dir), "--trainer.default_root_dir", str(run_dir),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--data.num_workers", "0", *extra]


def val_rows(run_dir):
    frame = pd.read_csv(run_dir / "metrics.csv")
    return frame.dropna(subset=["val/acc"])


def wandb_record(run_dir, *needles: bytes, wait: float = 20.0) -> bytes:
    """The offline W&B record (.wandb) of `run_dir`, once it holds every needle (W&B's service process
    writes it: allow it `wait` seconds to flush)."""
    import time

    deadline = time.monotonic() + wait
    while True:
        record = next(Path(run_dir).glob("*.wandb")).read_bytes()
        if all(n in record for n in needles) or time.monotonic() > deadline:
            return record
        time.sleep(0.5)
