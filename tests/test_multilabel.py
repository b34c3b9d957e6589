"""Multi-label classification: tag data, BCE training, per-tag thresholds saved with the run and used by predict."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from predicting import run_writer
from specs import ROOT

from lightning_cv.cli import build_cli, main
from lightning_cv.data import MultiLabelDataModule
from lightning_cv.data.demos import make_multilabel
from lightning_cv.errors import DataError
from lightning_cv.io.images import write_image
from lightning_cv.predictions.files import Predictions, load_predictions
from lightning_cv.predictions.thresholds import load_thresholds, save_thresholds, tags, tune_thresholds
from lightning_cv.predictions.writer import PredictionWriter
from lightning_cv.tasks import MultiLabelTask

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _write_data(root, rows: list[tuple[str, str]]):
    rng = np.random.default_rng(0)
    for name, _ in rows:
        write_image(root / "train" / name, rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    pd.DataFrame(rows, columns=["image", "tags"]).to_csv(root / "train.csv", index=False)
    return root


def test_tags_become_a_stratified_0_1_matrix(tmp_path):
    rows = [(f"{i}.png", tags_) for i, tags_ in enumerate(["b a", "a", "c b", "a c", "b"] * 4)]
    dm = MultiLabelDataModule(data_dir=str(_write_data(tmp_path, rows)), image_size=8, val_fraction=0.25)
    assert dm.class_names == ["a", "b", "c"] and dm.num_classes == 3 and dm.multilabel
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) + len(val) == 20 and abs(len(val) - 5) <= 1
    # Iterative stratification: every tag keeps about its share in the held-out quarter, and in training.
    everything = np.concatenate([train.targets, val.targets])
    assert (np.abs(val.targets.sum(axis=0) - everything.sum(axis=0) / 4) <= 1).all()
    assert (train.targets.sum(axis=0) > 0).all() and (val.targets.sum(axis=0) > 0).all()
    sample = val[0]
    expected = [float(t in dict(rows)[sample["id"]].split()) for t in "abc"]
    assert sample["target"].dtype == np.float32 and sample["target"].tolist() == expected
    batch = next(iter(dm.val_dataloader()))
    assert batch["target"].dtype == torch.float32 and tuple(batch["target"].shape) == (len(val), 3)
    # An explicit tag order is kept.
    assert MultiLabelDataModule(data_dir=str(tmp_path), classes=["c", "b", "a"]).class_names == ["c", "b", "a"]


@pytest.mark.parametrize(("tags_", "message"), [
    ("a zebra", r"train\.csv: row 3: unknown tag 'zebra'"),
    ("   ", r"train\.csv: row 3: empty label for '1\.png'"),
])
def test_bad_tags_name_file_and_row(tmp_path, tags_, message):
    dm = MultiLabelDataModule(data_dir=str(_write_data(tmp_path, [("0.png", "a"), ("1.png", tags_), ("2.png", "b")])),
                              classes=["a", "b"])
    with pytest.raises(DataError, match=message):
        dm.setup("fit")


def test_a_few_steps_lower_the_bce_loss():
    torch.manual_seed(0)
    task = MultiLabelTask(num_classes=3, backbone="test_resnet", image_size=32)
    target = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    batch = {"image": torch.rand(4, 3, 32, 32), "target": target}
    logits = task(batch["image"])
    torch.testing.assert_close(task.compute_loss(logits, batch), torch.nn.functional.binary_cross_entropy_with_logits(logits, target))
    optimizer = task.configure_optimizers()
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = task.compute_loss(task(batch["image"]), batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_writer_thresholds_tags_and_probabilities(tmp_path):
    writer = PredictionWriter(tmp_path)
    task = MultiLabelTask(num_classes=3, class_names=["a", "b", "c"], backbone="test_resnet", image_size=32)
    task.label_thresholds.copy_(torch.tensor([0.5, 0.2, 0.9]))
    batches = [{"id": ["y.png", "x.png"], "probs": torch.tensor([[0.6, 0.3, 0.8], [0.1, 0.15, 0.05]])},
               {"id": ["z.png"], "probs": torch.tensor([[0.4, 0.1, 0.95]])}]
    run_writer(writer, task, batches, SimpleNamespace(task_name="multilabel"))
    frame = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False)
    assert list(frame.columns) == ["image", "tags", "prob_a", "prob_b", "prob_c"]
    # x: nothing above its threshold -> its most likely tag; y: a and b (c's 0.8 is under 0.9); z: c.
    assert frame["image"].tolist() == ["x.png", "y.png", "z.png"] and frame["tags"].tolist() == ["b", "a b", "c"]
    assert frame["prob_c"].tolist() == pytest.approx([0.05, 0.8, 0.95])
    saved = load_predictions(tmp_path / "predictions.npz")  # what ensembles read: the decisions travel along
    assert saved.task == "multilabel" and saved.ids.tolist() == ["y.png", "x.png", "z.png"]
    assert saved.meta["thresholds"] == pytest.approx([0.5, 0.2, 0.9])


def test_cv_scores_and_oof_thresholds(tmp_path):
    rng = np.random.default_rng(0)
    targets = (rng.random((60, 3)) < 0.4).astype(np.float32)
    targets[np.arange(60), np.arange(60) % 3] = 1
    probs = np.where(targets > 0, 0.35, 0.05) + rng.normal(0, 0.05, targets.shape)  # positives sit below 0.5
    oof = Predictions("multilabel", np.arange(60).astype(str), {"probs": probs.astype(np.float32)}, ["a", "b", "c"],
                      targets=targets)
    scores = MultiLabelTask.score(oof)
    assert set(scores) == {"f2", "f2_tuned", "acc"} and scores["f2_tuned"] > scores["f2"] + 0.3
    meta, report = MultiLabelTask.tune(oof.take(np.arange(5, 60)), tmp_path)  # a failed fold's rows left out
    thresholds = np.array(meta["thresholds"])
    assert report["rows"] == 55 and report["f2_tuned"] > report["f2"] and (thresholds < 0.35).all()
    np.testing.assert_allclose(load_thresholds(tmp_path / "thresholds.json", ["a", "b", "c"]), thresholds, atol=1e-6)
    # oof.csv's tags follow the tuned thresholds.
    tuned_tags = MultiLabelTask.oof_columns(oof.with_meta(**meta))["pred"]
    assert (tuned_tags == tags(probs, ["a", "b", "c"], thresholds)).all()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One tiny real fit of the demo data: (cli, data_dir, run_dir)."""
    root = tmp_path_factory.mktemp("ml")
    data_dir = root / "data"
    make_multilabel(data_dir, n_train=48, n_test=10, size=(32, 32), seed=3)
    run_dir = root / "run"
    cli = build_cli(["fit", "--config", str(ROOT / "configs" / "multilabel.yaml"), "--data.data_dir", str(data_dir),
                     "--data.image_size", "32", "--data.batch_size", "8", "--model.backbone", "test_resnet",
                     "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.num_sanity_val_steps", "0",
                     "--trainer.precision", "32-true",  # thresholds are re-tuned below on float32 probabilities
                     "--trainer.default_root_dir", str(run_dir), *QUIET])
    return cli, data_dir, run_dir


