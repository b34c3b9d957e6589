"""`lightning-cv cv`: K-fold cross-validation, one `fit` process per fold, out-of-fold predictions.

    lightning-cv cv --config configs/cls.yaml --folds 5 [--fold k] [--tta flip] [any fit option]

The CV run directory (runs/<task>/cv-<timestamp>, or --out) holds `folds.csv`, one `fold<k>/` run per
fold (checkpoints, metrics, `oof/` and `test/` predictions of its best checkpoint), `oof.npz` + `oof.csv`
(every training row exactly once) and `cv_results.json` (score per fold, mean and std). A task that
tunes decisions on out-of-fold predictions writes them here too (multi-label: `thresholds.json`).
Everything task-specific is asked of the task (`CVTask.score`, `tune`, `oof_columns`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lightning_cv.cli.lightning_cli import option_value
from lightning_cv.data.folds import FOLD_COL, exclusive, load_or_create_folds
from lightning_cv.errors import DataError, MissingFileError, UserInputError
from lightning_cv.io.file_checks import CHECKED_FILES, CHECKED_FILES_ENV, remember_checks
from lightning_cv.io.images import atomic_path, write_csv
from lightning_cv.models.tta import TTAMode
from lightning_cv.predictions.files import PREDICTIONS, Predictions, load_predictions
from lightning_cv.predictions.stores import RowWriter, gather_rows, is_map, scratch_dir
from lightning_cv.tasks import TaskEntry, task_for
from lightning_cv.training.loggers import log_cv_summary
from lightning_cv.training.provenance import finish_provenance, write_provenance


def _data_overrides(overrides: list[str]) -> list[str]:
    """The `--data.*` options of a fit command line (as `--key=value` tokens)."""
    picked: list[str] = []
    i = 0
    while i < len(overrides):
        token = overrides[i]
        if token.startswith("--data.") or token.startswith("--data="):
            if "=" in token:
                picked.append(token)
            elif i + 1 < len(overrides):
                picked.append(f"{token}={overrides[i + 1]}")
                i += 1
        i += 1
    return picked


def load_datamodule(config: Path, overrides: list[str]) -> Any:
    """The DataModule of a fit config plus its `--data.*` overrides, without building model or trainer."""
    import yaml
    from jsonargparse import ArgumentParser

    from lightning_cv.data.base import CVDataModule

    if not config.is_file():
        raise MissingFileError(f"{config}: config not found")
    data = (yaml.safe_load(config.read_text()) or {}).get("data")
    if not data:
        raise UserInputError(f"{config}: no `data:` section")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(CVDataModule, "data", required=True)
    try:
        parsed = parser.parse_args([f"--data={json.dumps(data)}", *_data_overrides(overrides)])
    except Exception as err:  # jsonargparse reports bad keys and values as ArgumentError
        raise UserInputError(f"{config}: data options: {str(err).splitlines()[0]}") from None
    return parser.instantiate_classes(parsed).data


def best_checkpoint(run_dir: Path) -> Path | None:
    """The fold's best checkpoint (newest `best-*.ckpt`), else `last.ckpt`, else None."""
    folder = run_dir / "checkpoints"
    best = sorted(folder.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    return folder / "last.ckpt" if (folder / "last.ckpt").is_file() else None


def predict_checkpoint(config: Path | None, overrides: list[str], ckpt: Path, out_dir: Path, tta: str,
                       extra: list[str]) -> Predictions:
    """Run `predict` with a checkpoint (its writer's files, predictions.npz among them, go to out_dir) and
    return the predictions (with their targets when predicting held-out rows, --data.predict_split val).
    Without `config`, the checkpoint's recipe alone."""
    import warnings

    from lightning_cv.cli.main import build_cli

    # In-process LightningCLI calls: the parent's own command line is not the one parsed here.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    args = ["predict", *(["--config", str(config)] if config else []), *overrides, *extra, "--ckpt_path", str(ckpt),
            "--trainer.default_root_dir", str(out_dir), "--trainer.enable_progress_bar", "false"]
    if tta != "none":
        args += ["--model.tta", tta]
    build_cli(args)
    return load_predictions(out_dir / PREDICTIONS)


