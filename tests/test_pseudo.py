"""Pseudo-labels: confident test predictions join the training split only (hold-out and fold mode),
bad files are one-line errors naming file and row, and the predict -> fit loop through the CLI."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from specs import ROOT

from lightning_cv.cli import build_cli
from lightning_cv.data.classification import ClassificationDataModule
from lightning_cv.data.demos import make_shapes
from lightning_cv.data.folds import assign_folds
from lightning_cv.errors import DataError, UserInputError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pseudo")
    make_shapes(root / "data", n_train=40, n_test=8, size=(32, 32), seed=1)
    return root / "data"


def _predictions(data_dir: Path, path: Path, seed: int = 0) -> pd.DataFrame:
    """A predictions.csv as `predict` writes it, for the test images: every other row confident."""
    classes = ClassificationDataModule(str(data_dir)).class_names
    images = sorted(p.name for p in (data_dir / "test").iterdir())
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(len(classes)), size=len(images)) * 0.5
    winners = rng.integers(0, len(classes), size=len(images))
    probs[np.arange(len(images)), winners] += 0.5  # top class between 0.5 and 1
    probs[::2] = np.eye(len(classes))[winners[::2]] * 0.95 + 0.05 / len(classes)
    probs[2] = 0.1 / (len(classes) - 1)
    probs[2, winners[2]] = 0.9  # exactly the threshold: included
    probs = probs.round(6)
    frame = pd.DataFrame({"image": images, "label": [classes[i] for i in probs.argmax(axis=1)]})
    for j, name in enumerate(classes):
        frame[f"prob_{name}"] = probs[:, j]
    frame.to_csv(path, index=False)
    return frame


def _ids(dataset) -> list[str]:
    return list(dataset.ids)


def test_confident_rows_join_training_only(data_dir, tmp_path, caplog):
    frame = _predictions(data_dir, tmp_path / "predictions.csv")
    probs = frame.filter(like="prob_").to_numpy()
    assert probs[2].max() == 0.9
    confident = frame[probs.max(axis=1) >= 0.9]
    assert 0 < len(confident) < len(frame)

    plain = ClassificationDataModule(str(data_dir), image_size=32)
    plain.setup("fit")
    pseudo = ClassificationDataModule(str(data_dir), image_size=32, pseudo_labels=str(tmp_path / "predictions.csv"),
                                      pseudo_threshold=0.9)
    with caplog.at_level(logging.INFO):
        pseudo.setup("fit")
    train, val = pseudo.datasets["train"], pseudo.datasets["val"]
    assert _ids(val) == _ids(plain.datasets["val"])
    assert _ids(train) == _ids(plain.datasets["train"]) + confident["image"].tolist()
    classes = pseudo.class_names
    added = train.targets[len(plain.datasets["train"]):]
    assert [classes[i] for i in added] == confident["label"].tolist()
    assert train.items[-1] == data_dir / "test" / confident["image"].iloc[-1]
    assert train[len(train) - 1]["image"].shape == (3, 32, 32)  # the test image itself, through the pipeline
    counts = confident["label"].value_counts()
    per_class = ", ".join(f"{c} {int(counts.get(c, 0))}" for c in classes)
    assert (f"pseudo labels: {len(confident)} of {len(frame)} images in {tmp_path / 'predictions.csv'} with probability "
            f">= 0.9 added to training ({per_class})") in caplog.text


def test_fold_mode_keeps_pseudo_labels_out_of_the_held_out_fold(data_dir, tmp_path):
    frame = _predictions(data_dir, tmp_path / "predictions.csv", seed=1)
    train_csv = pd.read_csv(data_dir / "train.csv")
    train_csv.assign(fold=assign_folds(train_csv["label"].tolist(), 2, seed=0)).to_csv(tmp_path / "folds.csv", index=False)
    dm = ClassificationDataModule(str(data_dir), image_size=32, fold=1, folds_csv=str(tmp_path / "folds.csv"),
                                  pseudo_labels=str(tmp_path / "predictions.csv"), pseudo_threshold=0.6)
    dm.setup("fit")
    folds = pd.read_csv(tmp_path / "folds.csv")
    confident = frame[frame.filter(like="prob_").to_numpy().max(axis=1) >= 0.6]["image"].tolist()
    assert _ids(dm.datasets["val"]) == folds[folds["fold"] == 1]["image"].tolist()
    assert _ids(dm.datasets["train"]) == folds[folds["fold"] == 0]["image"].tolist() + confident
    # The fold's out-of-fold predictions (`--data.predict_split val`) are the labelled fold only.
    oof = ClassificationDataModule(str(data_dir), image_size=32, fold=1, folds_csv=str(tmp_path / "folds.csv"),
                                   pseudo_labels=str(tmp_path / "predictions.csv"), predict_split="val")
    oof.setup("predict")
    assert _ids(oof.datasets["predict"]) == folds[folds["fold"] == 1]["image"].tolist()


def _broken(frame: pd.DataFrame, case: str, data_dir: Path, tmp_path: Path) -> tuple[pd.DataFrame, Path | None, str]:
    """A predictions file made wrong in one way, the predict_dir to use, and the error's expected text."""
    frame = frame.copy()
    if case == "unknown class":
        return frame.rename(columns={frame.columns[3]: "prob_hexagon"}), None, "row 1: class 'hexagon' is not a training class"
    if case == "missing image":
        frame.loc[5, "image"] = "test_00999.png"
        return frame, None, "row 7: image 'test_00999.png' not found in"
    if case == "training image":
        test_dir = tmp_path / "test"
        shutil.copytree(data_dir / "test", test_dir)
        shutil.copy(data_dir / "train" / "train_00003.png", test_dir)
        frame.loc[4, "image"] = "train_00003.png"
        return frame, test_dir, "row 6: 'train_00003.png' is also a training image"
    if case == "duplicate":
        frame.loc[3, "image"] = frame.loc[1, "image"]
        return frame, None, f"row 5: duplicate image {frame.loc[1, 'image']!r}"
    frame[frame.columns[2]] = frame[frame.columns[2]].astype(object)
    frame.loc[6, frame.columns[2]] = "high"
    return frame, None, "row 8: 'test_00006.png' has a missing or non-numeric probability"


