"""Offline inference: a checkpoint predicts anywhere, prediction options win, inputs stay untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from specs import ROOT

from lightning_cv.checkpoints import load_task
from lightning_cv.cli import build_cli, main
from lightning_cv.demos import make_shapes
from lightning_cv.io import read_mask
from lightning_cv.predictions import load_predictions

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
    cli = build_cli(["fit", *_cls(shapes)[:-2], "--model.backbone", "resnet10t.c3_in1k", "--model.pretrained", "false",
                     "--trainer.default_root_dir", str(tmp_path / "run"), *SHORT])
    assert cli.trainer.global_step == 2
    with pytest.raises(SystemExit):
        main(["fit", *_cls(shapes)[:-2], "--model.backbone", "resnet10t.c4_in1k", "--trainer.default_root_dir",
              str(tmp_path / "bad"), *SHORT])
    err = capsys.readouterr().err
    assert "Unknown pretrained tag 'c4_in1k'" in err and "c3_in1k" in err


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
    main(["cv", *_cls(shapes), "--folds", "2", "--out", str(tmp_path / "cv"), "--predict_test", "false", *SHORT])
    main(["ensemble", str(models / "fold0.ckpt"), "--config", str(ROOT / "configs" / "cls.yaml"), "--out",
          str(tmp_path / "sub" / "submission.csv"), "--data.data_dir", str(shapes), "--data.image_size", "32",
          "--model.backbone", "resnet10t"])
    assert snapshot(shapes) == before
    assert snapshot(models) == models_before
    assert list((tmp_path / "sub").glob("submission-predictions/models-predict-*-fold0/predictions.npz"))
    assert (tmp_path / "cv" / "oof.csv").is_file()
