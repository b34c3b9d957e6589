"""Classification as competitions pose it: probability submissions, one-hot tables, the leaderboard's metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, log_loss, roc_auc_score
from specs import ROOT

from lightning_cv.cli import build_cli, main
from lightning_cv.cli.commands.score import score_frames
from lightning_cv.data import ClassificationDataModule, MultiLabelDataModule
from lightning_cv.data.demos import make_shapes
from lightning_cv.errors import DataError
from lightning_cv.io.images import write_image
from lightning_cv.predictions.files import Predictions
from lightning_cv.tasks import ClassificationTask


def test_binary_submission_holds_the_positive_probability():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    predictions = Predictions("cls", np.array(["a.jpg", "b.jpg"]), {"probs": probs}, ["benign", "malignant"])
    sample = pd.DataFrame({"image_name": ["b", "a"], "target": ["0", "0"]})  # SIIM-ISIC: ids without extension
    frame = ClassificationTask.submission(predictions, sample)
    assert frame.values.tolist() == [["b", pytest.approx(0.8)], ["a", pytest.approx(0.1)]]
    labels = ClassificationTask.submission(predictions.with_meta(submission_labels=True), sample)
    assert labels["target"].tolist() == ["malignant", "benign"]


def test_one_hot_tables(tmp_path):
    """Plant Pathology's one-hot columns: single-label when each row has one 1 (classes in the columns'
    order); several 1s are multi-label tags; anything else names its row."""
    for i in range(4):
        write_image(tmp_path / "images" / f"Train_{i}.jpg", np.full((8, 8, 3), 40 * i, np.uint8))
    columns = ["healthy", "multiple_diseases", "rust", "scab"]
    one_hot = pd.DataFrame([[f"Train_{i}", *np.eye(4, dtype=int)[[0, 2, 3, 2][i]]] for i in range(4)], columns=["image_id", *columns])
    one_hot.to_csv(tmp_path / "train.csv", index=False)
    dm = ClassificationDataModule(str(tmp_path), image_dir="images", image_col="image_id", image_suffix=".jpg",
                                  label_cols=columns)
    assert dm.class_names == columns
    assert dm.labelled_rows().targets.tolist() == [0, 2, 3, 2]
    frame, key, label = dm.fold_table()
    assert frame[label].tolist() == ["healthy", "rust", "scab", "rust"]

    multi = one_hot.copy()
    multi.loc[1, "scab"] = 1
    multi.to_csv(tmp_path / "multi.csv", index=False)
    with pytest.raises(DataError, match="multi.csv: row 3: 2 of the label columns .* are 1 \\(several 1s"):
        ClassificationDataModule(str(tmp_path), csv="multi.csv", image_dir="images", image_col="image_id",
                                 image_suffix=".jpg", label_cols=columns).labelled_rows()
    tags = MultiLabelDataModule(str(tmp_path), csv="multi.csv", image_dir="images", image_col="image_id",
                                image_suffix=".jpg", label_cols=columns)
    assert tags.labelled_rows().targets[1].tolist() == [0, 0, 1, 1]


def test_leaderboard_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 40)
    prob = np.clip(truth * 0.6 + rng.uniform(0, 0.5, 40), 0, 1)
    ids = [f"i{k}" for k in range(40)]
    solution, submission = pd.DataFrame({"id": ids, "target": truth}), pd.DataFrame({"id": ids[::-1], "target": prob[::-1]})
    assert score_frames(submission, solution, "auc") == pytest.approx(roc_auc_score(truth, prob))
    assert score_frames(submission, solution, "logloss") == pytest.approx(log_loss(truth, prob))
    grades, guesses = rng.integers(0, 5, 40), rng.integers(0, 5, 40)
    assert score_frames(pd.DataFrame({"id": ids, "diagnosis": guesses}), pd.DataFrame({"id": ids, "diagnosis": grades}),
                        "qwk") == pytest.approx(cohen_kappa_score(grades, guesses, weights="quadratic"))
    onehot, probs = np.eye(3)[rng.integers(0, 3, 40)], rng.dirichlet(np.ones(3), 40)
    cols = ["a", "b", "c"]
    sol, sub = (pd.DataFrame({"id": ids, **{c: m[:, j] for j, c in enumerate(cols)}}) for m in (onehot, probs))
    expected = np.mean([roc_auc_score(onehot[:, j], probs[:, j]) for j in range(3)])
    assert score_frames(sub, sol, "colauc") == pytest.approx(expected)


@pytest.mark.slow
def test_binary_auc_competition_end_to_end(tmp_path, capsys):
    """SIIM-ISIC's layout (image_name,target; sample image_name,target): predict writes P(positive), and its
    AUC on the held-back answers is well above chance."""
    data = tmp_path / "isic"
    make_shapes(data, n_train=300, n_test=60, size=(48, 48), seed=7, scale=(0.3, 0.45), occlusion=0.0)
    for name, out in (("train.csv", "train.csv"), ("solution.csv", "solution.csv")):
        frame = pd.read_csv(data / name)
        frame = pd.DataFrame({"image_name": frame["image"].str.removesuffix(".png"),
                              "target": (frame["label"] == "circle").astype(int)})
        frame.to_csv(data / out, index=False)
    pd.read_csv(data / "solution.csv").assign(target=0).to_csv(data / "sample_submission.csv", index=False)
    common = ["--config", str(ROOT / "configs" / "cls.yaml"), "--data.data_dir", str(data), "--data.image_col", "image_name",
              "--data.label_col", "target", "--data.image_suffix", ".png", "--data.image_size", "48",
              "--model.backbone", "resnet10t", "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false", "--trainer.precision", "32-true"]  # the AUC below, on any CPU
    main(["fit", *common, "--trainer.max_epochs", "6", "--model.monitor", "val/auc",
          "--trainer.default_root_dir", str(tmp_path / "run")])
    logged = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert logged["val/auc"].dropna().between(0, 1).all() and len(logged["val/auc"].dropna()) == 6
    best = next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))
    main(["predict", *common, "--ckpt_path", str(best),
          "--data.sample_submission", "sample_submission.csv", "--trainer.default_root_dir", str(tmp_path / "p")])
    submission = pd.read_csv(tmp_path / "p" / "submission.csv")
    assert list(submission.columns) == ["image_name", "target"] and submission["target"].between(0, 1).all()
    assert submission["target"].nunique() > 10  # probabilities, not 0/1 labels
    capsys.readouterr()
    main(["score", str(tmp_path / "p" / "submission.csv"), str(data / "solution.csv"), "--metric", "auc"])
    assert float(capsys.readouterr().out.split(":")[1]) > 0.75


def test_fourth_channel_carries_the_label(tmp_path):
    """RGBA images whose colour is noise and whose 4th channel is the label: read as 3 channels the classes
    look alike; with --data.channels 4 the model gets the 4th channel and learns it."""
    import cv2

    rng = np.random.default_rng(0)
    rows = []
    for i in range(64):
        label = i % 2
        rgba = np.concatenate([rng.integers(0, 256, (16, 16, 3)), np.full((16, 16, 1), 40 + 160 * label)], axis=2)
        (tmp_path / "train").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "train" / f"{i}.png"), rgba.astype(np.uint8))
        rows.append((f"{i}.png", "bright" if label else "dark"))
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(tmp_path / "train.csv", index=False)
    rgb = ClassificationDataModule(str(tmp_path), image_size=16)
    rgb.setup("fit")
    assert rgb.in_chans == 3 and tuple(rgb.datasets["train"][0]["image"].shape) == (3, 16, 16)
    four = ClassificationDataModule(str(tmp_path), image_size=16, channels=4)
    four.setup("fit")
    sample = four.datasets["train"][0]
    assert four.in_chans == 4 and tuple(sample["image"].shape) == (4, 16, 16)
    bright = [s["image"][3].mean().item() for s in (four.datasets["train"][k] for k in range(8)) if s["target"] == 0]
    assert bright and all(abs(b - 200 / 255) < 0.01 for b in bright)  # "bright" is class 0 (alphabetical)

    common = ["--config", str(ROOT / "configs" / "cls.yaml"), "--data.data_dir", str(tmp_path), "--data.image_size", "16",
              "--data.batch_size", "8", "--model.backbone", "small_cnn", "--trainer.max_epochs", "3",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
              "--trainer.precision", "32-true", "--data.train_augment", "[]"]
    cli = build_cli(["fit", *common, "--data.channels", "4", "--trainer.default_root_dir", str(tmp_path / "run4")])
    assert cli.model.in_chans == 4 and float(cli.trainer.callback_metrics["val/acc"]) == 1.0


def test_grade_cut_points_are_tuned_for_qwk(tmp_path):
    """APTOS: a regressor trained with MSE shrinks grades towards the mean; cut points tuned on out-of-fold
    values beat plain rounding in QWK, are saved as postprocess.json, and the submission gets the grades."""
    from sklearn.metrics import cohen_kappa_score

    from lightning_cv.predictions.decisions import load_decisions
    from lightning_cv.tasks.regression import RegressionTask, to_grades

    rng = np.random.default_rng(0)
    grades = rng.integers(0, 5, 300)
    values = (2 + 0.6 * (grades - 2) + rng.normal(0, 0.25, 300)).astype(np.float32)[:, None]
    ids = np.array([f"img{k}" for k in range(300)])
    oof = Predictions("regression", ids, {"values": values}, ["diagnosis"], {"grades": [0, 4], "cuts": [0.5, 1.5, 2.5, 3.5]},
                      targets=grades.astype(np.float32))
    rounded = cohen_kappa_score(grades, np.clip(np.round(values[:, 0]), 0, 4), weights="quadratic")
    assert RegressionTask.score(oof)["qwk"] == pytest.approx(rounded)
    meta, report = RegressionTask.tune(oof, tmp_path)
    assert report["qwk_rounded"] == pytest.approx(rounded) and report["qwk_tuned"] > rounded + 0.02
    assert load_decisions(tmp_path / "postprocess.json", ["diagnosis"]) == meta
    tuned = cohen_kappa_score(grades, to_grades(values[:, 0], meta["cuts"], 0), weights="quadratic")
    assert tuned == pytest.approx(report["qwk_tuned"])
    sample = pd.DataFrame({"id_code": ids[::-1], "diagnosis": "0"})
    frame = RegressionTask.submission(oof.with_meta(**meta), sample)
    assert frame["id_code"].tolist() == ids[::-1].tolist()
    assert frame["diagnosis"].tolist() == to_grades(values[::-1, 0], meta["cuts"], 0).tolist()
    with pytest.raises(DataError, match="made for classes"):
        load_decisions(tmp_path / "postprocess.json", ["other"])


def test_regression_grades_log_val_qwk_and_predict_grades(tmp_path):
    """--model.grades true: val/qwk is logged (monitorable), predictions are cut into the training range's grades."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        grade = i % 5
        write_image(tmp_path / "train" / f"{i}.png", np.clip(rng.normal(30 + 50 * grade, 8, (16, 16, 3)), 0, 255).astype(np.uint8))
        rows.append((f"{i}.png", grade))
    for i in range(5):
        write_image(tmp_path / "test" / f"t{i}.png", np.full((16, 16, 3), 30 + 50 * i, np.uint8))
    pd.DataFrame(rows, columns=["image", "diagnosis"]).to_csv(tmp_path / "train.csv", index=False)
    common = ["--config", str(ROOT / "configs" / "regression.yaml"), "--data.data_dir", str(tmp_path),
              "--data.label_col", "diagnosis", "--data.image_size", "16", "--data.batch_size", "8",
              "--model.backbone", "small_cnn", "--model.grades", "true", "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false", "--trainer.precision", "32-true", "--data.train_augment", "[]"]
    main(["fit", *common, "--trainer.max_epochs", "3", "--model.monitor", "val/qwk", "--trainer.default_root_dir",
          str(tmp_path / "run")])
    logged = pd.read_csv(tmp_path / "run" / "metrics.csv")["val/qwk"].dropna()
    assert len(logged) == 3 and logged.between(-1, 1).all()
    best = next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt"))
    main(["predict", *common, "--ckpt_path", str(best), "--trainer.default_root_dir", str(tmp_path / "p")])
    predicted = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert predicted["diagnosis"].dtype.kind == "i" and predicted["diagnosis"].between(0, 4).all()