def _cv_dir(out: Path | None, fold: int | None, task: str) -> Path:
    """--out, else (rerunning one fold) the newest CV run of the task, else a new timestamped one."""
    if out is not None:
        return Path(out)
    if fold is not None:
        found = sorted(Path("runs", task).glob("cv-*"))
        if not found:
            raise UserInputError(f"--fold reruns a fold of an existing CV run: none in runs/{task}/; pass --out CV_DIR")
        return found[-1]
    return Path("runs", task, f"cv-{datetime.now().strftime('%Y%m%d-%H%M%S')}")


def _out_from_overrides(out: Path | None, overrides: list[str]) -> Path | None:
    """`--trainer.default_root_dir OUT` means the CV run directory (each fold gets its own inside it)."""
    for i, token in enumerate(overrides):
        name, _, value = token.partition("=")
        if name != "--trainer.default_root_dir":
            continue
        value = value or (overrides[i + 1] if i + 1 < len(overrides) else "")
        del overrides[i : i + (1 if "=" in token else 2)]
        if out is not None and Path(value) != Path(out):
            raise UserInputError(f"--trainer.default_root_dir {value} and --out {out} name two CV directories: give one")
        return Path(value)
    return out


def _fold_assignment(cv_dir: Path, datamodule: Any, folds: int, fold: int | None,
                     group_col: str | None) -> tuple[pd.DataFrame, str, str | None]:
    """(the training rows with their fold, written once to folds.csv; its key column; its label column)."""
    cv_dir.mkdir(parents=True, exist_ok=True)
    frame, key, label_col = datamodule.fold_table()
    groups = datamodule.fold_groups(frame[key])
    if groups is not None:
        if group_col is not None:
            raise UserInputError("--group_col and --data.group_pattern both name groups: give one")
        frame, group_col = frame.assign(group=groups.to_numpy()), "group"
    table = load_or_create_folds(cv_dir / "folds.csv", frame, key, folds, datamodule.seed, label_col, group_col,
                                 multilabel=datamodule.multilabel)
    if fold is not None and not 0 <= fold < folds:
        raise UserInputError(f"--fold {fold} is not one of the {folds} folds (0..{folds - 1})")
    print(f"{folds}-fold CV of {len(table)} rows -> {cv_dir} (folds in {cv_dir / 'folds.csv'})", flush=True)
    return table, key, label_col


def _check_inputs(cv_dir: Path, datamodule: Any) -> None:
    """Every training file checked once for the whole run, before any fold starts; the fold processes, the
    folds' predictions and the report reuse the checks (`file_checks`)."""
    with remember_checks(cv_dir / CHECKED_FILES):
        datamodule.labelled_rows()


def wandb_group(task: str, cv_dir: Path) -> str:
    """The W&B group of a CV run's folds and summary."""
    return os.environ.get("WANDB_RUN_GROUP", f"{task}-{cv_dir.name}")


DONE = "done.json"  # in a fold's directory once its fit process ended well
PREDICT_LOCK = "predict.lock"  # held while a fold's predictions are made or read
Reuse = Literal["any", "newer", "none"]


def _fold_command(config: Path, overrides: list[str], cv_dir: Path, k: int, restart: bool) -> list[str] | None:
    """The fit command of fold k: None when it finished earlier (kept), resumed from its last.ckpt when an
    earlier run was interrupted, else from scratch (an earlier attempt is kept beside it)."""
    fold_dir = cv_dir / f"fold{k}"
    if not restart and (fold_dir / DONE).is_file():
        print(f"fold {k}: finished earlier, kept ({fold_dir}; --restart true trains it again)", flush=True)
        return None
    last = fold_dir / "checkpoints" / "last.ckpt"
    resume = not restart and last.is_file()
    if fold_dir.exists() and not resume:
        fold_dir.rename(cv_dir / f"fold{k}-replaced-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    command = [sys.executable, "-m", "lightning_cv", "fit", "--config", str(config), *overrides,
               "--data.fold", str(k), "--data.folds_csv", str(cv_dir / "folds.csv"), "--trainer.default_root_dir",
               str(fold_dir), *(["--ckpt_path", str(last)] if resume else [])]
    print(f"fold {k}{' (resumed from its last.ckpt)' if resume else ''}: {' '.join(command[2:])}", flush=True)
    return command


