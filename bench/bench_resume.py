"""`lightning-cv cv` killed partway through a fold and rerun with the same --out, against one uninterrupted.

Both sides are real process trees (`cv` and its fold `fit` processes) on the cls demo, 2 folds of
EPOCHS epochs. The interrupted side gets SIGKILL (its whole process group) half an epoch after fold 1
saved its first last.ckpt (the work a kill at a random moment loses, on average) and is rerun with the
same --out: fold 0 is kept (done.json), fold 1 resumes from its last.ckpt. Epoch seconds come from the
uninterrupted side: the times each fold's last.ckpt is rewritten (once per epoch), polled. A short fit
warms the caches first; then uninterrupted, interrupted, interrupted, uninterrupted (drift hits both),
each side's mean.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import common
import numpy as np
import pandas as pd
from common import Row

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(tempfile.gettempdir()) / "lightning-cv-bench" / "resume"
N_TRAIN, FOLDS, EPOCHS = 1000, 2, 2
KILLED_FOLD = 1


def _command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "lightning_cv", "cv", "--config", str(ROOT / "configs/cls.yaml"), "--folds", str(FOLDS),
            "--out", str(out), "--predict_test", "false", "--report", "false", "--data.data_dir", str(data),
            "--data.num_workers", "0", "--trainer.max_epochs", str(EPOCHS), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false"]


def _env() -> dict[str, str]:
    # Every fold process with the bench's thread count (its note: 1 thread on this loaded 2-core machine).
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(common.THREADS)}


def run_cv(data: Path, out: Path, kill: Callable[[dict[int, list[float]], float], bool] | None = None
           ) -> tuple[float, dict[int, list[float]], bool]:
    """(wall seconds, the seconds from start at which each fold's last.ckpt was written, whether `kill` fired).

    `kill(saves, now)` is asked every 50 ms; when true the cv process group gets SIGKILL.
    """
    saves: dict[int, list[float]] = {k: [] for k in range(FOLDS)}
    seen: dict[int, int] = {}
    start, wall0 = time.perf_counter(), time.time()
    with open(out.parent / f"{out.name}.log", "a") as log:
        process = subprocess.Popen(_command(data, out), env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        killed = False
        while process.poll() is None:
            for k in range(FOLDS):
                try:
                    stat = (out / f"fold{k}" / "checkpoints" / "last.ckpt").stat()
                except FileNotFoundError:
                    continue
                if seen.get(k) != stat.st_mtime_ns:
                    seen[k] = stat.st_mtime_ns
                    saves[k].append(stat.st_mtime - wall0)
            if kill is not None and kill(saves, time.perf_counter() - start):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                killed = True
                break
            time.sleep(0.05)
    if not killed and process.returncode != 0:
        raise RuntimeError(f"cv exited with {process.returncode}: see {out.parent / f'{out.name}.log'}")
    return time.perf_counter() - start, saves, killed


def _check(out: Path, folds_at_kill: str, reference: Path) -> str:
    """The resumed run is whole: every row out of fold once, folds.csv unchanged by the kill and equal to the
    uninterrupted run's, each epoch of the killed fold validated once."""
    folds_csv = (out / "folds.csv").read_text()
    problems = []
    if folds_csv != folds_at_kill:
        problems.append("folds.csv changed between the kill and the rerun")
    if folds_csv != (reference / "folds.csv").read_text():
        problems.append("folds.csv differs from the uninterrupted run's")
    rows = len(pd.read_csv(out / "folds.csv"))
    with np.load(out / "oof.npz") as oof:
        if len(oof["ids"]) != rows or np.isnan(oof["probs"]).any() or sorted(set(oof["fold"].tolist())) != list(range(FOLDS)):
            problems.append(f"oof.npz incomplete ({len(oof['ids'])} ids of {rows}, or NaN, or folds missing)")
    if not json.loads((out / "cv_results.json").read_text()).get("complete"):
        problems.append("cv_results.json not complete")
    epochs = pd.read_csv(out / f"fold{KILLED_FOLD}" / "metrics.csv").dropna(subset=["val/acc"])["epoch"].tolist()
    if epochs != list(range(EPOCHS)):
        problems.append(f"fold {KILLED_FOLD} validated epochs {epochs}, not each of 0..{EPOCHS - 1} once")
    if problems:
        raise RuntimeError("resumed cv: " + "; ".join(problems))
    return f"oof.npz {rows}/{rows} rows, folds.csv unchanged and equal, fold {KILLED_FOLD} epochs 0..{EPOCHS - 1} once"


def _warm_up(data: Path) -> None:
    """One tiny fit process: the page cache holds the images and the libraries before anything is timed."""
    subprocess.run([sys.executable, "-m", "lightning_cv", "fit", "--config", str(ROOT / "configs/cls.yaml"),
                    "--data.data_dir", str(data), "--data.num_workers", "0", "--trainer.fast_dev_run", "true",
                    "--trainer.default_root_dir", str(WORK / "warm-up")], env=_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_whole(data: Path, out: Path) -> tuple[float, list[float]]:
    """(wall seconds of an uninterrupted cv, its epochs' seconds: between two saves of one fold)."""
    shutil.rmtree(out, ignore_errors=True)
    seconds, saves, _ = run_cv(data, out)
    return seconds, [b - a for times in saves.values() for a, b in zip(times, times[1:])]


def run_killed(data: Path, out: Path, epoch: float) -> tuple[float, float, float, str]:
    """(seconds to the kill, seconds of the rerun, work lost: since the killed fold's last checkpoint, checks)."""
    shutil.rmtree(out, ignore_errors=True)

    def half_an_epoch_after_first_save(saves: dict[int, list[float]], now: float) -> bool:
        return bool(saves[KILLED_FOLD]) and now >= saves[KILLED_FOLD][0] + epoch / 2

    first, saves, killed = run_cv(data, out, half_an_epoch_after_first_save)
    if not killed:
        raise RuntimeError("the cv finished before the kill: make the epochs longer (N_TRAIN, EPOCHS)")
    folds_at_kill = (out / "folds.csv").read_text()
    second, _, _ = run_cv(data, out)
    return first, second, first - saves[KILLED_FOLD][-1], _check(out, folds_at_kill, WORK / "whole")


def run(quick: bool = False) -> list[Row]:
    from lightning_cv.data.demos import make_cls

    data = WORK / "cls"
    if not (data / "train.csv").is_file():
        make_cls(data, n_train=N_TRAIN)
    for log in WORK.glob("*.log"):
        log.unlink()
    _warm_up(data)
    wholes, epochs, killed = [], [], []
    for side in ("whole", "killed", "killed", "whole"):
        if side == "whole":
            seconds, seen = run_whole(data, WORK / "whole")
            wholes.append(seconds)
            epochs += seen
        else:
            killed.append(run_killed(data, WORK / "killed", statistics.mean(epochs)))
    whole, epoch = statistics.mean(wholes), statistics.mean(epochs)
    total = statistics.mean(first + second for first, second, _, _ in killed)
    lost = statistics.mean(k[2] for k in killed)
    extra = total - whole
    runs = (f"uninterrupted {' / '.join(f'{s:.0f}' for s in wholes)} s; killed at "
            f"{' / '.join(f'{k[0]:.0f}' for k in killed)} s + rerun {' / '.join(f'{k[1]:.0f}' for k in killed)} s")
    return [
        Row(f"`cv` killed in fold {KILLED_FOLD} and rerun ÷ uninterrupted ({FOLDS} folds × {EPOCHS} epochs, cls demo, "
            "resnet10t 48 px)", "killed + rerun", total, "uninterrupted", whole, "s", f"<={1 + epoch / whole:.2f}",
            total / whole, f"goal: at most one epoch ({epoch:.1f} s) more; {runs}, 2 each (ABBA), mean; {killed[-1][3]}"),
        Row("`cv` resume: extra time ÷ one epoch", "extra", extra, "epoch", epoch, "s", "<=1", extra / epoch,
            f"work lost since fold {KILLED_FOLD}'s last.ckpt {lost:.1f} s (killed half an epoch after it), the rest "
            f"{extra - lost:.1f} s: restarting (a new cv and fit process, the checkpoint loaded)"),
    ]


if __name__ == "__main__":
    for row in run():
        row.show()
