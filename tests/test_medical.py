"""Medical images as competitions hand them out: DICOM (12-bit, rescaled, MONOCHROME1, compressed), 16-bit
PNG, one grey file per channel (HPA); the same pixels train alike whichever file holds them."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from dicoms import write_dicom
from specs import ROOT

from lightning_cv.cli import build_cli
from lightning_cv.data import ClassificationDataModule
from lightning_cv.errors import ImageReadError, UserInputError
from lightning_cv.io.images import check_image, read_image
from lightning_cv.predictions.files import Predictions
from lightning_cv.tasks import ClassificationTask


def twelve_bit(shape=(32, 48), seed=0) -> np.ndarray:
    """A 12-bit X-ray-like image: smooth gradient, noise, and one pixel at 4095 (all 12 bits in use)."""
    rng = np.random.default_rng(seed)
    image = np.linspace(200, 3600, shape[1])[None, :] + rng.normal(0, 150, shape)
    image = np.clip(image, 0, 4095).astype(np.uint16)
    image[0, 0] = 4095
    return image


def eight_bit(stored: np.ndarray) -> np.ndarray:
    """The 8-bit twin of a 12-bit image, as a viewer maps its stored range to 0-255."""
    return np.round(stored.astype(np.float64) * 255 / 4095).astype(np.uint8)


@pytest.mark.parametrize("compress", [None, "rle", "j2k"])
def test_dicom_reads_as_its_eight_bit_twin(tmp_path, compress):
    """12-bit MONOCHROME2 with a rescale intercept (CT-like units), uncompressed, RLE and JPEG 2000 lossless."""
    stored = twelve_bit()
    path = write_dicom(tmp_path / "xray.dcm", stored, intercept=-1024.0, compress=compress)
    image = read_image(path)
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], eight_bit(stored))
    assert check_image(path) == (32, 48)
    assert read_image(path, channels=1).shape == (32, 48, 1)


def test_monochrome1_is_inverted_and_files_without_preamble_read(tmp_path):
    stored = twelve_bit(seed=1)
    inverted = write_dicom(tmp_path / "m1.dcm", 4095 - stored, monochrome1=True)  # white is low: same picture
    np.testing.assert_array_equal(read_image(inverted)[..., 0], eight_bit(stored))

    import pydicom
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    ds = pydicom.dcmread(write_dicom(tmp_path / "x.dcm", stored))
    del ds.file_meta  # a bare dataset: no preamble, no "DICM", no file meta (implicit VR little endian)
    with open(tmp_path / "bare.dcm", "wb") as f:
        out = DicomFileLike(f)
        out.is_little_endian, out.is_implicit_VR = True, True
        write_dataset(out, ds)
    assert (tmp_path / "bare.dcm").read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_image(tmp_path / "bare.dcm")[..., 0], eight_bit(stored))


def test_windows(tmp_path):
    """--data.window in the modality's units (after the rescale), the file's own window, percentiles."""
    stored = twelve_bit(seed=2)
    hu = stored.astype(np.float64) - 1024  # RescaleIntercept -1024
    path = write_dicom(tmp_path / "ct.dcm", stored, intercept=-1024.0, window=(40, 400))
    expected = np.clip(np.round((hu - (40 - 200)) * 255 / 400), 0, 255).astype(np.uint8)
    fixed = ClassificationDataModule(str(tmp_path), window=[40, 400]).decoder
    np.testing.assert_array_equal(fixed(path)[..., 0], expected)
    np.testing.assert_array_equal(ClassificationDataModule(str(tmp_path), window="file").decoder(path)[..., 0], expected)
    spread = read_image(path, window="percentile")[..., 0]
    assert spread.min() == 0 and spread.max() == 255 and (spread == 0).mean() < 0.02

    cv2.imwrite(str(tmp_path / "x.png"), stored)
    with pytest.raises(UserInputError, match="only DICOM files carry their own window"):
        read_image(tmp_path / "x.png", window="file")
    for bad in ([40], [40, 0], "soft"):
        with pytest.raises(UserInputError, match="--data.window"):
            ClassificationDataModule(str(tmp_path), window=bad)


def test_bad_dicom_files_are_named(tmp_path):
    (tmp_path / "text.dcm").write_text("not an image\n" * 20)
    with pytest.raises(ImageReadError, match=r"text.dcm: not a DICOM file"):
        check_image(tmp_path / "text.dcm")
    import pydicom

    ds = pydicom.dcmread(write_dicom(tmp_path / "x.dcm", twelve_bit()))
    del ds.PixelData
    ds.save_as(tmp_path / "header_only.dcm")
    with pytest.raises(ImageReadError, match=r"header_only.dcm: DICOM file has no pixel data"):
        check_image(tmp_path / "header_only.dcm")


def xray_set(root, seed=0, n=48):
    """Two classes of 12-bit images (a bright blob on the left or right), written three ways: 8-bit PNG,
    16-bit PNG and DICOM (rescaled; every third one MONOCHROME1); labels in train.csv by image id."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        stored = twelve_bit((24, 24), seed=seed * 1000 + i).astype(np.float64) * 0.5
        x = 6 + 12 * label + rng.integers(-2, 3)
        cv2.circle(stored, (int(x), int(rng.integers(8, 16))), 4, 3500, -1)
        stored = np.clip(stored, 0, 4095).astype(np.uint16)
        stored[0, 0] = 4095
        for folder in ("png8", "png16", "dicom"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "png8" / f"{i}.png"), eight_bit(stored))
        cv2.imwrite(str(root / "png16" / f"{i}.png"), stored)
        if i % 3 == 0:
            write_dicom(root / "dicom" / f"{i}.dcm", 4095 - stored, monochrome1=True)
        else:
            write_dicom(root / "dicom" / f"{i}.dcm", stored, intercept=-1024.0)
        rows.append((str(i), "right" if label else "left"))
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(root / "train.csv", index=False)


