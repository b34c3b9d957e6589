"""`lightning-cv report RUN_DIR [--out report.html]`: one static HTML page of a fit or a CV run.

It reads what runs already write: the resolved `config.yaml`, `environment.json` (command line, versions,
hardware, wall time), each fold's `metrics.csv` (learning curves), `cv_results.json` (scores per fold,
decisions tuned out of fold) and the labelled out-of-fold predictions (`oof.npz` of a CV run; a fit run's
`oof/` or `predict-*/` predictions made with `--data.predict_split val`). Every task adds its own sections
(`CVTask.report_sections`: confusions, masks, boxes, worst images ...); what a run lacks is said, not faked.
The page embeds its images (PNG data URIs): it opens from disk, without a server or the network.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from lightning_cv.errors import MissingFileError, UserInputError
from lightning_cv.io.images import atomic_path
from lightning_cv.pictures.plots import COLORS, ImageSource, Section, Table, line_plot
from lightning_cv.predictions.files import PREDICTIONS, Predictions, load_predictions
from lightning_cv.predictions.stores import array_chunks, is_map
from lightning_cv.tasks import TaskEntry, get_task, task_names
from lightning_cv.training.provenance import read_provenance

REPORT = "report.html"
TEMPLATE = "report.html.j2"


@dataclass
class Run:
    """What a run directory holds, found once: a CV run (folds.csv) or a fit run (config.yaml)."""

    path: Path
    is_cv: bool
    folds: dict[str, Path]
    config: dict[str, Any]
    results: dict[str, Any] | None
    provenance: dict[str, Any] | None
    entry: TaskEntry | None = None
    predictions: Predictions | None = None
    source: str = ""  # where the labelled predictions came from, relative to the run
    missing: list[str] = field(default_factory=list)


# -- finding a run's files -------------------------------------------------------------------------------
def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def fold_dirs(run_dir: Path) -> dict[str, Path]:
    """A CV run's fold runs by name (fold0, fold1 ...; replaced ones left out)."""
    found = [p for p in run_dir.glob("fold[0-9]*") if p.is_dir() and "-replaced-" not in p.name]
    return {p.name: p for p in sorted(found, key=lambda p: int("".join(c for c in p.name[4:] if c.isdigit()) or 0))}


def find_run(run_dir: Path) -> Run:
    """A CV run (with folds.csv) or a fit run (with config.yaml or metrics.csv); anything else is an error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingFileError(f"{run_dir}: no such run directory")
    if (run_dir / "folds.csv").is_file():
        folds = fold_dirs(run_dir)
        results_path = run_dir / "cv_results.json"
        results = json.loads(results_path.read_text()) if results_path.is_file() else None
        config = next((_read_yaml(p / "config.yaml") for p in folds.values() if (p / "config.yaml").is_file()), {})
        return Run(run_dir, True, folds, config, results, read_provenance(run_dir))
    if (run_dir / "config.yaml").is_file() or (run_dir / "metrics.csv").is_file():
        return Run(run_dir, False, {"run": run_dir}, _read_yaml(run_dir / "config.yaml"), None, read_provenance(run_dir))
    raise UserInputError(f"{run_dir}: not a run directory (no folds.csv of a CV run, no config.yaml or metrics.csv of a "
                         "fit run)")


def task_entry(run: Run) -> TaskEntry | None:
    """The run's task: named by cv_results.json or the predictions, else found by its DataModule class."""
    name = (run.results or {}).get("task") or (run.predictions.task if run.predictions is not None else None)
    if name in task_names():
        return get_task(name)
    data_class = str((run.config.get("data") or {}).get("class_path", "")).rsplit(".", 1)[-1]
    return next((get_task(n) for n in task_names() if get_task(n).datamodule.__name__ == data_class), None)


