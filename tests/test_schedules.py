"""Learning-rate schedules take their length from the Trainer, warm up per step, and are logged per group."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from test_tricks import _common, cls_data  # noqa: F401 - the shared tiny shapes set

from lightning_cv.cli import build_cli
from lightning_cv.errors import UserInputError
from lightning_cv.models.schedules import lr_factor


def test_lr_factor_warms_up_then_decays_to_the_floor():
    assert [lr_factor(s, 100, 4, "cosine") for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lr_factor(4, 100, 4, "cosine") == pytest.approx(1.0)
    assert lr_factor(52, 100, 4, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 4, "cosine", min_lr_scale=0.1) == pytest.approx(0.1)
    assert lr_factor(52, 100, 4, "linear", min_lr_scale=0.2) == pytest.approx(0.6)
    assert lr_factor(99, 100, 0, "constant") == 1.0


def _fit(tmp_path, data, *extra):
    run = tmp_path / "run"
    build_cli(["fit", *_common(data), "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "4",
               "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", str(run), "--trainer.callbacks", "[]",
               "--model.optimizer.lr", "0.01", *extra])
    return pd.read_csv(run / "metrics.csv")


def test_cosine_with_warmup_follows_the_trainers_length(tmp_path, cls_data):  # noqa: F811
    """12 optimizer steps (3 epochs x 4 batches), 3 of warmup: the head's learning rate climbs, peaks,
    and decays to ~0 at the last step, without a length in the config; every parameter group is logged."""
    logged = _fit(tmp_path, cls_data, "--model.warmup_steps", "3", "--model.backbone_lr_scale", "0.1")
    head = logged["lr-AdamW/head"].dropna().tolist()
    assert len(head) == 12
    assert head[:4] == pytest.approx([0.01 * f for f in (0.25, 0.5, 0.75, 1.0)])
    assert head[-1] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 8 / 9)))
    assert all(a >= b for a, b in zip(head[3:], head[4:]))
    backbone = logged["lr-AdamW/backbone"].dropna().tolist()
    assert backbone == pytest.approx([0.1 * v for v in head])


def test_class_path_scheduler_gets_its_length_and_warmup_needs_steps(tmp_path, cls_data):  # noqa: F811
    logged = _fit(tmp_path, cls_data, "--model.scheduler", "torch.optim.lr_scheduler.OneCycleLR",
                  "--model.scheduler.max_lr", "0.02", "--model.scheduler_interval", "step")
    head = logged["lr-AdamW/head"].dropna().tolist()
    assert len(head) == 12 and max(head) == pytest.approx(0.02, rel=0.05) and head[-1] < 1e-4
    with pytest.raises(UserInputError, match="scheduler_interval step"):
        _fit(tmp_path / "b", cls_data, "--model.scheduler", "torch.optim.lr_scheduler.StepLR",
             "--model.scheduler.step_size", "1", "--model.warmup_epochs", "1")


def test_lr_find_suggests_a_rate_and_plots_it(tmp_path, cls_data, capsys):  # noqa: F811
    from lightning_cv.cli import main

    main(["lr_find", *_common(cls_data), "--num_training", "12", "--trainer.default_root_dir", str(tmp_path / "lr")])
    out = capsys.readouterr().out
    assert (tmp_path / "lr" / "lr_find.png").stat().st_size > 1000
    if "no suggestion" not in out:
        rate = float(out.split("use: --model.optimizer.lr ")[1].split()[0])
        assert 1e-6 <= rate <= 1.0
    assert not list((tmp_path / "lr").glob(".lr_find*.ckpt"))  # the finder's temporary checkpoint is gone


def test_timm_schedule_by_name_follows_the_trainer(tmp_path, cls_data):  # noqa: F811
    """`--model.scheduler timm-cosine`: timm's cosine over the fit's 12 optimizer steps (warmup 2), stepped per
    update: it peaks after the warmup and ends near its floor."""
    logged = _fit(tmp_path, cls_data, "--model.scheduler", "timm-cosine", "--model.warmup_steps", "2")
    head = logged["lr-AdamW/head"].dropna().tolist()
    assert len(head) == 12 and head[0] < 0.01 and max(head) == pytest.approx(0.01, rel=0.05)
    assert head[-1] < 0.1 * max(head) and all(a >= b for a, b in zip(head[3:], head[4:]))