def test_dicom_and_sixteen_bit_train_as_their_eight_bit_twin(tmp_path):
    """The same 12-bit pixels as 8-bit PNG, 16-bit PNG and DICOM: read alike, so training reaches the same
    validation accuracy (identical runs, seeded, fp32), well above chance."""
    xray_set(tmp_path)
    common = ["--config", str(ROOT / "configs" / "cls.yaml"), "--data.data_dir", str(tmp_path), "--data.image_size", "24",
              "--data.batch_size", "8", "--model.backbone", "small_cnn", "--trainer.max_epochs", "8",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
              "--trainer.precision", "32-true", "--data.train_augment", "[]", "--trainer.callbacks", "[]"]
    scores = {}
    for folder, suffix in (("png8", ".png"), ("png16", ".png"), ("dicom", ".dcm")):
        cli = build_cli(["fit", *common, "--data.image_dir", folder, "--data.image_suffix", suffix,
                         "--trainer.default_root_dir", str(tmp_path / f"run-{folder}")])
        logged = cli.trainer.callback_metrics
        assert {"val/auc", "val/logloss"} <= set(logged)  # two classes: ROC AUC and log loss are logged too
        scores[folder] = (float(logged["val/acc"]), float(logged["val/loss"]))
    assert scores["png8"][0] >= 0.85, scores
    assert scores["png16"] == pytest.approx(scores["png8"], abs=1e-5) and scores["dicom"] == pytest.approx(scores["png8"], abs=1e-5)


def test_per_channel_files(tmp_path):
    """HPA: `<id>_red.png`, `<id>_green.png`, `<id>_blue.png`, `<id>_yellow.png` stack into 4 channels in the
    suffixes' order (cached per file set); test images are listed by their first channel's files."""
    suffixes = ["_red.png", "_green.png", "_blue.png", "_yellow.png"]
    for split, n in (("train", 6), ("test", 3)):
        (tmp_path / split).mkdir()
        for i in range(n):
            for c, suffix in enumerate(suffixes):
                cv2.imwrite(str(tmp_path / split / f"id{i}{suffix}"), np.full((12, 12), 10 * c + i, np.uint8))
    pd.DataFrame({"Id": [f"id{i}" for i in range(6)], "Target": [str(i % 2) for i in range(6)]}).to_csv(
        tmp_path / "train.csv", index=False)
    dm = ClassificationDataModule(str(tmp_path), image_col="Id", label_col="Target", channel_suffixes=suffixes,
                                  image_size=12, cache="npz", cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    assert dm.in_chans == 4
    sample = dm.datasets["train"][0]
    i = int(sample["id"][2:])
    assert tuple(sample["image"].shape) == (4, 12, 12)
    assert [round(float(v) * 255) for v in sample["image"][:, 0, 0]] == [i, 10 + i, 20 + i, 30 + i]
    assert any((tmp_path / "cache").rglob("*.npz"))
    dm.setup("predict")
    assert dm.datasets["predict"].ids == ["id0", "id1", "id2"]

    cv2.imwrite(str(tmp_path / "train" / "id1_yellow.png"), np.zeros((10, 12), np.uint8))
    with pytest.raises(ImageReadError, match="id1: its channel files differ in size"):
        ClassificationDataModule(str(tmp_path), image_col="Id", label_col="Target", channel_suffixes=suffixes).setup("fit")


def test_classification_scores_match_scikit_learn():
    """OOF scores: log loss always, ROC AUC with two classes, QWK when the classes are grades."""
    from sklearn.metrics import cohen_kappa_score, log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 5, 60)
    probs = rng.dirichlet(np.ones(5), 60) + np.eye(5)[targets]
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
    ids = np.array([f"i{k}" for k in range(60)])
    graded = ClassificationTask.score(Predictions("cls", ids, {"probs": probs}, ["0", "1", "2", "3", "4"], targets=targets))
    assert graded["logloss"] == pytest.approx(log_loss(targets, probs), abs=1e-5)
    assert graded["qwk"] == pytest.approx(cohen_kappa_score(targets, probs.argmax(1), weights="quadratic"))
    named = ClassificationTask.score(Predictions("cls", ids, {"probs": probs}, list("abcde"), targets=targets))
    assert "qwk" not in named and "auc" not in named
    binary = np.stack([1 - probs[:, 0], probs[:, 0]], axis=1)
    for names, logged in ((["0", "1", "2", "3", "4"], True), (list("abcde"), False)):
        task = ClassificationTask(backbone="small_cnn", num_classes=5, class_names=names)
        assert ("val/qwk" in task.val_metrics.keys(keep_base=False)) is logged
    two = ClassificationTask.score(Predictions("cls", ids, {"probs": binary}, ["no", "yes"], targets=(targets == 0).astype(int)))
    assert two["auc"] == pytest.approx(roc_auc_score(targets == 0, probs[:, 0]))
