"""Multi-process correctness and surviving a kill: real processes, so marked slow (CI still runs them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from specs import ROOT

pytestmark = pytest.mark.slow


def _env() -> dict:
    # WANDB_SERVICE (set once this test process has used wandb) would make the children share one
    # wandb service, where a killed run's stream outlives the process.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}


def _mnist_args(data_dir, run_dir, *extra):
    return [sys.executable, "-m", "lightning_cv", "fit", "--config", str(ROOT / "configs/mnist.yaml"),
            "--data.data_dir", str(data_dir), "--trainer.default_root_dir", str(run_dir),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--data.num_workers", "0", *extra]


@pytest.fixture(scope="module")
def mnist_dir(data_root):
    from lightning_cv.commands.demo import make_mnist

    make_mnist(data_root / "mnist-rel")
    return data_root / "mnist-rel"


def _val_rows(run_dir):
    frame = pd.read_csv(run_dir / "metrics.csv")
    return frame.dropna(subset=["val/acc"])


def test_kill_then_resume_finishes_the_same_run(mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = _mnist_args(mnist_dir, run_dir, "--trainer.max_epochs", "4", "--trainer.limit_train_batches", "6")
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert last.exists(), "no checkpoint before the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_id = (run_dir / "wandb_run_id").read_text()
    done = subprocess.run([*args, "--ckpt_path", "last"], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _val_rows(run_dir)
    assert sorted(set(rows["epoch"])) == [0, 1, 2, 3]
    assert rows["step"].is_monotonic_increasing
    assert (run_dir / "wandb_run_id").read_text() == run_id
    import torch

    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 3


def test_ddp_validation_counts_every_sample_once(mnist_dir, tmp_path):
    from lightning_cv.cli import build_cli

    # 125 validation digits: with 2 ranks a padded sampler would add a duplicate and change the metrics.
    # The checkpoint and the 1-device reference run in this process; only the DDP run needs its own.
    common = ["--config", str(ROOT / "configs/mnist.yaml"), "--data.data_dir", str(mnist_dir), "--data.num_workers", "0",
              "--data.val_fraction", "0.0835", "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false"]
    fit_dir = tmp_path / "fit"
    build_cli(["fit", *common, "--trainer.default_root_dir", str(fit_dir), "--trainer.max_epochs", "1",
               "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1"])
    ckpt = fit_dir / "checkpoints" / "last.ckpt"
    build_cli(["validate", *common, "--trainer.default_root_dir", str(tmp_path / "val1"), "--ckpt_path", str(ckpt)])
    args = _mnist_args(mnist_dir, tmp_path / "val2", "--data.val_fraction", "0.0835", "--trainer.accelerator", "cpu",
                       "--trainer.devices", "2", "--trainer.strategy", "ddp", "--ckpt_path", str(ckpt))
    args[args.index("fit")] = "validate"
    run = subprocess.run(args, env={**_env(), "WANDB_MODE": "disabled"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    one, two = _val_rows(tmp_path / "val1").iloc[-1], _val_rows(tmp_path / "val2").iloc[-1]
    for key in ("val/acc", "val/f1", "val/loss"):
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
