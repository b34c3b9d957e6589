"""`lightning-cv cv` for real on tiny data: 2 folds, one of them failing first and then rerun alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from processes import wandb_record
from specs import ROOT, SPECS

from lightning_cv.cli import main
from lightning_cv.cli.commands import cv as cv_module
from lightning_cv.io import images as io_module
from lightning_cv.io.file_checks import CHECKED_FILES_ENV

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
        """Each fold is one `python -m lightning_cv fit` process (run here in this process, with the
        environment cv gives it, to save the start-up); fold 1 fails the first time."""
        assert command[:4] == [sys.executable, "-m", "lightning_cv", "fit"] and kwargs.get("env", {}).get("WANDB_RUN_GROUP")
        started.append(command)
        if command[command.index("--data.fold") + 1] == "1" and len(started) == 2:
            return subprocess.CompletedProcess(command, 1)
        with monkeypatch.context() as fold:
            fold.setenv(CHECKED_FILES_ENV, kwargs["env"][CHECKED_FILES_ENV])
            main(command[3:])
        return subprocess.CompletedProcess(command, 0)

    checked: list[str] = []
    check_image = io_module._check_image
    monkeypatch.setattr(io_module, "_check_image", lambda path: checked.append(path.name) or check_image(path))
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
    # Each training and test image was checked once for both runs (their folds' fits, predictions and reports
    # reused the check).
    test_images = [p.name for p in (data_dir / "test").iterdir()]
    assert sorted(checked) == sorted(train["image"].tolist() + test_images)
    assert pd.read_csv(out / "folds.csv", dtype=str, keep_default_na=False).equals(folds)
    results = json.loads((out / "cv_results.json").read_text())
    assert results["complete"] and [r["status"].split()[0] for r in results["per_fold"]] == ["ok", "ok"]
    assert set(results["summary"]) == {"acc", "f1", "logloss"}
    # The run's page, written at the end: scores per fold, TTA against plain validation, the classes.
    page = (out / "report.html").read_text()
    assert "out of fold (hflip)" in page and "Most confidently wrong" in page and "Learning curves" in page
    provenance = json.loads((out / "environment.json").read_text())
    assert provenance["command"].startswith("lightning-cv cv --config") and provenance["wall_s"] > 0
    assert json.loads((out / "fold1" / "environment.json").read_text())["command"].startswith("lightning-cv fit --config")
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


def test_cv_summary_goes_to_the_folds_wandb_group(monkeypatch, tmp_path):
    """Offline without credentials: a run of job type cv in the folds' group, with the per-fold table and
    the mean/std and out-of-fold scores in its summary."""
    from lightning_cv.training.loggers import log_cv_summary

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    results = {"task": "cls", "folds": 2, "per_fold": [{"fold": 0, "rows": 5, "status": "ok", "scores": {"acc": 0.8}},
                                                        {"fold": 1, "rows": 5, "status": "ok", "scores": {"acc": 0.6}}],
               "summary": {"acc": {"mean": 0.7, "std": 0.1, "folds": 2}}, "oof": {"acc": 0.7, "rows": 10}}
    run_dir = Path(log_cv_summary(tmp_path, "lightning-cv-cls", "cls-cv-test", results)).parent
    [table] = run_dir.glob("files/media/table/cv/folds_*.table.json")
    table = json.loads(table.read_text())
    assert table["columns"] == ["fold", "rows", "status", "acc"] and [r[-1] for r in table["data"]] == [0.8, 0.6]
    record = wandb_record(run_dir, b"cls-cv-test", b"cv/acc_mean", b"oof/acc")
    assert b"cls-cv-test" in record and b"cv/acc_mean" in record and b"oof/acc" in record  # group and summary
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert log_cv_summary(tmp_path, "p", "g", results) is None


@pytest.mark.slow
def test_cv_resumes_after_kills(data_root, tmp_path, monkeypatch):
    """Fold 0's process is killed before it saved anything, fold 1's after its first epoch (of 2): the rerun
    trains fold 0 afresh, resumes fold 1 from its last.ckpt and gathers a complete OOF; a third run has nothing
    left to train."""
    data_dir = CLS.make_data(data_root)
    out = tmp_path / "cv"
    args = ["cv", "--config", str(ROOT / CLS.config), "--folds", "2", "--out", str(out), "--predict_test", "false",
            "--report", "false", "--data.data_dir", str(data_dir), *CLS.smoke_args, *FIT, "--trainer.max_epochs", "2"]
    started: list[list[str]] = []

    def fold_process(command, **kwargs):
        started.append(command)
        if len(started) == 1:
            return subprocess.CompletedProcess(command, -9)  # killed at once
        if len(started) == 2:
            main([*command[3:], "--trainer.max_epochs", "1"])  # killed after epoch 1 (its last.ckpt is there)
            return subprocess.CompletedProcess(command, -9)
        main(command[3:])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(cv_module.subprocess, "run", fold_process)
    main(args)
    folds = (out / "folds.csv").read_text()
    assert [r["status"] for r in json.loads((out / "cv_results.json").read_text())["per_fold"]] == ["failed (exit -9)"] * 2

    main(args)
    fold0, fold1 = started[2:]
    assert "--ckpt_path" not in fold0 and fold1[fold1.index("--ckpt_path") + 1] == str(out / "fold1/checkpoints/last.ckpt")
    results = json.loads((out / "cv_results.json").read_text())
    assert results["complete"] and (out / "folds.csv").read_text() == folds
    assert int(pd.read_csv(out / "fold1" / "metrics.csv")["epoch"].max()) == 1  # epochs 0 and 1: resumed, not redone
    with np.load(out / "oof.npz") as oof:
        assert not np.isnan(oof["probs"]).any()

    main(args)
    assert len(started) == 4  # both folds finished: kept, their predictions reused
    assert json.loads((out / "cv_results.json").read_text())["complete"]


def test_parallel_fold_processes_get_their_own_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    show = "import os, sys; print('gpu', os.environ['CUDA_VISIBLE_DEVICES']); sys.exit({})"
    planned = [(k, [sys.executable, "-c", show.format(code)]) for k, code in ((0, 0), (1, 3), (2, 0))]
    ended = dict(cv_module._run_parallel(planned, dict(__import__("os").environ), 2, tmp_path))
    assert ended == {0: 0, 1: 3, 2: 0}
    seen = {k: (tmp_path / f"fold{k}" / "fit.log").read_text().split()[-1] for k in range(3)}
    assert seen[0] != seen[1] and set(seen.values()) <= {"5", "7"}


def _finished_fold(cv_dir: Path, k: int) -> Path:
    """A fold whose fit ended (its best checkpoint and done.json); returns where its OOF predictions go."""
    (cv_dir / f"fold{k}" / "checkpoints").mkdir(parents=True)
    (cv_dir / f"fold{k}" / "checkpoints" / "best-epoch000.ckpt").write_bytes(b"")
    (cv_dir / f"fold{k}" / cv_module.DONE).write_text("{}")
    return cv_dir / f"fold{k}" / "oof" / cv_module.PREDICTIONS


def test_a_fold_being_predicted_by_its_own_job_is_waited_for_not_predicted_twice(tmp_path, monkeypatch):
    """Cluster jobs on one --out: fold 1's job is predicting fold 1 (done.json written, predictions not yet)
    when fold 0's job comes to gather it; fold 0's job waits for them instead of predicting into the same
    directory at the same time."""
    import threading

    from lightning_cv.data.folds import exclusive
    from lightning_cv.predictions.files import Predictions

    saved = _finished_fold(tmp_path, 1)
    expected = Predictions("cls", np.array(["a", "b"]), {"probs": np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)}, ["x", "y"])
    held, release = threading.Event(), threading.Event()

    def fold_1_job():
        with exclusive(tmp_path / "fold1" / cv_module.PREDICT_LOCK):
            held.set()
            release.wait(5)
            saved.parent.mkdir()
            expected.save(saved)

    def predict_again(*args, **kwargs):
        raise AssertionError("fold 1 predicted a second time, beside its own job")

    monkeypatch.setattr(cv_module, "predict_checkpoint", predict_again)
    job = threading.Thread(target=fold_1_job)
    job.start()
    held.wait(5)
    threading.Timer(0.3, release.set).start()
    got, status = cv_module._fold_outcome(Path("cfg.yaml"), [], tmp_path, 1, {0: "trained"}, "none", False, train=True)
    job.join()
    assert status == "ok (best-epoch000.ckpt)"
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.arrays["probs"], expected.arrays["probs"])


def test_a_fold_trained_here_reuses_only_predictions_made_after_its_checkpoint(tmp_path, monkeypatch):
    """The job that trained a fold predicts it, unless another job already did with its new checkpoint."""
    import os

    from lightning_cv.predictions.files import Predictions

    saved = _finished_fold(tmp_path, 0)
    saved.parent.mkdir()
    Predictions("cls", np.array(["a"]), {"probs": np.array([[0.3, 0.7]], np.float32)}, ["x", "y"]).save(saved)
    made: list[Path] = []
    monkeypatch.setattr(cv_module, "predict_checkpoint", lambda config, overrides, ckpt, out_dir, *a: made.append(out_dir))
    ckpt = tmp_path / "fold0" / "checkpoints" / "best-epoch000.ckpt"
    os.utime(saved, (ckpt.stat().st_mtime + 5,) * 2)
    cv_module._fold_outcome(Path("cfg.yaml"), [], tmp_path, 0, {0: "trained"}, "none", False, train=True)
    assert made == []
    os.utime(saved, (ckpt.stat().st_mtime - 5,) * 2)  # made by an earlier checkpoint
    cv_module._fold_outcome(Path("cfg.yaml"), [], tmp_path, 0, {0: "trained"}, "none", False, train=True)
    assert made == [tmp_path / "fold0" / "oof"]


@pytest.mark.slow
def test_fold_processes_started_together_share_one_split(data_root, tmp_path):
    """A SLURM array's jobs: `cv --fold 0` and `cv --fold 1` start at once on the same --out; folds.csv is made
    once, and a last `cv --out` (nothing left to train) gathers a complete OOF."""
    from processes import child_env

    data_dir = CLS.make_data(data_root)
    out = tmp_path / "cv"
    common = ["--config", str(ROOT / CLS.config), "--folds", "2", "--out", str(out), "--predict_test", "false",
              "--report", "false", "--data.data_dir", str(data_dir), *CLS.smoke_args, *FIT]
    env = {**child_env(), "WANDB_MODE": "disabled"}
    job = Path(__file__).with_name("fold_job.py")
    jobs = [subprocess.Popen([sys.executable, str(job), "cv", *common, "--fold", str(k)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for k in (0, 1)]
    for job in jobs:
        assert job.wait(timeout=300) == 0, job.stderr.read().decode()[-2000:]
    assert all((out / f"fold{k}" / "done.json").is_file() for k in (0, 1))
    main(["cv", *common])  # gathers: both folds finished
    results = json.loads((out / "cv_results.json").read_text())
    assert results["complete"] and [r["status"].split()[0] for r in results["per_fold"]] == ["ok", "ok"]
    with np.load(out / "oof.npz") as oof:
        assert sorted(set(oof["fold"].tolist())) == [0, 1] and not np.isnan(oof["probs"]).any()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_fold_processes_die_with_cv(tmp_path):
    """A fold process started as cv starts them is killed with cv, even by kill -9: no orphan trains on."""
    import os
    import signal
    import time

    parent = ("import subprocess, sys, time; from lightning_cv.cli.commands import cv; "
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], **cv.CHILD); "
              "print(child.pid, flush=True); time.sleep(60)")
    process = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    child = int(process.stdout.readline())
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the fold process outlived cv")