def die_with_parent() -> None:
    """Run in a fold process before it starts (Linux): the kernel kills it when `cv` dies, even by kill -9,
    so no orphan trains on beside the rerun that resumes its fold."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


CHILD = {"preexec_fn": die_with_parent} if sys.platform.startswith("linux") else {}


def _fold_ended(cv_dir: Path, k: int, code: int, ran: dict[int, str]) -> None:
    if code == 0:
        with atomic_path(cv_dir / f"fold{k}" / DONE) as tmp:
            tmp.write_text(json.dumps({"fold": k, "finished": datetime.now().isoformat(timespec="seconds")}))
        ran[k] = "trained"
        return
    ran[k] = f"failed (exit {code})"
    print(f"fold {k} failed with exit status {code}; going on with the other folds", file=sys.stderr, flush=True)


def _train_folds(config: Path, overrides: list[str], cv_dir: Path, folds: list[int], task: str, restart: bool = False,
                 parallel: int = 1) -> dict[int, str]:
    """One `fit` process per fold that is not finished (memory is freed between folds, a failed fold does not
    stop the others), `parallel` at a time; returns the status of each fold that ran: trained or failed."""
    if parallel < 1:
        raise UserInputError(f"--parallel {parallel}: run at least one fold at a time")
    # The fold processes reuse the input checks `cv` did (file_checks).
    env = {**os.environ, "WANDB_RUN_GROUP": wandb_group(task, cv_dir), CHECKED_FILES_ENV: str(cv_dir / CHECKED_FILES)}
    planned = [(k, c) for k in folds if (c := _fold_command(config, overrides, cv_dir, k, restart)) is not None]
    ran: dict[int, str] = {}
    if parallel > 1:
        for k, code in _run_parallel(planned, env, parallel, cv_dir):
            _fold_ended(cv_dir, k, code, ran)
        return ran
    for k, command in planned:
        _fold_ended(cv_dir, k, subprocess.run(command, env=env, check=False, **CHILD).returncode, ran)
    return ran


def _devices(parallel: int) -> list[str | None]:
    """The GPU each of `parallel` fold slots sees (CUDA_VISIBLE_DEVICES), or None each without GPUs."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [i for i in visible.split(",") if i.strip()] if visible else [str(i) for i in range(torch.cuda.device_count())]
    return [ids[slot % len(ids)] if ids else None for slot in range(parallel)]


def _run_parallel(planned: list[tuple[int, list[str]]], env: dict[str, str], parallel: int,
                  cv_dir: Path) -> Iterator[tuple[int, int]]:
    """Fold processes `parallel` at a time, slot i on GPU i; each writes to fold<k>/fit.log. Yields (fold,
    exit status) as they end."""
    waiting, running, free = list(planned), {}, list(enumerate(_devices(parallel)))
    while waiting or running:
        while waiting and free:
            (k, command), (slot, device) = waiting.pop(0), free.pop(0)
            log = cv_dir / f"fold{k}" / "fit.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as out:
                fold_env = {**env, **({"CUDA_VISIBLE_DEVICES": device} if device is not None else {})}
                running[k] = (subprocess.Popen(command, env=fold_env, stdout=out, stderr=subprocess.STDOUT, **CHILD),
                              (slot, device))
            print(f"fold {k}: started{f' on GPU {device}' if device is not None else ''} (log: {log})", flush=True)
        time.sleep(1.0)
        for k, (process, slot) in list(running.items()):
            if process.poll() is not None:
                del running[k]
                free.append(slot)
                yield k, process.returncode


