"""A CSVLogger that appends to the run's metrics.csv instead of deleting it, so a resumed run keeps
the epochs logged before the interruption."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning deletes an existing metrics.csv here; keep it and continue under its header.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class RunCSVLogger(CSVLogger):
    """`metrics.csv` directly in the run directory, appended to across resumes."""

    def __init__(self, save_dir: str):
        super().__init__(save_dir=save_dir, name="", version="")

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def log_cv_summary(cv_dir: Path, project: str, group: str, results: dict[str, Any]) -> str | None:
    """A CV run's summary as a W&B run in the folds' group (offline without credentials, none when W&B is
    disabled): a table of per-fold scores, and mean / std / out-of-fold scores in its summary. Returns the
    W&B run's directory."""
    if os.environ.get("WANDB_MODE") == "disabled":
        return None
    import wandb

    metrics = sorted(results.get("summary", {}))
    rows = [[r["fold"], r["rows"], r["status"], *(r["scores"].get(m) for m in metrics)] for r in results["per_fold"]]
    run = wandb.init(project=project, group=group, job_type="cv", name=f"{group}/summary", dir=str(cv_dir),
                     config={k: results.get(k) for k in ("task", "config", "folds", "tta", "overrides")})
    try:
        run.log({"cv/folds": wandb.Table(columns=["fold", "rows", "status", *metrics], data=rows)})
        for metric, values in results.get("summary", {}).items():
            run.summary[f"cv/{metric}_mean"], run.summary[f"cv/{metric}_std"] = values["mean"], values["std"]
        for name, value in (results.get("oof") or {}).items():
            if isinstance(value, (int, float)):
                run.summary[f"oof/{name}"] = value
        return str(run.dir)
    finally:
        run.finish()