def test_checkpoint_carries_thresholds_tuned_on_its_validation_split(fitted):
    cli, _, run_dir = fitted
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt_path, weights_only=True)
    assert "thresholds" not in checkpoint["hyper_parameters"]  # chosen at inference, never restored over the command line
    stored = checkpoint["state_dict"]["label_thresholds"].numpy()
    restored = MultiLabelTask.load_from_checkpoint(ckpt_path, weights_only=True).eval()
    np.testing.assert_allclose(restored.label_thresholds.numpy(), stored)
    # They are what tuning on the checkpoint's own validation probabilities gives.
    batches = list(cli.datamodule.val_dataloader())
    with torch.no_grad():
        probs = torch.cat([restored(b["image"]).sigmoid() for b in batches]).numpy()
    targets = torch.cat([b["target"] for b in batches]).numpy()
    np.testing.assert_allclose(stored, tune_thresholds(probs, targets), atol=1e-6)
    assert "val/f2_tuned" in cli.trainer.callback_metrics
    assert list((run_dir / "pictures").glob("examples_epoch*.png"))


def test_predict_uses_the_checkpoint_thresholds_or_the_file(fitted, tmp_path, capsys):
    cli, data_dir, run_dir = fitted
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    names = cli.model.class_names
    common = ["predict", "--config", str(ROOT / "configs" / "multilabel.yaml"), "--data.data_dir", str(data_dir),
              "--data.image_size", "32", "--model.backbone", "test_resnet", "--ckpt_path", str(ckpt_path), *QUIET]
    own = torch.load(ckpt_path, weights_only=True)["state_dict"]["label_thresholds"].numpy()
    chosen = np.linspace(0.02, 0.98, len(names))  # different from the checkpoint's
    save_thresholds(tmp_path / "thresholds.json", names, chosen, 2.0, 0.0)
    for out, extra, expected in ((tmp_path / "own", [], own),
                                 (tmp_path / "file", ["--model.thresholds", str(tmp_path / "thresholds.json")], chosen)):
        build_cli([*common, *extra, "--trainer.default_root_dir", str(out)])
        frame = pd.read_csv(out / "predictions.csv", keep_default_na=False)
        assert len(frame) == 10
        probs = frame[[f"prob_{n}" for n in names]].to_numpy()
        assert frame["tags"].tolist() == tags(probs, names, expected)
    main(["score", str(tmp_path / "file" / "predictions.csv"), str(data_dir / "solution.csv"), "--metric", "fbeta"])
    assert "fbeta:" in capsys.readouterr().out