def _fold_predictions(config: Path, overrides: list[str], cv_dir: Path, k: int, tta: str, predict_test: bool,
                      reuse: Reuse) -> tuple[Predictions | None, str]:
    """A fold's out-of-fold predictions (and test predictions) with its best checkpoint: (predictions or
    None, status). `reuse` the saved ones: "any" (a fold that was not retrained), "newer" (those made
    after its best checkpoint, by another process) or "none" (predict again)."""
    fold_dir = cv_dir / f"fold{k}"
    ckpt = best_checkpoint(fold_dir)
    if ckpt is None:
        return None, "not trained"
    saved = fold_dir / "oof" / PREDICTIONS
    # One process at a time predicts a fold (cluster jobs on one --out: the fold's own job may be
    # predicting it while another job, seeing it finished, comes to gather it).
    with exclusive(fold_dir / PREDICT_LOCK):
        if saved.is_file() and (reuse == "any" or (reuse == "newer" and saved.stat().st_mtime >= ckpt.stat().st_mtime)):
            return load_predictions(saved), f"ok ({ckpt.name})"
        fold_args = ["--data.fold", str(k), "--data.folds_csv", str(cv_dir / "folds.csv")]
        oof = predict_checkpoint(config, overrides, ckpt, fold_dir / "oof", tta, [*fold_args, "--data.predict_split", "val"])
        if predict_test:
            try:
                predict_checkpoint(config, overrides, ckpt, fold_dir / "test", tta, fold_args)
            except DataError as err:
                print(f"fold {k}: no test predictions ({err})", file=sys.stderr)
    return oof, f"ok ({ckpt.name})"


def _fold_outcome(config: Path, overrides: list[str], cv_dir: Path, k: int, ran: dict[int, str], tta: str,
                  predict_test: bool, train: bool) -> tuple[Predictions | None, str]:
    """A fold's out-of-fold predictions and status: failed now; not finished (another process may be training
    it); or predicted (a fold trained now, or every fold without training), else its saved predictions."""
    if ran.get(k, "trained") != "trained":
        return None, ran[k]
    if train and k not in ran and not (cv_dir / f"fold{k}" / DONE).is_file():
        return None, "not finished"
    return _fold_predictions(config, overrides, cv_dir, k, tta, predict_test,
                             reuse="none" if not train else "newer" if k in ran else "any")


def gather_oof(ids: list[str], parts: list[Predictions], store: Path | None = None) -> tuple[Predictions, np.ndarray]:
    """Every fold's out-of-fold rows in the order of `ids` (NaN / zero rows where a fold is missing) and
    how many folds predicted each row (exactly one each, or the folds overlap). With a `store` directory,
    maps (probabilities of masks) are copied there a chunk at a time and stay on disk."""
    position = {i: r for r, i in enumerate(ids)}
    first = parts[0]
    seen = np.zeros(len(ids), dtype=np.int64)
    part, row = np.full(len(ids), -1, dtype=np.int64), np.zeros(len(ids), dtype=np.int64)
    for k, predictions in enumerate(parts):
        index = np.array([position[i] for i in predictions.ids], dtype=np.int64)
        seen[index] += 1
        part[index], row[index] = k, np.arange(len(index))
    twice = np.flatnonzero(seen > 1)
    if len(twice):
        raise DataError(f"row {ids[twice[0]]!r} was predicted by {seen[twice[0]]} folds: the folds overlap")
    writer = RowWriter(store) if store is not None else None
    columns = {name: ([p.arrays[name] for p in parts], part) for name in first.arrays}
    if first.targets is not None:
        labelled = np.array([p.targets is not None for p in parts] + [False])  # [-1]: rows of no fold
        columns["targets"] = ([p.targets if p.targets is not None else first.targets for p in parts], np.where(labelled[part], part, -1))
    arrays = {}
    for name, (values, chosen) in columns.items():
        if writer is not None and is_map(values[0]) and name != "targets":  # true masks: in memory, as the data has them
            gather_rows(values, chosen, row, writer, name)
        else:
            arrays[name] = gather_rows(values, chosen, row)
    arrays.update(writer.close() if writer is not None else {})
    targets = arrays.pop("targets", None)
    return Predictions(first.task, np.asarray(ids), arrays, first.class_names, dict(first.meta), targets), seen


def _summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for metric in sorted({m for r in rows for m in r["scores"]}):
        values = [r["scores"][metric] for r in rows if metric in r["scores"]]
        summary[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "folds": len(values)}
    return summary


