"""`lightning-cv report` on CV and fit runs built from tiny generated data (no training): every task's page
has its sections and only embedded, decodable images; headless Chromium renders each page without a
missing image or a console error."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from browser import find_or_install_chromium, render_check
from specs import ROOT, SPECS

from lightning_cv.cli import main
from lightning_cv.predictions.files import Predictions
from lightning_cv.predictions.postprocess import THRESHOLDS
from lightning_cv.tasks import (
    BBoxCropTask,
    ClassificationTask,
    MultiLabelTask,
    SegmentationTask,
    get_task,
    task_names,
)
from lightning_cv.tasks.detection import DetectionTask
from lightning_cv.tasks.regression import RegressionTask
from lightning_cv.tasks.seg_multilabel import MultiLabelSegmentationTask
from lightning_cv.tasks.slides import SlideSegmentationTask
from lightning_cv.training.provenance import finish_provenance, write_provenance

TASKS = [s for s in SPECS if s.name != "mnist"]  # mnist is the classification task on other data
SECTIONS = {"cls": ["Classes", "Most confidently wrong", "confusion matrix", "reliability"],
            "multilabel": ["Tags", "Worst tag sets", "TTA and tuned decisions", "f2_tuned"],
            "seg": ["Masks", "Worst masks", "empty predicted as mask (FP)"],
            "seg-multilabel": ["Masks", "Worst masks", "TTA and tuned decisions", "dice_pairs_tuned"],
            "bbox": ["Boxes", "Worst boxes", "IoU of the predicted square"],
            "regression": ["Values", "Worst images", "residuals"], "slides": ["Images", "predicted pixels"],
            "detection": ["Boxes", "Worst images", "precision", "recall"]}


def _noisy(rng: np.random.Generator, truth: np.ndarray, scale: float = 0.35) -> np.ndarray:
    return np.clip(truth * 0.7 + 0.15 + rng.normal(0, scale, truth.shape), 0, 1).astype(np.float32)


def fake_arrays(task: type, targets: np.ndarray, sizes: np.ndarray, classes: int, rng: np.random.Generator) -> dict:
    """Outputs a half-trained model might give, derived from the targets (some right, some confidently wrong)."""
    if issubclass(task, SlideSegmentationTask):  # pixel counts at each threshold, as the stitching counts them
        truth = targets[:, :1, None].astype(np.float64)
        recall = (1.1 - np.asarray(THRESHOLDS)).clip(0, 1) * rng.uniform(0.5, 1.0, (len(truth), 1, 1))
        inter = np.floor(truth * recall).astype(np.int64)
        return {"map": np.array([f"map{i}.npy" for i in range(len(truth))]), "size": sizes, "inter": inter,
                "above": inter + rng.integers(0, 200, inter.shape)}
    if issubclass(task, MultiLabelSegmentationTask):
        return {"probs": _noisy(rng, targets.astype(np.float32)).astype(np.float16), "size": sizes}
    if issubclass(task, SegmentationTask):
        return {"probs": _noisy(rng, (targets > 0).astype(np.float32)[:, None]).astype(np.float16), "size": sizes}
    if issubclass(task, MultiLabelTask):
        return {"probs": _noisy(rng, targets.astype(np.float32))}
    if issubclass(task, ClassificationTask):
        logits = 2 * np.eye(classes)[targets] + rng.normal(0, 1.2, (len(targets), classes))
        return {"probs": (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)}
    if issubclass(task, BBoxCropTask):
        return {"box": np.clip(targets + rng.normal(0, 0.08, targets.shape), 0.02, 0.98).astype(np.float32),
                "orig_size": sizes}
    if issubclass(task, DetectionTask):  # the true boxes moved a little, some missed, scored at random
        labels = np.where(rng.random(targets.shape[:2]) < 0.8, targets[..., 4], -1).astype(np.int64)
        boxes = (targets[..., :4] + rng.normal(0, 1.5, targets[..., :4].shape)).astype(np.float32)
        return {"boxes": boxes, "scores": np.where(labels >= 0, rng.uniform(0.2, 1, labels.shape), 0).astype(np.float32),
                "labels": labels, "size": sizes}
    if issubclass(task, RegressionTask):
        return {"values": (targets + rng.normal(0, targets.std(0) + 1e-3, targets.shape)).astype(np.float32)}
    raise AssertionError(f"{task.__name__}: add its fake outputs here")


def test_every_task_has_fake_outputs():
    rng = np.random.default_rng(0)
    for name in task_names():
        module = get_task(name).module
        assert any(issubclass(module, t) for t in (SegmentationTask, MultiLabelTask, ClassificationTask, BBoxCropTask,
                                                   RegressionTask, DetectionTask)), f"{name}: add its fake outputs to fake_arrays"
    assert fake_arrays(RegressionTask, np.ones((2, 1)), np.ones((2, 2)), 1, rng)["values"].shape == (2, 1)


def _data_config(spec, data_dir: Path) -> dict:
    """The task's config with the tiny data and the smoke test's sizes (as a fold's resolved config.yaml)."""
    config = yaml.safe_load((ROOT / spec.config).read_text())
    args = config["data"]["init_args"]
    args["data_dir"] = str(data_dir)
    smoke = dict(zip(spec.smoke_args[::2], spec.smoke_args[1::2]))
    if "--data.image_size" in smoke:
        args["image_size"] = yaml.safe_load(smoke["--data.image_size"])
    return {"model": config["model"], "data": config["data"]}


def _labelled(config: dict) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(ids, targets as the model sees them, original sizes, class names) through the task's DataModule."""
    from lightning_cv.report.page import _datamodule

    datamodule = _datamodule(config)
    rows = datamodule.labelled_rows()
    datamodule.datasets["val"] = datamodule.build_dataset(rows, None)
    targets = datamodule.targets("val")
    sizes = np.asarray(rows.extra.get("size", [(0, 0)] * len(rows)), np.int64)
    return list(rows.ids), targets, sizes, list(datamodule.class_names)


def _metrics_csv(path: Path, monitor: str, fold: int) -> None:
    epochs = np.arange(3)
    frame = pd.DataFrame({"epoch": epochs, "step": epochs * 5 + 4, "train/loss_epoch": 1.0 / (epochs + 1 + fold),
                          "val/loss": 1.1 / (epochs + 1), monitor: 0.5 + 0.1 * epochs + 0.02 * fold})
    frame.to_csv(path, index=False)


def make_cv_run(spec, data_root: Path, out: Path, tta: str = "none") -> Path:
    """A CV run directory as `lightning-cv cv` leaves it, with generated predictions instead of trained ones."""
    entry = get_task(spec.name)
    config = _data_config(spec, spec.make_data(data_root))
    ids, targets, sizes, names = _labelled(config)
    rng = np.random.default_rng(0)
    folds = np.arange(len(ids)) % 2
    oof = Predictions(spec.name, np.asarray(ids), fake_arrays(entry.module, targets, sizes, len(names), rng), names,
                      {"threshold": 0.5} if issubclass(entry.module, SegmentationTask) else {}, targets)
    write_provenance(out, ["cv", "--config", spec.config, "--folds", "2"])
    pd.DataFrame({"id": ids, "fold": folds}).to_csv(out / "folds.csv", index=False)
    rows = []
    for k in range(2):
        (out / f"fold{k}").mkdir()
        (out / f"fold{k}" / "config.yaml").write_text("# lightning.pytorch==2.6.6\n" + yaml.safe_dump(config))
        _metrics_csv(out / f"fold{k}" / "metrics.csv", entry.module.monitor, k)
        scores = entry.module.score(oof.take(np.flatnonzero(folds == k)))
        rows.append({"fold": k, "rows": int((folds == k).sum()), "status": "ok (best-epoch002.ckpt)", "scores": scores})
    meta, tuning = entry.module.tune(oof, out)
    Predictions(**{**oof.__dict__, "arrays": {**oof.arrays, "fold": folds}}).with_meta(**meta).save(out / "oof.npz")
    results = {"task": spec.name, "config": spec.config, "folds": 2, "tta": tta, "overrides": [], "per_fold": rows,
               "summary": {}, "complete": True, **({"oof": tuning} if tuning else {})}
    (out / "cv_results.json").write_text(json.dumps(results))
    finish_provenance(out)
    return out


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's headless Chromium, installed with apt-get when missing and possible; else the test is skipped."""
    path, why = find_or_install_chromium()
    if path is None:
        pytest.skip(f"no headless Chromium: {why}")
    return path


def images_of(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html)


@pytest.fixture(scope="module")
def reports(data_root, tmp_path_factory) -> dict[str, Path]:
    """Every task's report page of a generated CV run (one of them with TTA)."""
    pages = {}
    for spec in TASKS:
        run = make_cv_run(spec, data_root, tmp_path_factory.mktemp(f"cv-{spec.name}"), tta="flip" if spec.name == "cls" else "none")
        main(["report", str(run)])
        pages[spec.name] = run / "report.html"
    return pages


@pytest.mark.parametrize("name", [s.name for s in TASKS])
def test_cv_report_has_the_task_sections_and_embedded_images(reports, name):
    html = reports[name].read_text()
    for title in ["Scores", "Learning curves", "mean ± std", "out of fold, pooled", "lightning-cv cv --config",
                  "wall time", *SECTIONS[name]]:
        assert title in html, f"{name}: {title!r} missing"
    assert "could not be read" not in html and "Not in this run" not in html
    sources = images_of(html)
    assert len(sources) >= 4
    for source in sources:
        assert source.startswith("data:image/png;base64,"), source[:60]
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    gallery = html.split('class="gallery"', 1)
    assert len(gallery) == 2 and len(images_of(gallery[1])) >= 3, f"{name}: no worst images shown"


def test_cls_report_compares_tta_with_plain_validation(reports):
    html = reports["cls"].read_text()
    assert "TTA and tuned decisions" in html and "out of fold (flip)" in html and "best epoch (no TTA)" in html


def test_fit_run_without_predictions_says_what_is_missing(data_root, tmp_path):
    spec = next(s for s in TASKS if s.name == "cls")
    config = _data_config(spec, spec.make_data(data_root))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    _metrics_csv(tmp_path / "metrics.csv", "val/acc", 0)
    out = tmp_path / "page.html"
    main(["report", str(tmp_path), "--out", str(out)])
    html = out.read_text()
    assert "Learning curves" in html and "validation at the best epoch (2, by val/acc)" in html
    assert "Not in this run" in html and "--data.predict_split val" in html and "environment.json: not found" in html
    assert "Most confidently wrong" not in html


def test_not_a_run_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path)])
    assert exit_info.value.code == 2 and "not a run directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def rendered(reports, chromium, tmp_path_factory) -> dict[str, dict]:
    """Every report loaded in headless Chromium (one browser start for all of them)."""
    return render_check(chromium, reports, tmp_path_factory.mktemp("chromium"))


