"""A run carries its recipe from fit to predict: the checkpoint alone predicts as the fully repeated command
does, without the training files; hold-out splits keep groups apart and are recorded; submissions written
without the sample are scored against the competition's solution."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from layouts import make_carvana, make_tgs
from specs import ROOT, SPECS

from lightning_cv.cli import main
from lightning_cv.cli.commands.score import score, score_frames
from lightning_cv.data import SegmentationDataModule
from lightning_cv.errors import DataError
from lightning_cv.io.images import read_mask
from lightning_cv.io.masks import rle_decode

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--trainer.logger", "false"]
TGS_FIT = ["--config", str(ROOT / "configs" / "seg.yaml"), "--model.encoder", "tu-test_resnet", "--data.image_dir",
           "train/images", "--data.mask_dir", "train/masks", "--data.mask_suffix", "", "--data.rle_order", "F",
           "--data.image_size", "32", "--data.channels", "1", "--data.batch_size", "8", "--model.threshold", "0.4"]


def _error(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tgs(tmp_path_factory) -> tuple[Path, Path]:
    """(a TGS-like folder, the checkpoint of a short fit on it with its layout, size and order options)."""
    root = tmp_path_factory.mktemp("tgs")
    data = make_tgs(root / "tgs")
    main(["fit", *TGS_FIT, "--data.data_dir", str(data), "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "1",
          "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(root / "run"), *QUIET])
    return data, root / "run" / "checkpoints" / "last.ckpt"


def test_checkpoint_alone_predicts_the_repeated_command_without_the_training_files(tgs, tmp_path, capfd):
    data, ckpt = tgs
    test = ["--data.predict_dir", str(data / "test" / "images"), "--data.sample_submission", str(data / "sample_submission.csv")]
    full, given_config, alone = tmp_path / "full", tmp_path / "config", tmp_path / "alone"
    main(["predict", *TGS_FIT, "--data.data_dir", str(data), "--ckpt_path", str(ckpt), *test,
          "--trainer.default_root_dir", str(full), *QUIET])
    # The flags forgotten: the config's 64 px, C order and 3 channels yield to the checkpoint's recipe.
    main(["predict", "--config", str(ROOT / "configs" / "seg.yaml"), "--data.data_dir", str(data), "--ckpt_path", str(ckpt),
          *test, "--trainer.default_root_dir", str(given_config), *QUIET])
    hidden = data.parent / "elsewhere"
    (data / "train").rename(hidden)  # a notebook holds the test images only
    (data / "train.csv").unlink()
    try:
        main(["predict", "--ckpt_path", str(ckpt), *test, "--trainer.default_root_dir", str(alone), *QUIET])
    finally:
        hidden.rename(data / "train")
    submission = (full / "submission.csv").read_bytes()
    assert (alone / "submission.csv").read_bytes() == submission == (given_config / "submission.csv").read_bytes()

    # Column-major, as the training table: each RLE decodes (order F) to the mask predict wrote.
    frame = pd.read_csv(alone / "submission.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["id", "rle_mask"] and len(frame) == 6
    decoded = [rle_decode(rle, (101, 101), "F") for rle in frame["rle_mask"]]
    written = [(read_mask(alone / "masks" / f"{i}.png") > 0).astype(np.uint8) for i in frame["id"]]
    assert all(np.array_equal(d, w) for d, w in zip(decoded, written)) and any(w.any() for w in written)
    assert score(alone / "submission.csv", data / "solution.csv", "iou_map") >= 0.0

    # An option on the command line wins, and one that changes what the model sees is noted.
    capfd.readouterr()
    main(["predict", "--ckpt_path", str(ckpt), *test, "--data.image_size", "64", "--trainer.default_root_dir",
          str(tmp_path / "other"), *QUIET])
    out = capfd.readouterr()
    assert f"note: --data.image_size 64: {ckpt} was trained with 32" in out.out + out.err
    assert (tmp_path / "other" / "submission.csv").read_bytes() != submission


def test_a_config_of_another_task_is_refused(tgs, tmp_path, capsys):
    data, ckpt = tgs
    err = _error(capsys, ["predict", "--config", str(ROOT / "configs" / "cls.yaml"), "--ckpt_path", str(ckpt),
                          "--trainer.default_root_dir", str(tmp_path / "p")])
    assert err.startswith(f"error: checkpoint {ckpt} is a SegmentationTask, but the config asks for a ClassificationTask")


def test_no_images_found_names_the_option_and_the_subfolders(tgs, tmp_path, capsys):
    data, _ = tgs
    err = _error(capsys, ["fit", "--config", str(ROOT / "configs" / "seg.yaml"), "--data.data_dir", str(data),
                          "--trainer.default_root_dir", str(tmp_path / "run"), *QUIET])
    assert "no images" in err and "--data.image_dir train/images" in err and "images/, masks/" in err


def test_holdout_keeps_each_group_on_one_side_and_is_recorded(tmp_path):
    data = make_carvana(tmp_path / "carvana")

    def split(group_pattern: str | None) -> pd.DataFrame:
        module = SegmentationDataModule(data_dir=str(data), image_size=32, val_fraction=0.25, group_pattern=group_pattern)
        module.setup("fit")
        return module.split.assign(car=module.split["id"].str.split("_").str[0])

    leaky, grouped = split(None), split("^([^_]+)_")
    cars = [set(frame.loc[frame["split"] == side, "car"]) for frame in (leaky, grouped) for side in ("train", "val")]
    assert cars[0] & cars[1]  # without the pattern, views of one car on both sides
    assert not cars[2] & cars[3] and len(cars[3]) == 2 and len(grouped) == 32


def test_fit_on_carvana_gif_masks_writes_split_csv(tmp_path):
    data = make_carvana(tmp_path / "carvana")
    run = tmp_path / "run"
    main(["fit", "--config", str(ROOT / "configs" / "seg.yaml"), "--model.encoder", "tu-test_resnet", "--data.data_dir",
          str(data), "--data.image_size", "32", "--data.group_pattern", "^([^_]+)_", "--data.batch_size", "8",
          "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
          "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(run), *QUIET])
    split = pd.read_csv(run / "split.csv", dtype=str)
    groups = split.assign(car=split["id"].str.split("_").str[0]).groupby("car")["split"].nunique()
    assert (groups == 1).all() and set(split["split"]) == {"train", "val"}
    shutil.rmtree(run / "checkpoints")


def test_score_keys_a_submission_written_without_the_sample_like_the_solution():
    """A fold's own test submission is keyed by file stem under `id`; Carvana's solution by file name under `img`."""
    solution = pd.DataFrame({"img": ["a_01.jpg", "b_01.jpg"], "rle_mask": ["1 4", "3 2"]})
    submission = pd.DataFrame({"id": ["b_01", "a_01"], "rle_mask": ["3 2", "1 2"]})
    assert score_frames(submission, solution, "dice") == pytest.approx((1.0 + 2 * 2 / 6) / 2)
    pairs = pd.DataFrame({"Image_Label": ["a.jpg_Fish", "a.jpg_Sugar"], "EncodedPixels": ["1 4", ""]})
    assert score_frames(pd.DataFrame({"Image_Label": ["a_Fish"], "EncodedPixels": ["1 4"]}), pairs, "dice_pairs") == 1.0
    with pytest.raises(DataError, match="2 id"):
        score_frames(submission.assign(id=["x", "y"]), solution, "dice")  # other images: not keyed by stem


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_every_task_ensembles_and_packages_from_the_checkpoint_alone(spec, data_root, tmp_path):
    """Fit with options off the config's defaults; `ensemble` of the checkpoint alone, the same with every
    fit option repeated, and the Kaggle package's predict.py write the same submission, byte for byte."""
    data = spec.make_data(data_root)
    fit_options = ["--config", str(ROOT / spec.config), "--data.data_dir", str(data), *spec.smoke_args, *spec.recipe_args]
    run = tmp_path / "run"
    main(["fit", *fit_options, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
          "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(run), *QUIET])
    ckpt = str(run / "checkpoints" / "last.ckpt")
    images = str(data / spec.test_dir)
    main(["ensemble", ckpt, "--out", str(tmp_path / "alone.csv"), "--data.predict_dir", images])
    main(["ensemble", ckpt, "--out", str(tmp_path / "repeated.csv"), *fit_options, "--data.predict_dir", images])
    main(["package", "--ckpt_path", ckpt, "--out", str(tmp_path / "dataset"), "--dependencies", "false"])
    assert not (tmp_path / "dataset" / "models" / "config.yaml").exists()
    subprocess.run([sys.executable, str(tmp_path / "dataset" / "predict.py"), "--images", images, "--out",
                    str(tmp_path / "packaged.csv")], check=True, cwd=tmp_path)
    alone = (tmp_path / "alone.csv").read_bytes()
    assert alone.count(b"\n") > 1
    assert (tmp_path / "repeated.csv").read_bytes() == alone == (tmp_path / "packaged.csv").read_bytes()
