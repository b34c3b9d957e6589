"""The same seed twice gives identical metrics on CPU; another seed gives different ones."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from lightning_cv.cli import build_cli


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from lightning_cv.data.demos import make_mnist

    root = tmp_path_factory.mktemp("digits")
    make_mnist(root)
    return root


def _fit(data_dir, run_dir, seed: int) -> tuple[dict[str, float], pd.DataFrame]:
    """One tiny in-process fit (augmented, shuffled); its final callback metrics and metrics.csv."""
    cli = build_cli([
        "fit", "--config", "configs/mnist.yaml", "--data.data_dir", str(data_dir), "--seed_everything", str(seed),
        "--data.num_workers", "0", "--data.batch_size", "32", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
        "--trainer.default_root_dir", str(run_dir), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.precision", "32-true",  # not bf16 where `auto` picks it
    ])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if isinstance(v, torch.Tensor)}
    return metrics, pd.read_csv(run_dir / "metrics.csv")


@pytest.mark.slow
def test_same_seed_same_metrics(digits, tmp_path):
    first, first_csv = _fit(digits, tmp_path / "a", seed=7)
    second, second_csv = _fit(digits, tmp_path / "b", seed=7)
    assert {"val/acc", "val/loss", "train/loss_epoch"} <= set(first)
    assert first == second  # exact, not approximate
    pd.testing.assert_frame_equal(first_csv.drop(columns=["time"], errors="ignore"),
                                  second_csv.drop(columns=["time"], errors="ignore"), check_exact=True)
    other, _ = _fit(digits, tmp_path / "c", seed=8)
    assert other["train/loss_epoch"] != first["train/loss_epoch"]