def labelled_predictions(run: Run) -> tuple[Predictions | None, str]:
    """The run's labelled out-of-fold predictions, only the rows that were predicted, and where they came
    from; (None, why) without them."""
    if run.is_cv:
        candidates = [run.path / "oof.npz"]
    else:
        predicts = sorted(run.path.glob("predict-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        candidates = [run.path / "oof" / PREDICTIONS, *(p / PREDICTIONS for p in predicts)]
    for path in candidates:
        if path.is_file():
            predictions = load_predictions(path)
            if predictions.targets is not None:
                return _predicted_rows(predictions), str(path.relative_to(run.path))
    hint = ("oof.npz (the CV did not finish a fold?)" if run.is_cv else
            "out-of-fold predictions: add them with `lightning-cv predict --config <run>/config.yaml --ckpt_path "
            "<run>/checkpoints/<best>.ckpt --data.predict_split val`")
    return None, f"no labelled {hint}; the task's sections (confusions, worst images ...) need them"


def _predicted_rows(predictions: Predictions) -> Predictions:
    """The rows with a prediction (a CV's oof.npz holds NaN for the rows of failed folds)."""
    floats = [a for k, a in predictions.arrays.items() if a.dtype.kind == "f" and k != "fold"]
    if not floats:
        return predictions
    floats.sort(key=is_map)  # a small array answers as well as the maps, which are read a chunk at a time
    done = np.concatenate([np.isfinite(c.reshape(len(c), -1)).all(axis=1) for c in array_chunks(floats[0])])
    return predictions if done.all() else predictions.take(np.flatnonzero(done))


# -- header ---------------------------------------------------------------------------------------------
def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _model_line(config: dict[str, Any], entry: TaskEntry | None) -> str:
    model = config.get("model") or {}
    args = model.get("init_args") or {}
    parts = [str(model.get("class_path", entry.module.__name__ if entry else "?")).rsplit(".", 1)[-1]]
    parts += [f"{k} {args[k]}" for k in ("arch", "encoder", "backbone", "head", "loss") if args.get(k)]
    return ", ".join(parts) + f"; monitor {monitored(run_config=config, entry=entry)}"


def _data_line(config: dict[str, Any], predictions: Predictions | None) -> str:
    args = (config.get("data") or {}).get("init_args") or {}
    parts = [str(args.get("data_dir", "?"))]
    if args.get("image_size") is not None:
        parts.append(f"image_size {args['image_size']}")
    if predictions is not None:
        parts.append(f"{len(predictions)} labelled rows predicted, classes {', '.join(predictions.class_names[:12])}")
    return "; ".join(parts)


def _split_line(run: Run) -> str:
    """The rows of a fit's split.csv by split (a CV run's splits are its folds.csv)."""
    if run.is_cv:
        return f"{len(run.folds)} folds ({run.path / 'folds.csv'})"
    path = run.path / "split.csv"
    if not path.is_file():
        return "not recorded (no split.csv)"
    counts = pd.read_csv(path, dtype=str, keep_default_na=False)["split"].value_counts()
    return ", ".join(f"{n} {name}" for name, n in counts.items()) + f" ({path})"


def _command(run: Run) -> str:
    if run.provenance and run.provenance.get("command"):
        return str(run.provenance["command"])
    if run.results:
        tta = "" if run.results.get("tta", "none") == "none" else f" --tta {run.results['tta']}"
        return (f"lightning-cv cv --config {run.results.get('config')} --folds {run.results.get('folds')}{tta} "
                + " ".join(run.results.get("overrides", []))).strip() + "   (rebuilt from cv_results.json)"
    return "not recorded (no environment.json)"


def _wall_time(run: Run) -> str:
    folds = [(name, read_provenance(path)) for name, path in run.folds.items() if run.is_cv]
    per_fold = ", ".join(f"{n} {_duration(p['wall_s'])}" for n, p in folds if p and "wall_s" in p)
    total = (run.provenance or {}).get("wall_s")
    text = _duration(total) if total is not None else "not recorded"
    return f"{text} (folds: {per_fold})" if per_fold else text


def header(run: Run) -> list[tuple[str, str]]:
    """The page's first lines: what ran, on what, with what, how long."""
    entry, prov = run.entry, run.provenance or {}
    versions = prov.get("versions") or {}
    config = next((p / "config.yaml" for p in run.folds.values() if (p / "config.yaml").is_file()), None)
    if not versions and config is not None:  # the resolved config's first line names Lightning's version
        versions = {"config": config.read_text().splitlines()[0].lstrip("# ")}
    hardware = prov.get("hardware") or {}
    kind = f"cross-validation, {len(run.folds)} folds" if run.is_cv else "fit"
    return [
        ("task", f"{entry.name}: {entry.summary}" if entry else "unknown"),
        ("run", f"{run.path} ({kind})"),
        ("data", _data_line(run.config, run.predictions)),
        ("split", _split_line(run)),
        ("model", _model_line(run.config, entry)),
        ("command", _command(run)),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "not recorded"),
        ("wall time", _wall_time(run)),
        ("hardware", ", ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in hardware.items())
         or "not recorded"),
        ("started", str(prov.get("started", "not recorded"))),
    ]


# -- scores and curves ------------------------------------------------------------------------------------
def monitored(run_config: dict[str, Any], entry: TaskEntry | None) -> str:
    """The metric that picked the best checkpoint: the config's --model.monitor, else the task's."""
    args = (run_config.get("model") or {}).get("init_args") or {}
    return str(args.get("monitor") or (entry.module.monitor if entry else "val/loss"))


def epochs(path: Path) -> pd.DataFrame | None:
    """A run's metrics.csv, one row per epoch (each column's last logged value of the epoch)."""
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    return frame.groupby("epoch").last() if "epoch" in frame.columns and len(frame) else None


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if values else "–"


def scores_section(run: Run) -> Section | None:
    """CV: each fold's out-of-fold scores, their mean ± std, and the pooled out-of-fold score; fit: the
    best epoch's validation metrics and the scores of its labelled predictions."""
    pooled = run.entry.module.score(run.predictions) if run.entry and run.predictions is not None else {}
    if run.is_cv and run.results:
        rows = run.results.get("per_fold", [])
        metrics = sorted({m for r in rows for m in r.get("scores", {})} | set(pooled))
        table = [[f"fold {r['fold']}", r.get("rows", ""), *(r.get("scores", {}).get(m, "–") for m in metrics), r.get("status", "")]
                 for r in rows]
        table.append(["mean ± std", "", *(_mean_std([r["scores"][m] for r in rows if m in r.get("scores", {})])
                                         for m in metrics), ""])
        if pooled:
            table.append(["out of fold, pooled", len(run.predictions), *(pooled.get(m, "–") for m in metrics), ""])
        return Section("Scores", ["each fold's best checkpoint on its held-out rows; the pooled line scores every "
                                  "out-of-fold row at once"], [Table(["fold", "rows", *metrics, "status"], table)])
    return _fit_scores(run, pooled)


def _fit_scores(run: Run, pooled: dict[str, float]) -> Section | None:
    frame, monitor = epochs(run.path / "metrics.csv"), monitored(run.config, run.entry)
    tables = []
    if frame is not None and monitor in frame.columns and frame[monitor].notna().any():
        best = frame[monitor].idxmin() if run.entry and run.entry.module.monitor_mode == "min" else frame[monitor].idxmax()
        values = frame.loc[best, [c for c in frame.columns if c.startswith("val/")]].dropna()
        tables.append(Table(["metric", "value"], [[k, float(v)] for k, v in values.items()],
                            f"validation at the best epoch ({best}, by {monitor})"))
    if pooled:
        tables.append(Table(["metric", "value"], [[k, v] for k, v in pooled.items()], f"labelled predictions ({run.source})"))
    return Section("Scores", tables=tables) if tables else None


def decisions_section(run: Run) -> Section | None:
    """What TTA and decisions tuned out of fold (thresholds, post-processing, cut points) bought, when the
    run has them."""
    if not run.results:
        return None
    tables, notes = [], []
    tuned = {k: v for k, v in (run.results.get("oof") or {}).items() if isinstance(v, (int, float)) and k != "rows"}
    if tuned:
        tables.append(Table(["out of fold", "value"], [[k, v] for k, v in tuned.items()],
                            "before and after the decisions tuned on the out-of-fold predictions"))
        notes.append("tuned and scored on the same rows: optimistic; saved files: " + ", ".join(
            str(v) for v in (run.results.get("oof") or {}).values() if isinstance(v, str)))
    tta = run.results.get("tta", "none")
    if tta != "none":
        tables.append(_tta_table(run, tta))
        notes.append(f"validation during fit ran without TTA (unless the config sets model.tta); the out-of-fold "
                     f"predictions with --tta {tta}")
    return Section("TTA and tuned decisions", notes, tables) if tables else None


def _tta_table(run: Run, tta: str) -> Table:
    monitor = monitored(run.config, run.entry)
    name = monitor.split("/", 1)[-1]
    rows = []
    for r in (run.results or {}).get("per_fold", []):
        frame = epochs(run.folds.get(f"fold{r['fold']}", run.path) / "metrics.csv")
        column = frame[monitor].dropna() if frame is not None and monitor in frame.columns else pd.Series(dtype=float)
        best = (column.min() if run.entry and run.entry.module.monitor_mode == "min" else column.max()) if len(column) else "–"
        rows.append([f"fold {r['fold']}", best, r.get("scores", {}).get(name, "–")])
    return Table(["fold", f"{monitor} best epoch (no TTA)", f"{name} out of fold ({tta})"], rows)


def curves_section(run: Run) -> Section | None:
    """Train / val loss and the monitored metric per epoch, one line per fold."""
    monitor = monitored(run.config, run.entry)
    losses: dict[str, tuple[Any, Any]] = {}
    metric: dict[str, tuple[Any, Any]] = {}
    styles: dict[str, str] = {}
    colors: dict[str, str] = {}
    for k, (name, path) in enumerate(run.folds.items()):
        frame = epochs(path / "metrics.csv")
        if frame is None:
            run.missing.append(f"{path / 'metrics.csv'}: not found (no learning curve for {name})")
            continue
        for column, label in (("train/loss_epoch", f"{name} train"), ("val/loss", f"{name} val")):
            if column in frame.columns and frame[column].notna().any():
                values = frame[column].dropna()
                losses[label] = (values.index.to_numpy(), values.to_numpy())
                styles[label], colors[label] = "--" if "train" in label else "-", COLORS[k % len(COLORS)]
        if monitor in frame.columns and frame[monitor].notna().any():
            values = frame[monitor].dropna()
            metric[name] = (values.index.to_numpy(), values.to_numpy())
    plots = [line_plot(losses, "loss per epoch (train dashed)", "epoch", "loss", styles=styles, colors=colors)] if losses else []
    plots += [line_plot(metric, f"{monitor} per epoch", "epoch", monitor)] if metric else []
    return Section("Learning curves", plots=plots) if plots else None


# -- images -----------------------------------------------------------------------------------------------
def _datamodule(config: dict[str, Any]) -> Any:
    from jsonargparse import ArgumentParser

    from lightning_cv.data.base import CVDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(CVDataModule, "data", required=True)
    return parser.instantiate_classes(parser.parse_args([f"--data={json.dumps(config['data'])}"])).data


def image_source(run: Run) -> ImageSource:
    """The rows' images as the model saw them (resized or letterboxed, not augmented), read through the run's
    DataModule on first use; none (and a note) when the data cannot be read."""
    state: dict[str, Any] = {}

    def read(ids: list[str]) -> list[np.ndarray]:
        if "rows" not in state:
            state["datamodule"] = _datamodule(run.config)
            rows = state["datamodule"].labelled_rows()
            state["rows"], state["position"] = rows, {str(i): r for r, i in enumerate(rows.ids)}
        unknown = [i for i in ids if str(i) not in state["position"]]
        if unknown:
            raise KeyError(f"{unknown[0]!r} is not a training row of the data now")
        return state["datamodule"].report_images(state["rows"].take([state["position"][str(i)] for i in ids]))

    def images(ids: list[str]) -> list[np.ndarray]:
        if state.get("failed"):
            return []
        try:
            return read(ids)
        except Exception as err:  # a moved run, a deleted or changed data folder: the rest of the page stands
            state["failed"] = True
            data_dir = ((run.config.get("data") or {}).get("init_args") or {}).get("data_dir")
            reason = str(err).splitlines()[0] if str(err) else ""
            run.missing.append(f"images: the training data ({data_dir}) could not be read ({type(err).__name__}: {reason})")
            return []

    return images


# -- the page -----------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return "–" if not math.isfinite(value) else f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def render(title: str, header_lines: list[tuple[str, str]], sections: list[Section]) -> str:
    """The page from the package's jinja2 template (autoescaped; images as data URIs)."""
    from importlib import resources

    import jinja2

    from lightning_cv import __version__

    source = resources.files("lightning_cv.report").joinpath(TEMPLATE).read_text(encoding="utf-8")
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    environment.filters["cell"] = _cell
    environment.filters["data_uri"] = lambda png: "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return environment.from_string(source).render(title=title, header=header_lines, sections=sections, version=__version__)


def build_sections(run: Run) -> list[Section]:
    """Scores, decisions, curves, the task's own sections, and what the run lacks."""
    sections = [s for s in (scores_section(run), decisions_section(run), curves_section(run)) if s is not None]
    if run.entry is not None and run.predictions is not None:
        sections += run.entry.module.report_sections(run.predictions, image_source(run))
    if run.provenance is None:
        run.missing.append("environment.json: not found (runs made before it record no command line, versions, hardware "
                           "or wall time)")
    if run.missing:
        sections.append(Section("Not in this run", list(dict.fromkeys(run.missing))))
    return sections


def report(run_dir: Path, out: Path | None = None) -> Path:
    """Write one static HTML page of a fit or a CV run: scores, learning curves and the task's sections.

    Args:
        run_dir: a CV run (runs/<task>/cv-<time>, with folds.csv) or a fit run (with config.yaml and metrics.csv).
        out: the page to write (default: RUN_DIR/report.html); its images are embedded.
    """
    run = find_run(Path(run_dir))
    run.predictions, run.source = labelled_predictions(run)
    run.entry = task_entry(run)
    if run.predictions is None:
        run.missing.append(run.source)
    sections = build_sections(run)
    title = f"{run.entry.name if run.entry else 'run'} {'CV' if run.is_cv else 'fit'} report: {run.path.name}"
    page = render(title, header(run), sections)
    out = Path(out) if out is not None else run.path / REPORT
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
        tmp.chmod(0o644)  # a page to share (temporary files are private)
    print(f"wrote the report of {run.path} to {out}")
    return out
