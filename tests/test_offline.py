"""Offline inference: a checkpoint predicts anywhere, prediction options win, inputs stay untouched."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from specs import ROOT

from lightning_cv.cli import build_cli, main
from lightning_cv.cli.commands import cv as cv_module
from lightning_cv.data.demos import make_shapes
from lightning_cv.io.images import read_mask
from lightning_cv.predictions.files import load_predictions
from lightning_cv.tasks.checkpoints import load_task

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.num_sanity_val_steps", "0", *QUIET]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under a folder with a hash of its bytes: equal snapshots, an untouched folder."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("offline") / "data"
    make_shapes(data, n_train=24, n_test=6, size=(32, 32), seed=4)
    return data


def _cls(data: Path) -> list[str]:
    return ["--config", str(ROOT / "configs" / "cls.yaml"), "--data.data_dir", str(data), "--data.image_size", "32",
            "--data.batch_size", "8", "--model.backbone", "resnet10t"]


@pytest.mark.slow
def test_checkpoint_predicts_after_its_pretrained_weights_file_is_gone(shapes, tmp_path):
    weights = tmp_path / "resnet10t.pth"
    torch.save(timm.create_model("resnet10t").state_dict(), weights)
    run = tmp_path / "run"
    build_cli(["fit", *_cls(shapes), "--model.pretrained", "true", "--model.weights", str(weights),
               "--trainer.default_root_dir", str(run), *SHORT])
    weights.unlink()
    ckpt = run / "checkpoints" / "last.ckpt"
    build_cli(["predict", *_cls(shapes), "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "p"), *QUIET])
    assert len(load_predictions(tmp_path / "p" / "predictions.npz")) == 6
    build_cli(["validate", *_cls(shapes), "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "v"),
               "--model.pretrained", "false", "--model.weights", "null", *QUIET])
    assert type(load_task(ckpt)).__name__ == "ClassificationTask"

    # A Kaggle dataset of the checkpoint (twice: a two-model ensemble) predicts as `ensemble` does, byte for byte.
    config = ROOT / "configs" / "cls.yaml"
    main(["package", "--config", str(config), "--ckpt_path", str(ckpt), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
          "--tta", "flip", "--out", str(tmp_path / "dataset"), "--dependencies", "false"])
    dataset = tmp_path / "dataset"
    assert {p.name for p in dataset.iterdir()} == {"models", "wheels", "predict.py", "inference.ipynb"}
    assert [p.name for p in (dataset / "wheels").iterdir()][0].startswith("lightning_cv-")
    assert not (ROOT / "build").exists()  # the wheel is built from a copy: nothing written into the checkout
    assert "state_dict" in torch.load(next((dataset / "models").glob("*.ckpt")), weights_only=True)
    sample = shapes / "sample_submission.csv"
    subprocess.run([sys.executable, str(dataset / "predict.py"), "--images", str(shapes / "test"), "--sample_submission",
                    str(sample), "--out", str(tmp_path / "kaggle" / "submission.csv")], check=True, cwd=tmp_path)
    main(["ensemble", str(ckpt), str(ckpt), "--config", str(config), "--tta", "flip", "--sample_submission", str(sample),
          "--out", str(tmp_path / "local" / "submission.csv"), "--data.predict_dir", str(shapes / "test"),
          "--data.data_dir", str(shapes), "--data.image_size", "32", "--model.backbone", "resnet10t"])
    kaggle = (tmp_path / "kaggle" / "submission.csv").read_bytes()
    assert kaggle == (tmp_path / "local" / "submission.csv").read_bytes() and kaggle.count(b"\n") == 7


def test_checkpoint_of_a_pretrained_fit_predicts_without_the_hub(shapes, tmp_path, monkeypatch):
    """`--model.pretrained true` downloads once, for fit (faked here); predicting from its checkpoint never does."""
    import timm.models._builder as builder

    calls = []
    monkeypatch.setattr(builder, "load_pretrained", lambda model, *args, **kwargs: calls.append(type(model).__name__))
    run = tmp_path / "run"
    build_cli(["fit", *_cls(shapes), "--model.pretrained", "true", "--trainer.default_root_dir", str(run), *SHORT])
    assert calls == ["ResNet"]

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(builder, "load_pretrained", offline)
    cli = build_cli(["predict", *_cls(shapes), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                     "--trainer.default_root_dir", str(tmp_path / "p"), *QUIET])
    assert cli.model.hparams.pretrained is False and len(load_predictions(tmp_path / "p" / "predictions.npz")) == 6


def test_architecture_option_that_contradicts_the_checkpoint_is_an_error(shapes, tmp_path, capsys):
    run = tmp_path / "run"
    build_cli(["fit", *_cls(shapes), "--trainer.default_root_dir", str(run), *SHORT])
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", *_cls(shapes)[:-2], "--model.backbone", "resnet18", "--ckpt_path",
              str(run / "checkpoints" / "last.ckpt"), "--trainer.default_root_dir", str(tmp_path / "p"), *QUIET])
    assert exit_info.value.code == 2
    assert "--model.backbone 'resnet18' contradicts checkpoint" in capsys.readouterr().err


def test_segmentation_prediction_options_win_over_the_checkpoint(tmp_path):
    data = tmp_path / "seg"
    make_shapes(data, n_train=12, n_test=3, size=(64, 64), seed=2)
    common = ["--config", str(ROOT / "configs" / "seg.yaml"), "--data.data_dir", str(data), "--data.image_size", "64",
              "--data.batch_size", "4", "--model.encoder", "tu-test_resnet"]
    run = tmp_path / "run"
    build_cli(["fit", *common, "--model.threshold", "0.5", "--trainer.default_root_dir", str(run), *SHORT])
    ckpt = str(run / "checkpoints" / "last.ckpt")
    foreground = {}
    for threshold in ("0.1", "0.9"):
        out = tmp_path / f"t{threshold}"
        cli = build_cli(["predict", *common, "--ckpt_path", ckpt, "--model.threshold", threshold,
                         "--trainer.default_root_dir", str(out), *QUIET])
        assert cli.model.threshold == float(threshold)
        assert load_predictions(out / "predictions.npz").meta["threshold"] == float(threshold)
        foreground[threshold] = sum(int((read_mask(p) > 0).sum()) for p in (out / "masks").glob("*.png"))
    assert foreground["0.1"] > foreground["0.9"]
    tiled = build_cli(["predict", *common, "--ckpt_path", ckpt, "--model.tile_size", "32",
                       "--trainer.default_root_dir", str(tmp_path / "tiled"), *QUIET])
    assert tiled.model.tile_size == 32
    whole, tiles = (load_predictions(tmp_path / d / "predictions.npz").arrays["probs"] for d in ("t0.1", "tiled"))
    assert whole.shape == tiles.shape and not np.allclose(whole, tiles)  # blended 32-px tiles, not the whole image


def test_timm_names_with_pretrained_tags(shapes, tmp_path, capsys):
    cli = build_cli(["fit", *_cls(shapes)[:-2], "--model.backbone", "resnet18.a1_in1k", "--model.pretrained", "false",
                     "--trainer.default_root_dir", str(tmp_path / "run"), *SHORT])
    assert cli.trainer.global_step == 2
    with pytest.raises(SystemExit):
        main(["fit", *_cls(shapes)[:-2], "--model.backbone", "resnet18.a9_in1k", "--trainer.default_root_dir",
              str(tmp_path / "bad"), *SHORT])
    err = capsys.readouterr().err
    assert "Unknown pretrained tag 'a9_in1k'" in err and "a1_in1k" in err


@pytest.mark.slow
def test_inputs_stay_untouched(shapes, tmp_path, monkeypatch):
    """fit (with the cache), predict, cv and ensemble leave the data and a checkpoint's folder byte for byte
    as they were: caches and outputs go elsewhere."""
    monkeypatch.chdir(tmp_path)
    before = snapshot(shapes)
    run = tmp_path / "run"
    build_cli(["fit", *_cls(shapes), "--data.cache", "memmap", "--trainer.default_root_dir", str(run), *SHORT])
    models = tmp_path / "models"  # a checkpoint outside a run, as in a Kaggle dataset
    models.mkdir()
    (models / "fold0.ckpt").write_bytes((run / "checkpoints" / "last.ckpt").read_bytes())
    models_before = snapshot(models)
    build_cli(["predict", *_cls(shapes), "--data.cache", "memmap", "--ckpt_path", str(models / "fold0.ckpt"), *QUIET])

    def fold_in_process(command, **kwargs):  # cv's `python -m lightning_cv fit` folds, run here to save start-ups
        main(command[3:])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(cv_module.subprocess, "run", fold_in_process)
    main(["cv", *_cls(shapes), "--folds", "2", "--out", str(tmp_path / "cv"), "--predict_test", "false", *SHORT])
    main(["ensemble", str(models / "fold0.ckpt"), "--config", str(ROOT / "configs" / "cls.yaml"), "--out",
          str(tmp_path / "sub" / "submission.csv"), "--data.data_dir", str(shapes), "--data.image_size", "32",
          "--model.backbone", "resnet10t"])
    assert snapshot(shapes) == before
    assert snapshot(models) == models_before
    assert list((tmp_path / "sub").glob("submission-predictions/models-predict-*-fold0/predictions.npz"))
    assert (tmp_path / "cv" / "oof.csv").is_file()