def _print_table(cv_dir: Path, rows: list[dict], summary: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    metrics = sorted({k for r in rows for k in r["scores"]})
    table = Table(title=f"cross-validation -> {cv_dir}")
    for column in ("fold", "rows", *metrics, "status"):
        table.add_column(column, justify="left" if column == "status" else "right")
    for row in rows:
        table.add_row(str(row["fold"]), str(row["rows"]), *(f"{row['scores'][m]:.4f}" if m in row["scores"] else "-"
                                                             for m in metrics), row["status"])
    if summary:
        table.add_row("mean ± std", "", *(f"{summary[m]['mean']:.4f} ± {summary[m]['std']:.4f}" for m in metrics), "")
    Console().print(table)


def write_oof(cv_dir: Path, table: pd.DataFrame, key: str, label_col: str | None, oof: Predictions, seen: np.ndarray,
              entry: TaskEntry) -> None:
    """oof.npz (ids, fold, the task's arrays; NaN where a fold is missing) and a readable oof.csv (id,
    fold, label, and the task's columns for the predicted rows)."""
    replace(oof, arrays={**oof.arrays, "fold": table[FOLD_COL].to_numpy()}).save(cv_dir / "oof.npz")
    readable = pd.DataFrame({key: oof.ids, FOLD_COL: table[FOLD_COL].to_numpy()})
    if label_col:
        readable["label"] = table[label_col].to_numpy()
    done = np.flatnonzero(seen > 0)
    if len(done):
        columns = entry.module.oof_columns(oof.take(done))
        columns.index = done
        readable = readable.join(columns)
    write_csv(readable, cv_dir / "oof.csv")


def _score_oof(cv_dir: Path, table: pd.DataFrame, key: str, label_col: str | None, parts: dict[int, Predictions],
               entry: TaskEntry) -> tuple[dict[str, Any], bool]:
    """Out-of-fold predictions of every fold together: tuned decisions (the task's), oof.npz and oof.csv.
    Returns (the tuning report, whether every row has a prediction)."""
    with scratch_dir(cv_dir, "oof-rows") as store:  # this process's own: cluster jobs may gather at once
        oof, seen = gather_oof(table[key].astype(str).tolist(), list(parts.values()), store)
        done = np.flatnonzero(seen > 0)
        report: dict[str, Any] = {}
        if oof.targets is not None and len(done):
            meta, report = entry.module.tune(oof.take(done), cv_dir)
            oof = oof.with_meta(**meta)
        write_oof(cv_dir, table, key, label_col, oof, seen, entry)
    missing = int((seen == 0).sum())
    if missing:
        print(f"{missing} of {len(seen)} rows have no out-of-fold prediction (failed or untrained folds)", file=sys.stderr)
    return report, missing == 0


def _fold_scores(cv_dir: Path, k: int, predictions: Predictions | None, entry: TaskEntry) -> dict[str, float]:
    """The task's scores of a fold's out-of-fold predictions; of an earlier cv_results.json for predictions
    saved without targets; none for a fold without predictions."""
    if predictions is None:
        return {}
    if predictions.targets is not None:
        return entry.module.score(predictions)
    path = cv_dir / "cv_results.json"
    if not path.is_file():
        return {}
    for row in json.loads(path.read_text()).get("per_fold", []):
        if row.get("fold") == k:
            return dict(row.get("scores", {}))
    return {}


def _predict_folds(config: Path, overrides: list[str], cv_dir: Path, table: pd.DataFrame, folds: int, entry: TaskEntry,
                   ran: dict[int, str], tta: str, predict_test: bool, train: bool) -> tuple[list[dict], dict[int, Predictions]]:
    """Every fold's out-of-fold predictions (`_fold_outcome`) and its row of cv_results.json."""
    rows, parts = [], {}
    for k in range(folds):
        with remember_checks(cv_dir / CHECKED_FILES):
            predictions, status = _fold_outcome(config, overrides, cv_dir, k, ran, tta, predict_test, train)
        if predictions is not None:
            parts[k] = predictions
        rows.append({"fold": k, "rows": int((table[FOLD_COL] == k).sum()), "status": status,
                     "scores": _fold_scores(cv_dir, k, predictions, entry)})
    return rows, parts


def _write_results(cv_dir: Path, results: dict[str, Any], task: str, overrides: list[str]) -> None:
    """cv_results.json, the table on the console, and the summary run in the folds' W&B group."""
    with atomic_path(cv_dir / "cv_results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    finish_provenance(cv_dir)
    _print_table(cv_dir, results["per_fold"], results["summary"])
    project = option_value(overrides, "--wandb_project") or os.environ.get("WANDB_PROJECT", f"lightning-cv-{task}")
    log_cv_summary(cv_dir, project, wandb_group(task, cv_dir), results)


def cv(
    config: Path,
    folds: int = 5,
    fold: int | None = None,
    out: Path | None = None,
    tta: TTAMode = "none",
    group_col: str | None = None,
    predict_test: bool = True,
    train: bool = True,
    restart: bool = False,
    parallel: int = 1,
    report: bool = True,
    overrides: list[str] | None = None,
) -> Path:
    """K-fold cross-validation: one `fit` process per fold, then out-of-fold and test predictions.

    Each fold's best checkpoint predicts its held-out rows (out of fold) and, by default, the test images.

    Args:
        config: the fit config (e.g. configs/cls.yaml); any further fit option (--trainer.max_epochs 3,
            --model.backbone resnet34, --data.image_size 128 ...) is passed on to every fold;
            --trainer.default_root_dir is the CV run directory, as --out.
        folds: number of folds.
        fold: run only this fold (resumed or kept like any fold; --restart true retrains it) of an existing
            CV run (the newest, or --out); a SLURM array job runs one fold each.
        out: the CV run directory (default runs/<task>/cv-<timestamp>).
        tta: test-time augmentation for the out-of-fold and test predictions: none, hflip, flip, d4.
        group_col: training CSV column whose groups never span two folds (e.g. a patient id).
        predict_test: also predict the test images with every fold (for `lightning-cv ensemble`).
        train: false re-predicts every fold of an existing CV run (--out) with its best checkpoint,
            without training (e.g. with another --tta).
        restart: train every fold (or --fold) afresh; without it a rerun (--out) keeps finished folds,
            resumes an interrupted one from its last.ckpt and trains the missing ones.
        parallel: fold processes run at once, each on its own GPU (CUDA_VISIBLE_DEVICES; on a machine
            without GPUs they share the CPUs); their output goes to fold<k>/fit.log.
        report: write the run's report.html at the end (`lightning-cv report`: scores, curves, the
            task's confusions and worst images).
    """
    overrides = list(overrides or [])
    config = Path(config)
    out = _out_from_overrides(out, overrides)
    datamodule = load_datamodule(config, overrides)
    entry = task_for(datamodule)
    cv_dir = _cv_dir(out, fold, entry.name)
    table, key, label_col = _fold_assignment(cv_dir, datamodule, folds, fold, group_col)
    write_provenance(cv_dir)
    _check_inputs(cv_dir, datamodule)
    chosen = ([fold] if fold is not None else list(range(folds))) if train else []
    ran = _train_folds(config, overrides, cv_dir, chosen, entry.name, restart, parallel)
    failed = {k: status for k, status in ran.items() if status != "trained"}
    rows, parts = _predict_folds(config, overrides, cv_dir, table, folds, entry, ran, tta, predict_test, train)
    tuning, complete = _score_oof(cv_dir, table, key, label_col, parts, entry) if parts else ({}, False)
    results = {"task": entry.name, "config": str(config), "folds": folds, "tta": tta, "overrides": overrides,
               "per_fold": rows, "summary": _summary(rows), "complete": complete, **({"oof": tuning} if tuning else {})}
    _write_results(cv_dir, results, entry.name, overrides)
    if failed:
        print(f"failed folds: {sorted(failed)}; rerun one with --fold K --out {cv_dir}", file=sys.stderr)
    if report:
        _write_report(cv_dir)
    return cv_dir


def _write_report(cv_dir: Path) -> None:
    """report.html of the CV run; a report that fails says so and leaves the CV's results as they are."""
    from lightning_cv.report.page import report

    try:
        with remember_checks(cv_dir / CHECKED_FILES):
            report(cv_dir)
    except Exception as err:  # the CV itself succeeded: its files stand without the page
        print(f"no report ({type(err).__name__}: {err}); retry with `lightning-cv report {cv_dir}`", file=sys.stderr)
