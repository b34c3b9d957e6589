"""`lightning-cv init`: small replicas of the competition layouts (each in the competition's own shape) and
the demos; init picks the task and options, asks where two readings fit, names malformed files, never writes
into the data; the written config trains and predicts a submission in the sample's shape."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from layouts import make_carvana, make_tgs

from lightning_cv.cli import main
from lightning_cv.io.masks import rle_encode

RNG = np.random.default_rng(0)


def _image(path: Path, size=(32, 48), grey=False, blob=None) -> np.ndarray:
    """A noise image with a bright rectangle (its mask returned)."""
    h, w = size
    mask = np.zeros((h, w), np.uint8)
    y, x = blob or (int(RNG.integers(0, h // 2)), int(RNG.integers(0, w // 2)))
    mask[y : y + h // 3, x : x + w // 4] = 1
    image = (RNG.integers(0, 90, (h, w) if grey else (h, w, 3)) + (mask * 150 if grey else mask[..., None] * 150)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return mask


def _csv(path: Path, frame: pd.DataFrame | dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(frame).to_csv(path, index=False)


def severstal(root: Path, first_variant: bool = False) -> Path:
    rows, test = [], []
    for i in range(12):
        mask = _image(root / "train_images" / f"{i:04x}a.jpg", (32, 96))
        for c in (1, 3):
            rle = rle_encode(mask, "F") if (i + c) % 2 else ""
            rows.append({"ImageId_ClassId": f"{i:04x}a.jpg_{c}", "EncodedPixels": rle} if first_variant
                        else {"ImageId": f"{i:04x}a.jpg", "ClassId": c, "EncodedPixels": rle})
    for i in range(3):
        _image(root / "test_images" / f"{i:04x}t.jpg", (32, 96))
        test += [{"ImageId_ClassId": f"{i:04x}t.jpg_{c}", "EncodedPixels": ""} for c in (1, 3)]
    frame = pd.DataFrame(rows)
    _csv(root / "train.csv", frame if first_variant else frame[frame["EncodedPixels"] != ""])
    _csv(root / "sample_submission.csv", test)
    return root


def clouds(root: Path) -> Path:
    rows = []
    for i in range(10):
        mask = _image(root / "train_images" / f"{i:07d}.jpg", (48, 72))
        rows += [{"Image_Label": f"{i:07d}.jpg_{label}", "EncodedPixels": rle_encode(mask, "F") if j == i % 2 else ""}
                 for j, label in enumerate(("Fish", "Sugar"))]
    _image(root / "test_images" / "9999999.jpg", (48, 72))
    _csv(root / "train.csv", rows)
    _csv(root / "sample_submission.csv", {"Image_Label": ["9999999.jpg_Fish", "9999999.jpg_Sugar"], "EncodedPixels": ["1 1"] * 2})
    return root


def airbus(root: Path) -> Path:
    rows = []
    for i in range(10):
        mask = _image(root / "train_v2" / f"{i:05x}.jpg", (48, 48))
        second = np.zeros_like(mask)
        second[40:46, 40:46] = 1
        rows += [{"ImageId": f"{i:05x}.jpg", "EncodedPixels": rle_encode(mask, "F")}]
        rows += [{"ImageId": f"{i:05x}.jpg", "EncodedPixels": rle_encode(second, "F")}] if i % 2 else []
    for i in range(3):
        _image(root / "test_v2" / f"t{i:04x}.jpg", (48, 48))
    _csv(root / "train_ship_segmentations_v2.csv", rows)
    _csv(root / "sample_submission_v2.csv", {"ImageId": [f"t{i:04x}.jpg" for i in range(3)], "EncodedPixels": ["1 2"] * 3})
    return root


def isic(root: Path) -> Path:
    names = [f"ISIC_{i:07d}" for i in range(16)]
    for n in names:
        _image(root / "train" / f"{n}.jpg")
    for i in range(3):
        _image(root / "test" / f"ISIC_9{i:06d}.jpg")
    _csv(root / "train.csv", {"image_name": names, "patient_id": [f"IP_{i // 2}" for i in range(16)],
                              "sex": ["male", "female"] * 8, "target": [i % 2 for i in range(16)]})
    _csv(root / "sample_submission.csv", {"image_name": [f"ISIC_9{i:06d}" for i in range(3)], "target": [0] * 3})
    return root


def plant(root: Path) -> Path:
    classes = ["healthy", "multiple_diseases", "rust", "scab"]
    for i in range(16):
        _image(root / "images" / f"Train_{i}.jpg")
    for i in range(3):
        _image(root / "images" / f"Test_{i}.jpg")
    _csv(root / "train.csv", {"image_id": [f"Train_{i}" for i in range(16)],
                              **{c: [int(i % 4 == k) for i in range(16)] for k, c in enumerate(classes)}})
    _csv(root / "sample_submission.csv", {"image_id": [f"Test_{i}" for i in range(3)], **{c: [0.25] * 3 for c in classes}})
    return root


def aptos(root: Path) -> Path:
    for i in range(20):
        _image(root / "train_images" / f"{i:012x}.png")
    for i in range(3):
        _image(root / "test_images" / f"f{i:011x}.png")
    _csv(root / "train.csv", {"id_code": [f"{i:012x}" for i in range(20)], "diagnosis": [i % 5 for i in range(20)]})
    _csv(root / "sample_submission.csv", {"id_code": [f"f{i:011x}" for i in range(3)], "diagnosis": [0] * 3})
    return root


def petfinder(root: Path) -> Path:
    ids = [f"{i:032x}" for i in range(16)]
    for n in ids:
        _image(root / "train" / f"{n}.jpg")
    _image(root / "test" / f"{'f' * 32}.jpg")
    flags = {flag: [i % 2 for i in range(16)] for flag in ("Eyes", "Face", "Near", "Blur")}
    _csv(root / "train.csv", {"Id": ids, **flags, "Pawpularity": [int(v) for v in RNG.integers(1, 100, 16)]})
    _csv(root / "sample_submission.csv", {"Id": ["f" * 32], "Pawpularity": [50.0]})
    return root


def planet(root: Path) -> Path:
    tags = ["clear primary", "haze primary water", "clear", "cloudy"]
    for i in range(16):
        _image(root / "train-jpg" / f"train_{i}.jpg")
    _image(root / "test-jpg" / "test_0.jpg")
    _csv(root / "train_v2.csv", {"image_name": [f"train_{i}" for i in range(16)], "tags": [tags[i % 4] for i in range(16)]})
    _csv(root / "sample_submission_v2.csv", {"image_name": ["test_0"], "tags": ["clear primary"]})
    return root


def hpa(root: Path) -> Path:
    ids = [f"{i:08x}-hpa" for i in range(12)]
    for split, names in (("train", ids), ("test", ["ffffffff-hpa"])):
        for n in names:
            for colour in ("red", "green", "blue", "yellow"):
                _image(root / split / f"{n}_{colour}.png", grey=True)
    _csv(root / "train.csv", {"Id": ids, "Target": ["0 2", "16", "2 7 16", "0"] * 3})
    _csv(root / "sample_submission.csv", {"Id": ["ffffffff-hpa"], "Predicted": ["0"]})
    return root


def dogs_cats(root: Path) -> Path:
    for i in range(8):
        _image(root / "train" / f"{('cat', 'dog')[i % 2]}.{i}.jpg")
    for i in range(1, 4):
        _image(root / "test" / f"{i}.jpg")
    _csv(root / "sample_submission.csv", {"id": [1, 2, 3], "label": [0.5] * 3})
    return root


def panda(root: Path) -> Path:
    ids = [f"{i:032x}" for i in range(15)]
    for n in ids:
        _image(root / "train_images" / f"{n}.tiff", (64, 64))
    _image(root / "test_images" / f"{'e' * 32}.tiff", (64, 64))
    _csv(root / "train.csv", {"image_id": ids, "data_provider": ["karolinska", "radboud"] * 7 + ["radboud"],
                              "isup_grade": [i % 6 for i in range(15)], "gleason_score": ["3+3"] * 15})
    _csv(root / "sample_submission.csv", {"image_id": ["e" * 32], "isup_grade": [0]})
    return root


def ubc_ocean(root: Path) -> Path:
    subtypes = ["HGSC", "EC", "CC", "LGSC", "MC"]
    for i in range(15):
        _image(root / "train_images" / f"{1000 + i}.png", (48, 64))
    _image(root / "test_images" / "41.png", (48, 64))
    _csv(root / "train.csv", {"image_id": [1000 + i for i in range(15)], "label": [subtypes[i % 5] for i in range(15)],
                              "image_width": [64 + i * 997 for i in range(15)], "image_height": [48 + i * 531 for i in range(15)],
                              "is_tma": ["False", "True", "False"] * 5})
    _csv(root / "sample_submission.csv", {"image_id": [41], "label": ["HGSC"]})
    return root


def hubmap(root: Path) -> Path:
    rows = []
    for i in range(6):
        mask = _image(root / "train" / f"{i:08x}.tiff", (96, 128))
        rows.append({"id": f"{i:08x}", "encoding": rle_encode(mask, "F")})
    _image(root / "test" / "ffffffff.tiff", (96, 128))
    _csv(root / "train.csv", rows)
    _csv(root / "sample_submission.csv", {"id": ["ffffffff"], "predicted": [""]})
    return root


# (maker, expected task, options the config must hold, model options)
LAYOUTS = {
    "tgs": (make_tgs, "seg", {"image_dir": "train/images", "mask_dir": "train/masks", "mask_suffix": "", "rle_order": "F",
                              "channels": 1, "sample_submission": "sample_submission.csv"}, {}),
    "carvana": (make_carvana, "seg", {"rle_order": "C", "group_pattern": "^([^_]+)_"}, {}),
    "severstal": (severstal, "seg-multilabel", {"rle_order": "F"}, {}),
    "severstal-v1": (lambda r: severstal(r, True), "seg-multilabel", {"class_col": None, "id_col": "ImageId_ClassId"}, {}),
    "clouds": (clouds, "seg-multilabel", {"class_col": None, "id_col": "Image_Label", "rle_order": "F"}, {}),
    "airbus": (airbus, "seg", {"rle_csv": "train_ship_segmentations_v2.csv", "id_col": "ImageId", "rle_col": "EncodedPixels",
                               "image_dir": "train_v2", "rle_order": "F"}, {"monitor": "val/f2_instances"}),
    "isic": (isic, "cls", {"image_col": "image_name", "label_col": "target", "image_suffix": ".jpg"}, {"monitor": "val/auc"}),
    "plant": (plant, "cls", {"image_dir": "images", "label_cols": ["healthy", "multiple_diseases", "rust", "scab"],
                             "image_col": "image_id", "image_suffix": ".jpg"}, {"monitor": "val/logloss"}),
    "aptos": (aptos, "regression", {"image_dir": "train_images", "label_col": "diagnosis", "image_col": "id_code"},
              {"grades": True, "monitor": "val/qwk"}),
    "petfinder": (petfinder, "regression", {"label_col": "Pawpularity", "image_col": "Id", "image_suffix": ".jpg"}, {}),
    "planet": (planet, "multilabel", {"csv": "train_v2.csv", "image_dir": "train-jpg", "image_col": "image_name"}, {}),
    "hpa": (hpa, "multilabel", {"label_col": "Target", "image_col": "Id",
                                "channel_suffixes": ["_red.png", "_green.png", "_blue.png", "_yellow.png"]}, {}),
    "dogs-vs-cats": (dogs_cats, "cls", {"label_pattern": r"^([A-Za-z]+)[._-]\d+"}, {}),
    "panda": (panda, "regression", {"image_dir": "train_images", "image_col": "image_id", "image_suffix": ".tiff",
                                    "label_col": "isup_grade"}, {"grades": True, "monitor": "val/qwk"}),
    "ubc-ocean": (ubc_ocean, "cls", {"image_dir": "train_images", "image_col": "image_id", "image_suffix": ".png",
                                     "label_col": None}, {}),  # `label`: the DataModule's default
    "hubmap": (hubmap, "seg", {"rle_csv": "train.csv", "rle_col": "encoding", "rle_order": "F"}, {}),
}


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _init(data: Path, out: Path, *extra: str) -> dict:
    main(["init", str(data), "--out", str(out), *extra])
    return yaml.safe_load(out.read_text())


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_init_reads_each_competition_layout(name, tmp_path, capsys):
    make, task, options, model = LAYOUTS[name]
    data = make(tmp_path / name)
    before = snapshot(data)
    config = _init(data, tmp_path / "configs" / f"{name}.yaml")
    from lightning_cv.tasks import get_task

    assert config["data"]["class_path"].rsplit(".", 1)[-1] == get_task(task).datamodule.__name__
    assert {k: config["data"]["init_args"].get(k) for k in options} == options
    assert {k: config["model"]["init_args"].get(k) for k in model} == model
    assert config["data"]["init_args"]["data_dir"] == data.as_posix()
    assert "evidence" in capsys.readouterr().out  # the table of decisions
    assert snapshot(data) == before  # nothing written into the competition's files


def test_ambiguous_readings_are_questions(tmp_path, capsys):
    """The shapes demo holds labels, boxes and masks: init asks for the task; given, it writes the config."""
    main(["demo", "--task", "cls", "--out", str(tmp_path / "shapes")])
    with pytest.raises(SystemExit) as info:
        main(["init", str(tmp_path / "shapes"), "--out", str(tmp_path / "c.yaml")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "pass --task" in err and "seg" in err and "cls" in err and not (tmp_path / "c.yaml").exists()
    config = _init(tmp_path / "shapes", tmp_path / "c.yaml", "--task", "bbox")
    assert config["data"]["class_path"].endswith("BBoxCropDataModule")


def test_an_rle_order_that_cannot_be_told_is_a_question_settled_by_its_flag(tmp_path, capsys):
    """Square symmetric blobs decode as compactly both ways: init names --data.rle_order and exits 2."""
    root = tmp_path / "square"
    rows = []
    for i in range(6):
        mask = np.zeros((32, 32), np.uint8)
        mask[8:24, 8:24] = 1
        cv2.imwrite(str((root / "train").mkdir(parents=True, exist_ok=True) or root / "train" / f"{i}.png"), mask * 200)
        rows.append({"id": str(i), "rle_mask": rle_encode(mask)})
    _csv(root / "train.csv", rows)
    with pytest.raises(SystemExit):
        main(["init", str(root), "--out", str(tmp_path / "c.yaml")])
    assert "--data.rle_order" in capsys.readouterr().err
    assert _init(root, tmp_path / "c.yaml", "--data.rle_order", "F")["data"]["init_args"]["rle_order"] == "F"


def test_a_sample_submission_of_other_images_is_one_line_naming_it(tmp_path, capsys):
    data = isic(tmp_path / "isic")
    _csv(data / "sample_submission.csv", {"image_name": ["nothing_1", "nothing_2"], "target": [0, 0]})
    with pytest.raises(SystemExit):
        main(["init", str(data), "--out", str(tmp_path / "c.yaml")])
    assert "sample_submission.csv: its ids match no test image" in capsys.readouterr().err


def test_init_refuses_to_write_into_the_data(tmp_path, capsys):
    data = aptos(tmp_path / "aptos")
    with pytest.raises(SystemExit):
        main(["init", str(data), "--out", str(data / "config.yaml")])
    assert "never writes into" in capsys.readouterr().err and not (data / "config.yaml").exists()


@pytest.mark.parametrize("task", ["multilabel", "regression", "seg-multilabel", "mnist"])
def test_init_reads_the_demos(task, tmp_path):
    main(["demo", "--task", task, "--out", str(tmp_path / task)])
    config = _init(tmp_path / task, tmp_path / f"{task}.yaml")
    from lightning_cv.tasks import get_task

    assert config["data"]["class_path"].rsplit(".", 1)[-1] == get_task(task).datamodule.__name__


QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--trainer.logger", "false"]
TINY = {"seg": ["--model.encoder", "tu-test_resnet"], "seg-multilabel": ["--model.encoder", "tu-test_resnet"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tgs", "severstal", "clouds", "airbus", "isic", "plant", "aptos", "petfinder", "planet", "hpa",
                                  "dogs-vs-cats"])
def test_the_written_config_trains_and_predicts_the_samples_shape(name, tmp_path, monkeypatch):
    make, task, _, _ = LAYOUTS[name]
    data = make(tmp_path / name)
    config = tmp_path / "configs" / f"{name}.yaml"
    main(["init", str(data), "--out", str(config)])
    small = [*TINY.get(task, ["--model.backbone", "resnet10t"]), "--data.image_size", "32", "--data.batch_size", "4"]
    run = tmp_path / "run"
    main(["fit", "--config", str(config), *small, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
          "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(run), *QUIET])
    recipe = yaml.safe_load(config.read_text())["data"]["init_args"]
    sample = data / recipe["sample_submission"]
    main(["predict", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--data.sample_submission", str(sample),
          "--trainer.default_root_dir", str(tmp_path / "p"), *QUIET])  # the test folder: the checkpoint's recipe
    written = pd.read_csv(tmp_path / "p" / "submission.csv", dtype=str, keep_default_na=False)
    expected = pd.read_csv(sample, dtype=str, keep_default_na=False)
    assert list(written.columns) == list(expected.columns)
    id_col = expected.columns[0]
    if task == "seg" and name == "airbus":  # a row per predicted instance: every image, in the sample's order
        assert list(dict.fromkeys(written[id_col])) == list(expected[id_col])
    else:
        assert written[id_col].tolist() == expected[id_col].tolist()


def test_new_from_a_competition_folder_fills_the_projects_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))  # cookiecutter's replay file
    data = make_tgs(tmp_path / "tgs")
    main(["new", "TGS Salt", "--from", str(data), "--out", str(tmp_path / "projects")])
    config = yaml.safe_load((tmp_path / "projects" / "tgs-salt" / "configs" / "seg.yaml").read_text())
    args = config["data"]["init_args"]
    assert config["data"]["class_path"].endswith("SegmentationDataModule") and args["data_dir"] == "data"
    assert (args["rle_order"], args["image_dir"], args["predict_dir"]) == ("F", "train/images", "data/test/images")
    assert config["wandb_project"] == "tgs-salt" and "evidence" in capsys.readouterr().out
