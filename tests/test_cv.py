"""`lightning-cv cv` for real on tiny data: 2 folds, one of them failing first and then rerun alone."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
from specs import ROOT, SPECS

from lightning_cv.cli import main
from lightning_cv.commands import cv as cv_module

CLS = next(s for s in SPECS if s.name == "cls")
FIT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false",
       "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0"]


def test_cv_folds_oof_rerun_and_ensemble(data_root, tmp_path, monkeypatch, capsys):
    data_dir = CLS.make_data(data_root)
    out = tmp_path / "cv"
    args = ["cv", "--config", str(ROOT / CLS.config), "--folds", "2", "--out", str(out), "--tta", "hflip",
            "--data.data_dir", str(data_dir), *CLS.smoke_args, *FIT]

    started: list[list[str]] = []

    def fold_process(command, **kwargs):
        """Each fold is one `python -m lightning_cv fit` process (run here in this process, to save
        the start-up); fold 1 fails the first time."""
        assert command[:4] == [sys.executable, "-m", "lightning_cv", "fit"] and kwargs.get("env", {}).get("WANDB_RUN_GROUP")
        started.append(command)
        if command[command.index("--data.fold") + 1] == "1" and len(started) == 2:
            return subprocess.CompletedProcess(command, 1)
        main(command[3:])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(cv_module.subprocess, "run", fold_process)
    main(args)
    train = pd.read_csv(data_dir / "train.csv", dtype=str, keep_default_na=False)
    folds = pd.read_csv(out / "folds.csv", dtype=str, keep_default_na=False)
    assert list(folds.columns) == [*train.columns, "fold"]
    assert folds["image"].tolist() == train["image"].tolist()
    assert sorted(folds["fold"].unique()) == ["0", "1"]
    results = json.loads((out / "cv_results.json").read_text())
    assert [r["status"].split()[0] for r in results["per_fold"]] == ["ok", "failed"]
    assert not results["complete"]
    assert "failed folds: [1]" in capsys.readouterr().err
    with np.load(out / "oof.npz") as oof:
        held_out = oof["fold"] == 0
        assert not np.isnan(oof["probs"][held_out]).any() and np.isnan(oof["probs"][~held_out]).all()

    # Rerun the failed fold alone: the stored folds are reused, fold 0's predictions are kept.
    main([*args, "--fold", "1"])
    assert [c[c.index("--data.fold") + 1] for c in started] == ["0", "1", "1"]
    assert pd.read_csv(out / "folds.csv", dtype=str, keep_default_na=False).equals(folds)
    results = json.loads((out / "cv_results.json").read_text())
    assert results["complete"] and [r["status"].split()[0] for r in results["per_fold"]] == ["ok", "ok"]
    assert set(results["summary"]) == {"acc", "f1", "logloss"}
    # The run's page, written at the end: scores per fold, TTA against plain validation, the classes.
    page = (out / "report.html").read_text()
    assert "out of fold (hflip)" in page and "Most confidently wrong" in page and "Learning curves" in page
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["command"].startswith("lightning-cv cv --config") and provenance["wall_s"] > 0
    assert json.loads((out / "fold1" / "provenance.json").read_text())["command"].startswith("lightning-cv fit --config")
    oof_csv = pd.read_csv(out / "oof.csv", dtype=str, keep_default_na=False)
    assert sorted(oof_csv["image"]) == sorted(train["image"])  # every training row exactly once
    assert (oof_csv["fold"].to_numpy() == folds["fold"].to_numpy()).all()
    with np.load(out / "oof.npz") as oof:
        probs = oof["probs"]
        assert probs.shape == (len(train), 5) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    # Each fold predicted exactly its own held-out rows; its score is computed on them.
    for k in (0, 1):
        fold_preds = pd.read_csv(out / f"fold{k}" / "oof" / "predictions.csv", dtype=str)
        assert sorted(fold_preds["image"]) == sorted(folds.loc[folds["fold"] == str(k), "image"])
        rows = oof_csv[oof_csv["fold"] == str(k)]
        assert results["per_fold"][k]["scores"]["acc"] == np.mean(rows["pred"] == rows["label"])

    # The folds' test predictions ensemble into a submission shaped like the sample submission.
    submission = tmp_path / "submission.csv"
    main(["ensemble", str(out), "--out", str(submission), "--sample_submission", str(data_dir / "sample_submission.csv")])
    sample = pd.read_csv(data_dir / "sample_submission.csv")
    written = pd.read_csv(submission)
    assert list(written.columns) == list(sample.columns) and written["image"].tolist() == sample["image"].tolist()
    assert set(written["label"]) <= set(train["label"])
    main(["score", str(submission), str(data_dir / "solution.csv"), "--metric", "accuracy"])
    assert "accuracy:" in capsys.readouterr().out