@pytest.mark.parametrize("case", ["unknown class", "missing image", "training image", "duplicate", "non-numeric"])
def test_bad_pseudo_label_files_name_file_and_row(data_dir, tmp_path, case):
    frame, predict_dir, message = _broken(_predictions(data_dir, tmp_path / "good.csv"), case, data_dir, tmp_path)
    frame.to_csv(tmp_path / "bad.csv", index=False)
    dm = ClassificationDataModule(str(data_dir), image_size=32, pseudo_labels=str(tmp_path / "bad.csv"),
                                  predict_dir=str(predict_dir) if predict_dir else None)
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    assert str(err.value).startswith(f"{tmp_path / 'bad.csv'}: {message}")
    assert "\n" not in str(err.value)


def test_threshold_and_file_are_checked(data_dir, tmp_path):
    _predictions(data_dir, tmp_path / "predictions.csv")
    for threshold in (0.0, 1.5):
        dm = ClassificationDataModule(str(data_dir), pseudo_labels=str(tmp_path / "predictions.csv"), pseudo_threshold=threshold)
        with pytest.raises(UserInputError, match="pseudo_threshold must be in"):
            dm.setup("fit")
    with pytest.raises(UserInputError, match="nope.csv: pseudo-label file not found"):
        ClassificationDataModule(str(data_dir), pseudo_labels=str(tmp_path / "nope.csv")).setup("fit")
    # An ensemble's .npz and a submission with one probability column per class read like predictions.csv.
    frame = pd.read_csv(tmp_path / "predictions.csv")
    classes = [c[len("prob_"):] for c in frame.columns if c.startswith("prob_")]
    np.savez(tmp_path / "submission.npz", ids=frame["image"].to_numpy(str), probs=frame.filter(like="prob_").to_numpy(np.float32),
             class_names=np.array(classes))
    frame.rename(columns={f"prob_{c}": c for c in classes}).drop(columns="label").to_csv(tmp_path / "wide.csv", index=False)
    expected = None
    for name in ("predictions.csv", "submission.npz", "wide.csv"):
        dm = ClassificationDataModule(str(data_dir), image_size=32, pseudo_labels=str(tmp_path / name), pseudo_threshold=0.9)
        dm.setup("fit")
        got = (_ids(dm.datasets["train"]), dm.datasets["train"].targets.tolist())
        assert expected is None or got == expected, name
        expected = got


def test_predict_then_fit_with_pseudo_labels(data_dir, tmp_path):
    """The two-command loop: `predict` writes predictions.csv, `fit --data.pseudo_labels` trains on it."""
    common = ["--config", str(ROOT / "configs/cls.yaml"), "--data.data_dir", str(data_dir), "--model.backbone", "resnet10t",
              "--data.image_size", "32", "--data.batch_size", "8", "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false"]
    build_cli(["predict", *common, "--trainer.default_root_dir", str(tmp_path / "predict")])
    predictions = pd.read_csv(tmp_path / "predict" / "predictions.csv")
    top = predictions.filter(like="prob_").to_numpy().max(axis=1)
    threshold = float(np.sort(top)[len(top) // 2])  # about half of the test images
    expected = int((top >= threshold).sum())
    assert 0 < expected < len(top)
    cli = build_cli(["fit", *common, "--trainer.fast_dev_run", "1", "--data.pseudo_labels", str(tmp_path / "predict" / "predictions.csv"),
                     "--data.pseudo_threshold", str(threshold), "--trainer.default_root_dir", str(tmp_path / "fit")])
    n_val = len(cli.datamodule.datasets["val"])
    assert n_val == 8  # 20% of the 40 training images, none of the test images
    assert len(cli.datamodule.datasets["train"]) == 40 - n_val + expected
    assert cli.trainer.global_step == 1