def test_demo_is_deterministic_and_shaped_like_a_competition(tmp_path):
    for name in ("one", "two"):
        make_multilabel(tmp_path / name, n_train=6, n_test=3, size=(32, 32), seed=5)
    train = pd.read_csv(tmp_path / "one" / "train.csv", keep_default_na=False)
    assert train.equals(pd.read_csv(tmp_path / "two" / "train.csv", keep_default_na=False))
    assert all(1 <= len(t.split()) <= 3 and t.split() == sorted(set(t.split())) for t in train["tags"])
    assert (tmp_path / "one" / "train" / train["image"][0]).read_bytes() == (tmp_path / "two" / "train" / train["image"][0]).read_bytes()
    solution = pd.read_csv(tmp_path / "one" / "solution.csv")
    sample = pd.read_csv(tmp_path / "one" / "sample_submission.csv")
    assert list(solution.columns) == list(sample.columns) == ["image", "tags"]
    assert sample["image"].tolist() == solution["image"].tolist() == sorted(p.name for p in (tmp_path / "one" / "test").iterdir())


def test_ensemble_decides_tags_with_the_cv_thresholds(tmp_path, capsys):
    """Fold predictions of a multi-label CV run: mean probabilities cut at the run's thresholds.json,
    a vote keeps the tags most folds put above their threshold; the sample's shape is followed."""
    cv_dir, names = tmp_path / "cv", ["a", "b", "c"]
    folds = ([[0.30, 0.10, 0.90], [0.05, 0.60, 0.10]], [[0.10, 0.12, 0.70], [0.20, 0.50, 0.40]],
             [[0.25, 0.05, 0.80], [0.05, 0.55, 0.35]])
    for k, probs in enumerate(folds):
        (cv_dir / f"fold{k}" / "test").mkdir(parents=True)
        np.savez(cv_dir / f"fold{k}" / "test" / "predictions.npz", ids=np.array(["x.png", "y.png"]),
                 probs=np.array(probs, np.float32), class_names=np.array(names), task=np.array("multilabel"))
    (cv_dir / "folds.csv").write_text("image,tags,fold\n")
    save_thresholds(cv_dir / "thresholds.json", names, np.array([0.2, 0.5, 0.3]), beta=2.0, score=0.9)
    pd.DataFrame({"image": ["y.png", "x.png"], "tags": ["a", "a"]}).to_csv(tmp_path / "sample.csv", index=False)
    out = tmp_path / "submission.csv"

    main(["ensemble", str(cv_dir), "--out", str(out), "--sample_submission", str(tmp_path / "sample.csv")])
    # means: x (0.217, 0.09, 0.8) -> a c; y (0.1, 0.55, 0.283) -> b (c's 0.283 is under its 0.3).
    assert pd.read_csv(out).values.tolist() == [["y.png", "b"], ["x.png", "a c"]]
    assert f"thresholds: {cv_dir / 'thresholds.json'}" in capsys.readouterr().out
    main(["ensemble", str(cv_dir), "--out", str(out), "--method", "vote"])
    # votes above threshold: x a 2/3, c 3/3; y b 3/3, c 2/3 (0.4 and 0.35 > 0.3).
    assert pd.read_csv(out)[["image", "tags"]].values.tolist() == [["x.png", "a c"], ["y.png", "b c"]]
    main(["ensemble", str(cv_dir), "--out", str(out), "--thresholds", "0.5"])
    assert pd.read_csv(out)["tags"].tolist() == ["c", "b"]
