"""Surviving a kill: a real training process killed after its first checkpoint, then resumed.
Marked slow (CI still runs it)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from processes import child_env, mnist_fit_args, val_rows

pytestmark = pytest.mark.slow


def test_kill_then_resume_finishes_the_same_run(mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = mnist_fit_args(mnist_dir, run_dir, "--trainer.max_epochs", "4", "--trainer.limit_train_batches", "6")
    proc = subprocess.Popen(args, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert last.exists(), "no checkpoint before the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_id = (run_dir / "wandb_run_id").read_text()
    # The resume runs in this process (only the killed run needs its own).
    from lightning_cv.cli import build_cli

    build_cli([*args[args.index("fit"):], "--ckpt_path", "last"])
    rows = val_rows(run_dir)
    assert sorted(set(rows["epoch"])) == [0, 1, 2, 3]
    assert rows["step"].is_monotonic_increasing
    assert (run_dir / "wandb_run_id").read_text() == run_id
    import torch

    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 3
