"""Reading data: IDX files, CSV / ImageFolder layouts, label mapping, image conversions, bad input."""

from __future__ import annotations

import gzip

import cv2
import numpy as np
import pandas as pd
import pytest

from lightning_cv.cli import main
from lightning_cv.data import ClassificationDataModule, MNISTDataModule
from lightning_cv.data.mnist import read_idx, write_idx
from lightning_cv.errors import DataError
from lightning_cv.io.images import read_image
from lightning_cv.io.labels import sorted_labels


def _write_cls(root, labels, size=16):
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, _ in enumerate(labels):
        cv2.imwrite(str(root / "train" / f"{i}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    pd.DataFrame({"image": [f"{i}.png" for i in range(len(labels))], "label": labels}).to_csv(root / "train.csv", index=False)
    return root


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    array = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / f"x-idx3-ubyte{suffix}", array)
    np.testing.assert_array_equal(read_idx(tmp_path / f"x-idx3-ubyte{suffix}"), array)


def test_idx_header_is_the_mnist_format(tmp_path):
    write_idx(tmp_path / "labels", np.array([3, 1, 4], dtype=np.uint8))
    raw = (tmp_path / "labels").read_bytes()
    assert raw[:8] == bytes([0, 0, 8, 1, 0, 0, 0, 3]) and raw[8:] == bytes([3, 1, 4])


def test_truncated_idx_is_a_data_error(tmp_path):
    write_idx(tmp_path / "x", np.zeros((4, 2, 2), np.uint8))
    (tmp_path / "y").write_bytes((tmp_path / "x").read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "y")


def test_mnist_reads_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    for kind, n in (("train", 40), ("t10k", 10)):
        write_idx(raw / f"{kind}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28), dtype=np.uint8))
        with gzip.open(raw / f"{kind}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + (np.arange(n) % 10).astype(np.uint8).tobytes())
    dm = MNISTDataModule(data_dir=str(tmp_path), val_fraction=0.25, download=False)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.datasets["train"]) == 30 and len(dm.datasets["val"]) == 10 and len(dm.datasets["test"]) == 10
    sample = dm.datasets["val"][0]
    assert sample["image"].shape == (1, 28, 28) and 0 <= sample["target"] <= 9


def test_mnist_missing_files_names_the_demo(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError, match="lightning-cv demo --task mnist"):
        dm.setup("fit")


def test_integer_labels_sort_numerically():
    assert sorted_labels(["10", "9", "2"]) == ["2", "9", "10"]
    assert sorted_labels(["cat", "ant"]) == ["ant", "cat"]


def test_csv_layout_split_is_stratified_and_seeded(tmp_path):
    root = _write_cls(tmp_path / "d", ["a"] * 30 + ["b"] * 10)
    dm = ClassificationDataModule(data_dir=str(root), image_size=8, val_fraction=0.25)
    assert dm.class_names == ["a", "b"] and dm.num_classes == 2
    dm.setup("fit")
    val = dm.datasets["val"]
    assert sorted(np.bincount(val.targets)) == [2, 8]
    again = ClassificationDataModule(data_dir=str(root), image_size=8, val_fraction=0.25)
    again.setup("fit")
    assert again.datasets["val"].ids == val.ids
    assert val[0]["image"].shape == (3, 8, 8)


def test_image_folder_layout(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in (("dog", 4), ("cat", 6)):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(tmp_path / "train" / cls / f"{i}.jpg"), rng.integers(0, 255, (10, 12, 3), dtype=np.uint8))
    dm = ClassificationDataModule(data_dir=str(tmp_path), image_size=8, val_fraction=0.4)
    assert dm.class_names == ["cat", "dog"]
    dm.setup("fit")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 10
    assert set(dm.datasets["val"].ids) <= {f"{c}/{i}.jpg" for c in ("cat", "dog") for i in range(6)}


def test_image_conversions_to_rgb(tmp_path):
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert read_image(tmp_path / "g.png").shape == (4, 4, 3)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGRA
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert read_image(tmp_path / "a.png")[0, 0].tolist() == [200, 0, 0]
    deep = np.full((4, 4), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    image = read_image(tmp_path / "d.png")
    assert image.dtype == np.uint8 and image.max() == 255


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("missing", "file not found"),
        ("empty", "empty"),
        ("garbage", "cannot"),
        ("column", "missing column"),
        ("duplicate", "duplicate image"),
    ],
)
def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys, breakage, message):
    root = _write_cls(tmp_path / "d", ["a", "b"] * 4)
    if breakage == "missing":
        (root / "train" / "3.png").unlink()
    elif breakage == "empty":
        (root / "train" / "3.png").write_bytes(b"")
    elif breakage == "garbage":
        (root / "train" / "3.png").write_bytes(b"not an image at all")
    elif breakage == "column":
        pd.read_csv(root / "train.csv").rename(columns={"label": "target"}).to_csv(root / "train.csv", index=False)
    elif breakage == "duplicate":
        frame = pd.read_csv(root / "train.csv")
        frame.loc[5, "image"] = "3.png"
        frame.to_csv(root / "train.csv", index=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "configs/cls.yaml", "--data.data_dir", str(root), "--model.backbone", "resnet10t",
              "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "run"),
              "--trainer.enable_progress_bar", "false"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err
    assert "3.png" in err or "train.csv" in err
    assert not (tmp_path / "run" / "checkpoints").exists()



def test_a_cv_runs_recorded_checks_are_redone_for_changed_files(tmp_path, monkeypatch):
    """A fold process (LIGHTNING_CV_CHECKED_FILES) reuses the checks `cv` recorded, except for a file that has
    changed since: that one is checked again, and a truncated image is still an error."""
    from lightning_cv.errors import ImageReadError
    from lightning_cv.io import images as io
    from lightning_cv.io.file_checks import CHECKED_FILES_ENV, remember_checks

    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), np.zeros((6, 4), np.uint8))
    record = tmp_path / "checked_files.json"
    with remember_checks(record):
        assert io.check_image(tmp_path / "a.png") == io.check_image(tmp_path / "b.png") == (6, 4)
    checked = []
    check_image = io._check_image
    monkeypatch.setattr(io, "_check_image", lambda path: checked.append(path.name) or check_image(path))
    monkeypatch.setenv(CHECKED_FILES_ENV, str(record))
    data = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[:-12])  # its end marker cut off
    assert io.check_image(tmp_path / "a.png") == (6, 4)
    with pytest.raises(ImageReadError, match="truncated"):
        io.check_image(tmp_path / "b.png")
    assert checked == ["b.png"]
    monkeypatch.delenv(CHECKED_FILES_ENV)
    io.check_image(tmp_path / "a.png")  # without the record (a plain fit): checked
    assert checked == ["b.png", "a.png"]

