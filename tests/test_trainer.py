"""Precision picked from the hardware, and the W&B offline run with its pictures."""

from __future__ import annotations

import pytest
import torch
from specs import ROOT, SPECS

from lightning_cv import trainer as trainer_module
from lightning_cv.cli import build_cli
from lightning_cv.trainer import Trainer, auto_precision


@pytest.mark.parametrize("native_bf16, expected", [(False, "32-true"), (True, "bf16-mixed")])
def test_auto_precision_on_cpu(monkeypatch, native_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: native_bf16)
    precision, reason = auto_precision("cpu")
    assert precision == expected and "bf16" in reason


@pytest.mark.parametrize("bf16, expected", [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_precision_on_gpu(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Some GPU")
    assert auto_precision("auto")[0] == expected
    # An explicit CPU accelerator on a GPU machine still gets the CPU rule.
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: False)
    assert auto_precision("cpu")[0] == "32-true"


def test_explicit_precision_wins(monkeypatch):
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: True)
    trainer = Trainer(accelerator="cpu", precision="32-true", logger=False, enable_checkpointing=False)
    assert trainer.precision == "32-true"
    auto = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    assert auto.precision == "bf16-mixed"


def test_offline_wandb_run_with_pictures(monkeypatch, data_root, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    spec = next(s for s in SPECS if s.name == "cls")
    run_dir = tmp_path / "run"
    build_cli(["fit", "--config", str(ROOT / spec.config), "--data.data_dir", str(spec.make_data(data_root)),
               *spec.smoke_args, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
               "--trainer.default_root_dir", str(run_dir), "--trainer.enable_progress_bar", "false"])
    import wandb

    wandb.finish()
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    media = list(runs[0].rglob("media/images/val/*.png"))
    assert any("examples" in p.name for p in media) and any("confusion" in p.name for p in media)
    assert (run_dir / "pictures" / "examples_epoch000.png").is_file()
    assert (run_dir / "pictures" / "confusion_epoch000.png").is_file()
    assert (run_dir / "wandb_run_id").read_text() in runs[0].name
