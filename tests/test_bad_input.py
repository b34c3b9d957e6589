"""Bad input for every task: a one-line DataError naming the file or row, raised in `setup` (before the
first epoch); grayscale, RGBA and 16-bit images are converted, not errors. Tiny generated data."""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from lightning_cv.cli import main
from lightning_cv.data import (
    BBoxCropDataModule,
    ClassificationDataModule,
    MNISTDataModule,
    SegmentationDataModule,
)
from lightning_cv.data.folds import assign_folds
from lightning_cv.data.mnist import write_idx
from lightning_cv.errors import DataError

N = 8  # images per generated set
IMAGE_TASKS = ["cls", "seg", "bbox"]


# -- tiny data ----------------------------------------------------------------------------------------
def _write_images(folder: Path, ext: str, height: int = 24, width: int = 32) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(N):
        cv2.imwrite(str(folder / f"{i}{ext}"), rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def make_data(task: str, root: Path, ext: str = ".png") -> Path:
    """cls: train.csv (image, label a/b); seg: train/ + train_masks/<i>_mask.png (0/255); bbox: train.csv
    (image, x, y, size) of 24x32 images; mnist: the four IDX files (40 train, 10 test digits)."""
    if task == "mnist":
        rng = np.random.default_rng(0)
        for kind, n in (("train", 40), ("t10k", 10)):
            write_idx(root / f"{kind}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28), dtype=np.uint8))
            write_idx(root / f"{kind}-labels-idx1-ubyte", np.arange(n) % 10)
        return root
    _write_images(root / "train", ext)
    names = [f"{i}{ext}" for i in range(N)]
    if task == "cls":
        pd.DataFrame({"image": names, "label": ["a", "b"] * (N // 2)}).to_csv(root / "train.csv", index=False)
    elif task == "seg":
        (root / "train_masks").mkdir()
        for i in range(N):
            mask = np.zeros((24, 32), np.uint8)
            mask[4 : 12 + i, 6:20] = 255
            cv2.imwrite(str(root / "train_masks" / f"{i}_mask.png"), mask)
    else:
        pd.DataFrame({"image": names, "x": 4, "y": 3, "size": 12}).to_csv(root / "train.csv", index=False)
    (root / "test").mkdir()
    return root


def datamodule(task: str, root: Path, **kwargs):
    common = {"data_dir": str(root), "batch_size": 4, "num_workers": 0}
    if task == "cls":
        return ClassificationDataModule(image_size=16, val_fraction=0.25, **common, **kwargs)
    if task == "seg":
        return SegmentationDataModule(image_size=16, val_fraction=0.25, **common, **kwargs)
    if task == "bbox":
        return BBoxCropDataModule(image_size=16, val_fraction=0.25, cache="none", **common, **kwargs)
    return MNISTDataModule(download=False, val_fraction=0.25, **common, **kwargs)


def fails(task: str, root: Path, match: str, stage: str = "fit", **kwargs) -> str:
    """setup(stage) raises a one-line DataError matching `match`; returns the message."""
    with pytest.raises(DataError, match=match) as info:
        datamodule(task, root, **kwargs).setup(stage)
    message = str(info.value)
    assert "\n" not in message
    return message


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_csv(path: Path, edit) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(frame).to_csv(path, index=False)


# -- files ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["cls", "seg", "bbox", "mnist"])
def test_missing_file(tmp_path, task):
    root = make_data(task, tmp_path)
    if task == "mnist":
        (root / "train-labels-idx1-ubyte").unlink()
        fails(task, root, "missing MNIST file.*train-labels-idx1-ubyte")
    elif task == "seg":  # images are listed from the folder: what goes missing is an image's mask
        (root / "train_masks" / "3_mask.png").unlink()
        fails(task, root, r"3\.png: no mask .*3_mask")
    else:
        (root / "train" / "3.png").unlink()
        fails(task, root, r"train/3\.png: file not found")


@pytest.mark.parametrize("ext", [".png", ".jpg"])
@pytest.mark.parametrize("task", IMAGE_TASKS)
def test_truncated_image_is_caught_in_setup(tmp_path, task, ext):
    """A file cut in half keeps a valid header (its size reads fine): its end marker is checked."""
    root = make_data(task, tmp_path, ext)
    _truncate(root / "train" / f"5{ext}")
    kind = "PNG" if ext == ".png" else "JPEG"
    fails(task, root, rf"train/5\{ext}: truncated {kind}")


def test_truncated_mask(tmp_path):
    root = make_data("seg", tmp_path)
    _truncate(root / "train_masks" / "2_mask.png")
    fails("seg", root, r"2_mask\.png: (truncated PNG|cannot decode)")


@pytest.mark.parametrize("task, part", [("cls", "image"), ("seg", "image"), ("seg", "mask"), ("bbox", "image")])
def test_zero_byte_file(tmp_path, task, part):
    root = make_data(task, tmp_path)
    path = root / "train_masks" / "1_mask.png" if part == "mask" else root / "train" / "1.png"
    path.write_bytes(b"")
    fails(task, root, rf"{path.name}: file is empty \(0 bytes\)")


@pytest.mark.parametrize("damage", ["zero-byte", "truncated-gz", "garbage-gz"])
def test_bad_mnist_files(tmp_path, damage):
    root = make_data("mnist", tmp_path)
    name = "train-images-idx3-ubyte"
    if damage == "zero-byte":
        (root / name).write_bytes(b"")
        fails("mnist", root, f"{name}: not an IDX file")
        return
    data = gzip.compress((root / name).read_bytes())
    (root / name).unlink()
    (root / f"{name}.gz").write_bytes(data[: len(data) // 2] if damage == "truncated-gz" else b"not gzip at all")
    fails("mnist", root, rf"{name}\.gz: cannot read")


def test_mnist_label_outside_the_classes(tmp_path):
    root = make_data("mnist", tmp_path)
    write_idx(root / "train-labels-idx1-ubyte", np.r_[np.arange(39) % 10, 12])
    fails("mnist", root, "train labels outside 0-9")


# -- masks ---------------------------------------------------------------------------------------------
def test_mask_of_another_size(tmp_path):
    root = make_data("seg", tmp_path)
    cv2.imwrite(str(root / "train_masks" / "4_mask.png"), np.zeros((20, 32), np.uint8))
    fails("seg", root, r"4_mask\.png: mask is 20x32 but its image 4\.png is 24x32")


def test_mask_values_outside_the_classes(tmp_path):
    root = make_data("seg", tmp_path)
    for i in range(N):  # class-index masks: 0 background, 1 cat
        path = root / "train_masks" / f"{i}_mask.png"
        cv2.imwrite(str(path), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) // 255)
    mask = np.zeros((24, 32), np.uint8)
    mask[2:6, 2:6] = 7
    cv2.imwrite(str(root / "train_masks" / "6_mask.png"), mask)
    fails("seg", root, r"6_mask\.png: mask value 7 is not a class index below 3", classes=["background", "cat", "dog"])


def test_antialiased_binary_mask_is_not_256_classes(tmp_path):
    root = make_data("seg", tmp_path)
    mask = cv2.imread(str(root / "train_masks" / "6_mask.png"), cv2.IMREAD_GRAYSCALE)
    mask[0, :4] = 128
    cv2.imwrite(str(root / "train_masks" / "6_mask.png"), mask)
    fails("seg", root, r"6_mask\.png: mask values \[0, 128, 255\] mix 255 with other values")


# -- tables --------------------------------------------------------------------------------------------
def test_unknown_label_at_test_names_the_row(tmp_path):
    root = make_data("cls", tmp_path)
    _write_images(root / "holdout", ".png")
    pd.DataFrame({"image": ["0.png", "1.png", "2.png"], "label": ["a", "b", "zebra"]}).to_csv(root / "test.csv", index=False)
    fails("cls", root, r"test\.csv: row 4: unknown label 'zebra'; known classes are \['a', 'b'\]", stage="test",
          test_csv="test.csv", predict_dir=str(root / "holdout"))


def _rle_csv(root: Path) -> Path:
    from lightning_cv.io.images import read_mask
    from lightning_cv.io.masks import rle_encode

    rows = [{"id": str(i), "rle_mask": rle_encode(read_mask(root / "train_masks" / f"{i}_mask.png"))} for i in range(N)]
    pd.DataFrame(rows).to_csv(root / "masks.csv", index=False)
    return root / "masks.csv"


@pytest.mark.parametrize("task", IMAGE_TASKS)
def test_csv_missing_a_named_column(tmp_path, task):
    root = make_data(task, tmp_path)
    kwargs = {}
    if task == "seg":
        csv, column, kwargs = _rle_csv(root), "rle_mask", {"rle_csv": "masks.csv"}
    else:
        csv, column = root / "train.csv", "label" if task == "cls" else "size"
    _edit_csv(csv, lambda f: f.rename(columns={column: "something_else"}))
    fails(task, root, rf"{csv.name}: missing column\(s\) \['{column}'\]", **kwargs)


@pytest.mark.parametrize("task", IMAGE_TASKS)
def test_duplicate_ids_name_the_row(tmp_path, task):
    root = make_data(task, tmp_path)
    kwargs = {"rle_csv": "masks.csv"} if task == "seg" else {}
    csv = _rle_csv(root) if task == "seg" else root / "train.csv"
    key = "id" if task == "seg" else "image"

    def duplicate(frame):
        frame.loc[5, key] = frame.loc[2, key]
        return frame

    _edit_csv(csv, duplicate)
    if task == "seg":  # several rows of one image are its instances (unioned): the image left without a row is named
        fails(task, root, rf"5\.png: no row with id '5' in .*{csv.name}", **kwargs)
    else:
        fails(task, root, rf"{csv.name}: row 7: duplicate image '2(\.png)?'", **kwargs)


# -- empty splits and folds ----------------------------------------------------------------------------
@pytest.mark.parametrize("task", IMAGE_TASKS)
def test_predict_dir_without_images(tmp_path, task):
    root = make_data(task, tmp_path)
    (root / "test" / "notes.txt").write_text("no images here")
    fails(task, root, r"test: no images", stage="predict")


@pytest.mark.parametrize("empty", ["validation", "training"])
@pytest.mark.parametrize("task", ["cls", "seg"])
def test_fold_without_rows(tmp_path, task, empty):
    """Every row in fold 1: fold 0 has nothing to validate on, fold 1 nothing to train on."""
    root = make_data(task, tmp_path)
    key = "image" if task == "cls" else "id"
    ids = [f"{i}.png" for i in range(N)] if task == "cls" else [str(i) for i in range(N)]
    pd.DataFrame({key: ids, "fold": 1}).to_csv(root / "folds.csv", index=False)
    fold = 0 if empty == "validation" else 1
    fails(task, root, rf"--data.fold {fold}: no {empty} rows", fold=fold, folds_csv=str(root / "folds.csv"))


@pytest.mark.parametrize("task", ["cls", "seg", "bbox", "mnist"])
def test_a_single_training_image(tmp_path, task):
    root = make_data(task, tmp_path)
    if task == "mnist":
        write_idx(root / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
        write_idx(root / "train-labels-idx1-ubyte", np.zeros(0, np.uint8))
        fails(task, root, r"train images have shape \(0, 28, 28\)")
        return
    for i in range(1, N):
        (root / "train" / f"{i}.png").unlink()
        if task == "seg":
            (root / "train_masks" / f"{i}_mask.png").unlink()
    if task != "seg":
        _edit_csv(root / "train.csv", lambda f: f.iloc[:1])
    fails(task, root, "single image|1 training image")


def test_class_with_fewer_rows_than_folds(tmp_path):
    root = make_data("cls", tmp_path)
    _edit_csv(root / "train.csv", lambda f: f.assign(label=["a"] * (N - 2) + ["b"] * 2))
    frame, key, label = datamodule("cls", root).fold_table()
    with pytest.raises(DataError, match=r"class 'b' \(2\) has fewer rows than the 3 folds"):
        assign_folds(frame[label].tolist(), 3)


# -- boxes ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x, y, size, message",
    [
        ("40", "3", "12", r"row 5 \(3\.png\): box .* lies outside the 32x24 image"),
        ("4", "-30", "12", r"row 5 \(3\.png\): box .* lies outside"),
        ("nan", "3", "12", r"row 5 \(3\.png\): box values must be numbers, got x='nan'"),
        ("4", "", "12", r"row 5 \(3\.png\): box values must be numbers, got x='4', y=''"),
        ("4", "3", "abc", r"row 5 \(3\.png\): box values must be numbers"),
        ("4", "3", "0", r"row 5 \(3\.png\): box size must be positive"),
    ],
)
def test_bad_box_rows(tmp_path, x, y, size, message):
    root = make_data("bbox", tmp_path)

    def corrupt(frame):
        frame.loc[3, ["x", "y", "size"]] = [x, y, size]
        return frame

    _edit_csv(root / "train.csv", corrupt)
    fails("bbox", root, rf"train\.csv: {message}")


# -- conversions, not errors ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gray", "rgba", "16bit"])
@pytest.mark.parametrize("task", IMAGE_TASKS)
def test_gray_rgba_and_16bit_images_are_converted(tmp_path, task, kind):
    root = make_data(task, tmp_path)
    rng = np.random.default_rng(1)
    for i in range(N):
        if kind == "gray":
            image = rng.integers(0, 255, (24, 32), dtype=np.uint8)
        elif kind == "rgba":
            image = rng.integers(0, 255, (24, 32, 4), dtype=np.uint8)
        else:
            image = rng.integers(0, 65535, (24, 32, 3), dtype=np.uint16)
        cv2.imwrite(str(root / "train" / f"{i}.png"), image)
    dm = datamodule(task, root)
    dm.setup("fit")
    for split in ("train", "val"):
        sample = dm.datasets[split][0]
        assert sample["image"].dtype == torch.float32 and sample["image"].shape[0] == 3
        assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
        assert "target" in sample


# -- through the CLI: one line on stderr, exit status 2, nothing written -------------------------------
SMOKE = {
    "seg": ["--config", "configs/seg.yaml", "--model.encoder", "tu-test_resnet"],
    "bbox": ["--config", "configs/bbox.yaml", "--model.backbone", "test_resnet", "--data.cache", "none"],
}


@pytest.mark.parametrize("task", ["seg", "bbox"])
def test_cli_prints_one_line_and_exits_2(tmp_path, capsys, task):
    root = make_data(task, tmp_path / "data")
    if task == "seg":
        _truncate(root / "train" / "5.png")
        expected = "train/5.png: truncated PNG"
    else:
        _edit_csv(root / "train.csv", lambda f: f.assign(size=["12"] * (N - 1) + ["nan"]))
        expected = "row 9 (7.png): box values must be numbers"
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(["fit", *SMOKE[task], "--data.data_dir", str(root), "--data.image_size", "16", "--trainer.max_epochs", "1",
              "--trainer.default_root_dir", str(run), "--trainer.enable_progress_bar", "false"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1]
    assert not (run / "checkpoints").exists()


def test_cli_model_option_error_is_one_line(tmp_path, capsys):
    """An error raised while jsonargparse builds the model (wrapped in its own ValueError) is still one line."""
    root = make_data("cls", tmp_path / "data")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "configs/cls.yaml", "--model.backbone", "resnt18", "--data.data_dir", str(root),
              "--trainer.default_root_dir", str(tmp_path / "run")])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: Unknown timm model 'resnt18'. Close matches: resnet18")
