"""Precision picked from the hardware, and the W&B offline run with its pictures."""

from __future__ import annotations

import json

import pytest
import torch
from processes import wandb_record
from specs import ROOT, SPECS

from lightning_cv.cli import build_cli
from lightning_cv.training import trainer as trainer_module
from lightning_cv.training.trainer import Trainer, auto_precision


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


@pytest.mark.slow
def test_offline_wandb_run_with_pictures(monkeypatch, data_root, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    spec = next(s for s in SPECS if s.name == "cls")
    run_dir = tmp_path / "run"
    build_cli(["fit", "--config", str(ROOT / spec.config), "--data.data_dir", str(spec.make_data(data_root)),
               *spec.smoke_args, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
               "--trainer.default_root_dir", str(run_dir), "--trainer.enable_progress_bar", "false",
               "--wandb_log_model", "best"])
    import wandb

    wandb.finish()
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    # --wandb_log_model best: the best checkpoint is a model artifact of the offline run (for `wandb sync`).
    artifact = b"model-" + (run_dir / "wandb_run_id").read_text().encode()
    record = wandb_record(runs[0], artifact, b"best-epoch000.ckpt")
    assert artifact in record and b"best-epoch000.ckpt" in record
    # Provenance: versions, hardware, the working tree's commit and the command line.
    env = json.loads((run_dir / "environment.json").read_text())
    assert torch.__version__.startswith(env["versions"]["torch"]) and env["versions"]["python"].count(".") == 2
    assert env["command"].startswith("lightning-cv fit --config") and env["command"].endswith("--wandb_log_model best")
    assert env["hardware"]["cpus"] >= 1 and env["wall_s"] > 0
    assert env["git"] is None or (len(env["git"]["commit"]) == 40 and isinstance(env["git"]["dirty"], bool))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    media = list(runs[0].rglob("media/images/val/*.png"))
    assert any("examples" in p.name for p in media) and any("confusion" in p.name for p in media)
    assert (run_dir / "pictures" / "examples_epoch000.png").is_file()
    assert (run_dir / "pictures" / "confusion_epoch000.png").is_file()
    assert (run_dir / "wandb_run_id").read_text() in runs[0].name


def test_last_checkpoint_is_a_link_to_the_best_of_the_same_step(tmp_path):
    """One write per save point: when the best checkpoint was written at the same step, last.ckpt is the same
    file (a hard link); a later epoch that is not the best writes last.ckpt anew, never through the link."""
    import os

    from lightning.pytorch.callbacks import Callback, ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    from lightning_cv.training.callbacks import LastCheckpoint

    scores = [0.5, 0.4, 0.6, 0.1]  # epochs 0 and 2 are the best so far, epochs 1 and 3 are not
    folder = tmp_path / "checkpoints"

    class Scored(BoringModel):
        def on_validation_epoch_end(self):
            self.log("score", scores[self.current_epoch])

    class Look(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            """What the previous epoch's checkpoints left."""
            if trainer.current_epoch:
                files = {p.name: torch.load(p, weights_only=True)["epoch"] for p in folder.glob("*.ckpt")}
                seen[trainer.current_epoch] = (files, os.path.samefile(folder / "last.ckpt", best.best_model_path))

    def fit(epochs: int, ckpt_path=None) -> None:
        nonlocal best
        best = ModelCheckpoint(dirpath=folder, filename="best-epoch{epoch:03d}", auto_insert_metric_name=False,
                               monitor="score", mode="max", save_top_k=1)
        last = LastCheckpoint(best, dirpath=folder, filename="last", enable_version_counter=False)
        Trainer(max_epochs=epochs, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
                enable_progress_bar=False, enable_model_summary=False,
                callbacks=[best, last, Look()]).fit(Scored(), ckpt_path=ckpt_path)

    best, seen = None, {}
    fit(3)
    assert seen[1] == ({"best-epoch000.ckpt": 0, "last.ckpt": 0}, True)
    assert seen[2] == ({"best-epoch000.ckpt": 0, "last.ckpt": 1}, False)  # the best file kept its state
    assert {p.name for p in folder.iterdir()} == {"best-epoch002.ckpt", "last.ckpt"}
    assert os.path.samefile(folder / "last.ckpt", folder / "best-epoch002.ckpt")
    # Resumed from the linked last.ckpt: epoch 3, not the best, is written to last.ckpt alone.
    fit(4, ckpt_path=folder / "last.ckpt")
    assert seen[3] == ({"best-epoch002.ckpt": 2, "last.ckpt": 2}, True)
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 3
    assert torch.load(folder / "best-epoch002.ckpt", weights_only=True)["epoch"] == 2


def test_fit_summarises_the_model_without_a_forward_pass(data_root, tmp_path, capsys):
    """`fit`'s model summary: layers, parameters and modes, without Lightning's FLOP count (a forward pass of
    the example input before training)."""
    from lightning.pytorch.callbacks import ModelSummary
    from lightning.pytorch.demos.boring_classes import BoringModel

    from lightning_cv.training.callbacks import ParameterSummary

    spec = next(s for s in SPECS if s.name == "cls")
    capsys.readouterr()
    cli = build_cli(["fit", "--config", str(ROOT / spec.config), "--data.data_dir", str(spec.make_data(data_root)),
                     *spec.smoke_args, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                     "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
                     "--trainer.default_root_dir", str(tmp_path / "run")])
    assert [type(c) for c in cli.trainer.callbacks if isinstance(c, ModelSummary)] == [ParameterSummary]
    out = capsys.readouterr().out
    assert "Total params" in out and "FLOP" not in out

    module, calls = BoringModel(), []
    module.example_input_array = torch.rand(2, 32)
    module.register_forward_hook(lambda *args: calls.append(args))
    capsys.readouterr()
    ParameterSummary().on_fit_start(Trainer(logger=False, enable_checkpointing=False), module)
    out = capsys.readouterr().out
    assert not calls and "Linear" in out and "Total params: 66" in out and "FLOP" not in out
