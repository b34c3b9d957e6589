"""Multi-process correctness: DDP validation on 2 CPU ranks (gloo) counts every sample once; DDP predictions
merge into the one-process ones.
Marked slow (CI still runs it)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from processes import child_env, mnist_fit_args, val_rows
from specs import ROOT

from lightning_cv.predictions.files import find_predictions, load_predictions

pytestmark = pytest.mark.slow


def test_ddp_validation_counts_every_sample_once(mnist_dir, tmp_path):
    from lightning_cv.cli import build_cli

    # 125 validation digits: with 2 ranks a padded sampler would add a duplicate and change the metrics.
    # The checkpoint and the 1-device reference run in this process; only the DDP run needs its own.
    # Both validations in 32-true: compared to 1e-6, and `auto` picks bf16-mixed on CPUs with native bf16.
    common = ["--config", str(ROOT / "configs/mnist.yaml"), "--data.data_dir", str(mnist_dir), "--data.num_workers", "0",
              "--data.val_fraction", "0.0835", "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false", "--trainer.precision", "32-true"]
    fit_dir = tmp_path / "fit"
    build_cli(["fit", *common, "--trainer.default_root_dir", str(fit_dir), "--trainer.max_epochs", "1",
               "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1"])
    ckpt = fit_dir / "checkpoints" / "last.ckpt"
    build_cli(["validate", *common, "--trainer.default_root_dir", str(tmp_path / "val1"), "--ckpt_path", str(ckpt)])
    args = mnist_fit_args(mnist_dir, tmp_path / "val2", "--data.val_fraction", "0.0835", "--trainer.accelerator", "cpu",
                       "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.precision", "32-true",
                       "--ckpt_path", str(ckpt))
    args[args.index("fit")] = "validate"
    run = subprocess.run(args, env={**child_env(), "WANDB_MODE": "disabled"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    one, two = val_rows(tmp_path / "val1").iloc[-1], val_rows(tmp_path / "val2").iloc[-1]
    for key in ("val/acc", "val/f1", "val/loss"):
        assert two[key] == pytest.approx(one[key], abs=1e-6), key

    # Predictions on 2 ranks: each rank writes its shard (125 rows: the sampler repeats one), rank 0 merges
    # them in the dataset's order -> the same predictions.npz as one process writes.
    predict = ["--ckpt_path", str(ckpt), "--data.predict_split", "val"]
    build_cli(["predict", *common, "--trainer.default_root_dir", str(tmp_path / "pred1"), *predict])
    args = mnist_fit_args(mnist_dir, tmp_path / "pred2", "--data.val_fraction", "0.0835", "--trainer.accelerator", "cpu",
                          "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.precision", "32-true", *predict)
    args[args.index("fit")] = "predict"
    root = args.index("--trainer.default_root_dir")
    del args[root:root + 2]  # into <fit run>/predict-<time>: the rank started later writes where rank 0 merges
    run = subprocess.run(args, env={**child_env(), "WANDB_MODE": "disabled"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    single, ranks = (load_predictions(find_predictions(d)[0]) for d in (tmp_path / "pred1", fit_dir))
    assert len(single) == 125 and ranks.ids.tolist() == single.ids.tolist()
    np.testing.assert_allclose(ranks.arrays["probs"], single.arrays["probs"], atol=1e-5)
    assert not list(fit_dir.rglob(".predict-*"))
