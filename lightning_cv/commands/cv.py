"""`lightning-cv cv`: K-fold cross-validation, one `fit` process per fold, out-of-fold predictions.

    lightning-cv cv --config configs/cls.yaml --folds 5 [--fold k] [--tta flip] [any fit option]

The CV run directory (runs/<task>/cv-<timestamp>, or --out) holds `folds.csv`, one `fold<k>/` run per
fold (checkpoints, metrics, `oof/` and `test/` predictions of its best checkpoint), `oof.npz` + `oof.csv`
(every training row exactly once) and `cv_results.json` (score per fold, mean and std). Multi-label
data also gets `thresholds.json`: per-tag thresholds tuned on the out-of-fold probabilities (for
`predict --model.thresholds`), with the OOF F2 at 0.5 and at them in cv_results.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_cv.errors import DataError, MissingFileError, UserInputError
from lightning_cv.folds import FOLD_COL, load_or_create_folds
from lightning_cv.io import atomic_path, write_csv
from lightning_cv.tta import TTAMode

PREDICTIONS = "predictions.npz"
BETA = 2.0  # multi-label: thresholds are tuned for the sample-averaged F2 (Planet's metric)


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


def predict_checkpoint(config: Path, overrides: list[str], ckpt: Path, out_dir: Path, tta: str, extra: list[str]) -> dict:
    """Run `predict` with a checkpoint (its writer's files go to out_dir) and save the raw
    predictions (ids, probabilities, original sizes) as out_dir/predictions.npz; returns them."""
    import warnings

    from lightning_cv.cli import build_cli

    # In-process LightningCLI calls: the parent's own command line is not the one parsed here.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    args = ["predict", "--config", str(config), *overrides, *extra, "--ckpt_path", str(ckpt),
            "--trainer.default_root_dir", str(out_dir), "--trainer.enable_progress_bar", "false"]
    if tta != "none":
        args += ["--model.tta", tta]
    cli = build_cli(args)
    batches = cli.trainer.predict_loop.predictions  # what trainer.predict returned
    result: dict[str, Any] = {"ids": np.array([i for b in batches for i in b["id"]], dtype=str)}
    for key in ("probs", "size", "box", "orig_size"):
        if key in batches[0]:
            parts = [b[key].cpu() for b in batches]
            result[key] = np.concatenate([(t.float() if t.is_floating_point() else t).numpy() for t in parts])
    result["class_names"] = np.array(cli.model.class_names, dtype=str)
    result["task"] = np.array(cli.datamodule.task_name)
    with atomic_path(out_dir / PREDICTIONS) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **result)
    if cli.datamodule.predict_split == "val":
        result["targets"] = _targets(cli.datamodule.datasets["predict"])
    return result


def _targets(dataset: Any) -> np.ndarray | None:
    """The labels (class indices) or masks of a labelled dataset, in its order."""
    if getattr(dataset, "targets", None) is not None:
        return np.asarray(dataset.targets)
    if getattr(dataset, "masks", None) is not None:
        masks = []
        for i in range(len(dataset)):
            sample = dataset[i]
            h, w = (int(v) for v in sample["valid"])
            masks.append(sample["target"][:h, :w].numpy())
        return np.stack(masks)
    return None


def fold_scores(task: str, probs: np.ndarray, targets: np.ndarray | None) -> dict[str, float]:
    """The task's validation metrics on one fold's out-of-fold predictions."""
    if targets is None:
        return {}
    if task == "seg":
        pred = probs[:, 0] > 0.5 if probs.shape[1] == 1 else probs.argmax(axis=1)
        truth = targets.astype(np.int64)
        fg_pred, fg_true = pred > 0, truth > 0
        inter = np.logical_and(fg_pred, pred == truth).sum()
        total = fg_pred.sum() + fg_true.sum()
        union = total - inter
        return {"dice": float(2 * inter / total) if total else 1.0, "iou": float(inter / union) if union else 1.0}
    if probs.ndim == 2 and targets.ndim == 2:  # multi-label: 0/1 tag matrix
        from lightning_cv.thresholds import fbeta_samples, tune_thresholds

        exact = ((probs > 0.5) == (targets > 0)).all(axis=1).mean()
        # f2_tuned: thresholds tuned on these same rows (optimistic; the checkpoint's own are tuned likewise).
        return {"f2": fbeta_samples(probs, targets, 0.5, BETA), "acc": float(exact),
                "f2_tuned": fbeta_samples(probs, targets, tune_thresholds(probs, targets, BETA), BETA)}
    if probs.ndim == 2:
        from sklearn.metrics import accuracy_score, f1_score

        pred = probs.argmax(axis=1)
        return {"acc": float(accuracy_score(targets, pred)),
                "f1": float(f1_score(targets, pred, average="macro", labels=np.arange(probs.shape[1]), zero_division=0))}
    return {}


def _latest_cv_dir(task: str) -> Path:
    found = sorted(Path("runs", task).glob("cv-*"))
    if not found:
        raise UserInputError(f"--fold reruns a fold of an existing CV run: none in runs/{task}/; pass --out CV_DIR")
    return found[-1]


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


def cv(
    config: Path,
    folds: int = 5,
    fold: int | None = None,
    out: Path | None = None,
    tta: TTAMode = "none",
    group_col: str | None = None,
    predict_test: bool = True,
    train: bool = True,
    overrides: list[str] | None = None,
) -> Path:
    """K-fold cross-validation: one `fit` process per fold, then out-of-fold and test predictions.

    Each fold's best checkpoint predicts its held-out rows (out-of-fold predictions) and, by default,
    the test images.

    Args:
        config: the fit config (e.g. configs/cls.yaml); any further fit option (--trainer.max_epochs 3,
            --model.backbone resnet34, --data.image_size 128 ...) is passed on to every fold.
        folds: number of folds.
        fold: (re)run only this fold of an existing CV run (the newest, or --out).
        out: the CV run directory (default runs/<task>/cv-<timestamp>).
        tta: test-time augmentation for the out-of-fold and test predictions: none, hflip, flip, d4.
        group_col: training CSV column whose groups never span two folds (e.g. a patient id).
        predict_test: also predict the test images with every fold (for `lightning-cv ensemble`).
        train: false re-predicts every fold of an existing CV run (--out) with its best checkpoint,
            without training (e.g. with another --tta).
    """
    overrides = list(overrides or [])
    config = Path(config)
    datamodule = load_datamodule(config, overrides)
    task = datamodule.task_name
    if out is not None:
        cv_dir = Path(out)
    elif fold is not None:
        cv_dir = _latest_cv_dir(task)
    else:
        cv_dir = Path("runs", task, f"cv-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    cv_dir.mkdir(parents=True, exist_ok=True)
    frame, key, label_col = datamodule.fold_table()
    folds_csv = cv_dir / "folds.csv"
    multilabel = bool(getattr(datamodule, "multilabel", False))
    table = load_or_create_folds(folds_csv, frame, key, folds, datamodule.seed, label_col, group_col, multilabel=multilabel)
    if fold is not None and not 0 <= fold < folds:
        raise UserInputError(f"--fold {fold} is not one of the {folds} folds (0..{folds - 1})")
    print(f"{folds}-fold CV of {len(table)} rows -> {cv_dir} (folds in {folds_csv})", flush=True)

    env = {**os.environ, "WANDB_RUN_GROUP": os.environ.get("WANDB_RUN_GROUP", f"{task}-{cv_dir.name}")}
    retrained: set[int] = set()
    status: dict[int, str] = {}
    for k in ([fold] if fold is not None else range(folds)) if train else []:
        fold_dir = cv_dir / f"fold{k}"
        if fold_dir.exists():  # a rerun starts afresh; the previous run is kept beside it
            fold_dir.rename(cv_dir / f"fold{k}-replaced-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
        command = [sys.executable, "-m", "lightning_cv", "fit", "--config", str(config), *overrides,
                   "--data.fold", str(k), "--data.folds_csv", str(folds_csv), "--trainer.default_root_dir", str(fold_dir)]
        print(f"fold {k}: {' '.join(command[2:])}", flush=True)
        code = subprocess.run(command, env=env, check=False).returncode
        retrained.add(k)
        if code != 0:
            status[k] = f"failed (exit {code})"
            print(f"fold {k} failed with exit status {code}; going on with the other folds", file=sys.stderr, flush=True)

    # Out-of-fold (and test) predictions with each fold's best checkpoint.
    n = len(table)
    ids = table[key].astype(str).tolist()
    position = {i: r for r, i in enumerate(ids)}
    oof: np.ndarray | None = None
    seen = np.zeros(n, dtype=np.int64)
    rows: list[dict] = []
    class_names: list[str] = []
    for k in range(folds):
        fold_dir = cv_dir / f"fold{k}"
        fold_rows = int((table[FOLD_COL] == k).sum())
        ckpt = best_checkpoint(fold_dir)
        if k in status or ckpt is None:
            rows.append({"fold": k, "rows": fold_rows, "scores": {}, "status": status.get(k, "not trained")})
            continue
        fold_args = ["--data.fold", str(k), "--data.folds_csv", str(folds_csv)]
        cached = fold_dir / "oof" / PREDICTIONS
        if train and k not in retrained and cached.is_file():
            with np.load(cached) as saved:
                pred = {name: saved[name] for name in saved.files}
            pred["targets"] = None
        else:
            pred = predict_checkpoint(config, overrides, ckpt, fold_dir / "oof", tta, [*fold_args, "--data.predict_split", "val"])
            if predict_test:
                try:
                    predict_checkpoint(config, overrides, ckpt, fold_dir / "test", tta, fold_args)
                except DataError as err:
                    print(f"fold {k}: no test predictions ({err})", file=sys.stderr)
        class_names = pred["class_names"].tolist()
        if "probs" not in pred:
            rows.append({"fold": k, "rows": fold_rows, "scores": {}, "status": f"ok ({ckpt.name})"})
            continue
        probs = pred["probs"]
        if oof is None:
            oof = np.full((n, *probs.shape[1:]), np.nan, dtype=np.float32)
        index = np.array([position[i] for i in pred["ids"]])
        oof[index] = probs
        seen[index] += 1
        scores = fold_scores(task, probs, pred.get("targets"))
        if not scores:
            scores = _saved_scores(cv_dir, k)
        rows.append({"fold": k, "rows": fold_rows, "scores": scores, "status": f"ok ({ckpt.name})"})

    twice = np.flatnonzero(seen > 1)
    if len(twice):
        raise DataError(f"row {ids[twice[0]]!r} was predicted by {seen[twice[0]]} folds: the folds overlap")
    summary: dict[str, dict[str, float]] = {}
    metrics = sorted({m for r in rows for m in r["scores"]})
    for metric in metrics:
        values = [r["scores"][metric] for r in rows if metric in r["scores"]]
        summary[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "folds": len(values)}
    thresholds, oof_scores = None, {}
    if oof is not None and multilabel and label_col:
        thresholds, oof_scores = _tune_oof_thresholds(cv_dir, table[label_col].tolist(), oof, seen, class_names)
    if oof is not None:
        _write_oof(cv_dir, table, key, label_col, oof, seen, class_names, task, thresholds)
    results = {"task": task, "config": str(config), "folds": folds, "tta": tta, "overrides": overrides,
               "per_fold": rows, "summary": summary, "complete": bool(seen.all()) if oof is not None else False,
               **({"oof": oof_scores} if oof_scores else {})}
    with atomic_path(cv_dir / "cv_results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    _print_table(cv_dir, rows, summary)
    if oof_scores:
        print(f"out-of-fold F2 of {oof_scores['rows']} rows: {oof_scores['f2']:.4f} at 0.5, {oof_scores['f2_tuned']:.4f} with "
              f"per-tag thresholds -> {oof_scores['thresholds']} (use: predict --model.thresholds {oof_scores['thresholds']})")
    missing = int((seen == 0).sum())
    if missing:
        print(f"{missing} of {n} rows have no out-of-fold prediction (failed or untrained folds)", file=sys.stderr)
    if status:
        print(f"failed folds: {sorted(status)}; rerun one with --fold K --out {cv_dir}", file=sys.stderr)
    return cv_dir


def _saved_scores(cv_dir: Path, k: int) -> dict[str, float]:
    """Scores of a fold from an earlier cv_results.json (for folds not re-predicted)."""
    path = cv_dir / "cv_results.json"
    if not path.is_file():
        return {}
    for row in json.loads(path.read_text()).get("per_fold", []):
        if row.get("fold") == k:
            return dict(row.get("scores", {}))
    return {}


def _tune_oof_thresholds(cv_dir: Path, labels: list[str], oof: np.ndarray, seen: np.ndarray,
                         class_names: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-tag thresholds tuned on the out-of-fold probabilities of every predicted row, saved as
    cv_dir/thresholds.json; returns them and the OOF F2 at 0.5 and at them."""
    from lightning_cv.data.multilabel import encode_tags
    from lightning_cv.thresholds import fbeta_samples, save_thresholds, tune_thresholds

    done = seen > 0
    probs = oof[done]
    targets = encode_tags([label for label, ok in zip(labels, done) if ok], class_names, cv_dir / "folds.csv")
    thresholds = tune_thresholds(probs, targets, BETA)
    tuned = fbeta_samples(probs, targets, thresholds, BETA)
    path = cv_dir / "thresholds.json"
    save_thresholds(path, class_names, thresholds, BETA, tuned)
    return thresholds, {"rows": int(done.sum()), "f2": fbeta_samples(probs, targets, 0.5, BETA), "f2_tuned": tuned,
                        "thresholds": str(path)}


def _write_oof(cv_dir: Path, table: pd.DataFrame, key: str, label_col: str | None, oof: np.ndarray, seen: np.ndarray,
               class_names: list[str], task: str, thresholds: np.ndarray | None = None) -> None:
    """oof.npz (ids, fold, probabilities; NaN where a fold is missing) and a readable oof.csv."""
    ids = table[key].astype(str).to_numpy()
    with atomic_path(cv_dir / "oof.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, ids=ids, fold=table[FOLD_COL].to_numpy(), probs=oof,
                                class_names=np.array(class_names, dtype=str), task=np.array(task))
    readable = pd.DataFrame({key: ids, FOLD_COL: table[FOLD_COL].to_numpy()})
    if label_col:
        readable["label"] = table[label_col].to_numpy()
    done = seen > 0
    if oof.ndim == 2:
        if thresholds is not None:  # multi-label: tags above the tuned thresholds
            from lightning_cv.thresholds import tags

            predicted = tags(np.nan_to_num(oof), class_names, thresholds)
        else:
            predicted = [class_names[i] for i in np.nan_to_num(oof).argmax(axis=1)]
        readable["pred"] = [p if ok else "" for p, ok in zip(predicted, done)]
        for j, name in enumerate(class_names):
            readable[f"prob_{name}"] = np.round(oof[:, j], 6)
    else:
        readable["foreground_share"] = np.round(np.nanmean((oof[:, 0] > 0.5 if oof.shape[1] == 1 else oof.argmax(axis=1) > 0)
                                                           .reshape(len(oof), -1), axis=1), 4)
        readable.loc[~done, "foreground_share"] = np.nan
    write_csv(readable, cv_dir / "oof.csv")