def test_unknown_label_names_the_row(tmp_path):
    root = _write_cls(tmp_path / "d", ["a", "b", "a", "c"])
    dm = ClassificationDataModule(data_dir=str(root), classes=["a", "b"], val_fraction=0.5)
    with pytest.raises(DataError, match=r"row 5: unknown label 'c'"):
        dm.setup("fit")


def test_single_image_class_cannot_be_stratified(tmp_path):
    root = _write_cls(tmp_path / "d", ["a", "a", "a", "b"])
    with pytest.raises(DataError, match="class\\(es\\) b have a single image"):
        ClassificationDataModule(data_dir=str(root)).setup("fit")


def test_demo_occlusion_hides_part_of_the_same_object():
    from lightning_cv.data.demos import render_shape

    masks = [render_shape(np.random.default_rng(3), "circle", 64, 64, occlusion=p)[1] > 0 for p in (0.0, 1.0)]
    whole, bitten = masks
    assert not (bitten & ~whole).any()  # the blob only removes pixels of the same object
    assert 0 < bitten.sum() < whole.sum()


def test_cls_demo_is_deterministic_and_follows_its_settings(tmp_path, monkeypatch):
    from lightning_cv.cli.commands.demo import demo
    from lightning_cv.data import demos as demo_module

    monkeypatch.setitem(demo_module.CLS_DEMO, "n_test", 3)
    for name in ("a", "b"):
        demo("cls", tmp_path / name, seed=5, n_train=6)
    for rel in ("train.csv", "solution.csv", "train/train_00005.png", "test/test_00002.png"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert len(pd.read_csv(tmp_path / "a" / "train.csv")) == 6 and len(pd.read_csv(tmp_path / "a" / "solution.csv")) == 3


def test_sixteen_bit_images_keep_their_range(tmp_path):
    """A 12-bit image stored in 16 bits (X-rays) spans 0-255, not 0-16; 16 bits in use scale like /257."""
    import cv2

    from lightning_cv.io.images import read_image

    twelve = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "xray.png"), twelve)
    image = read_image(tmp_path / "xray.png")
    assert image.dtype == np.uint8 and image.max() == 255 and image[0, 0, 0] == 0
    np.testing.assert_array_equal(image[..., 0], np.round(twelve * (255 / 4095)).astype(np.uint8))
    full = np.full((4, 4), 65535, np.uint16)
    full[0, 0] = 257 * 100
    cv2.imwrite(str(tmp_path / "full.png"), full)
    assert read_image(tmp_path / "full.png")[0, 0, 0] == 100