@pytest.mark.parametrize("name", [s.name for s in TASKS])
def test_chromium_renders_every_report(rendered, name):
    result = rendered[name]
    assert result is not None, f"{name}: the page's probe did not run"
    assert result["images"] >= 4
    assert result["broken"] == [] and result["errors"] == [], result


def test_chromium_probe_sees_a_missing_image(chromium, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head></head><body><img src="gone.png" alt="gone"></body></html>')
    result = render_check(chromium, {"broken": page}, tmp_path)["broken"]
    assert result["images"] == 1 and len(result["broken"]) == 1 and result["errors"], result


def test_moved_data_leaves_the_galleries_out_with_a_note(data_root, tmp_path):
    spec = next(s for s in TASKS if s.name == "bbox")
    run = make_cv_run(spec, data_root, tmp_path / "cv")
    for k in range(2):  # the run copied to another machine: its data folder is not there
        config = yaml.safe_load((run / f"fold{k}" / "config.yaml").read_text())
        config["data"]["init_args"]["data_dir"] = str(tmp_path / "gone")
        (run / f"fold{k}" / "config.yaml").write_text(yaml.safe_dump(config))
    main(["report", str(run)])
    html = (run / "report.html").read_text()
    assert "Boxes" in html and "IoU of the predicted square" in html and 'class="gallery"' not in html
    assert "images not shown" in html and "Not in this run" in html and "could not be read" in html
