"""Loading checkpoints: weights_only (no code runs from a file), and a checkpoint for other classes, another
task or another architecture is a one-line error naming both sides, never a tensor-shape traceback."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from lightning_cv.cli import main
from lightning_cv.errors import UserInputError
from lightning_cv.tasks import ClassificationTask

FIT = ["--config", "configs/cls.yaml", "--model.backbone", "small_cnn", "--data.image_size", "32",
       "--data.batch_size", "8", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]


def _cls_data(root: Path, labels: list[str], per_class: int = 4) -> Path:
    """train.csv + train/ and a test/ folder of 32 px images, `per_class` images of each label."""
    rng = np.random.default_rng(0)
    names = []
    for split, n in (("train", per_class * len(labels)), ("test", 2)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / split / f"{i}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        if split == "train":
            names = [f"{i}.png" for i in range(n)]
    pd.DataFrame({"image": names, "label": labels * per_class}).to_csv(root / "train.csv", index=False)
    return root


@pytest.fixture(scope="module")
def three_class_ckpt(tmp_path_factory) -> tuple[Path, Path]:
    """(3-class data, its checkpoint) from one tiny fit of the small CNN."""
    tmp = tmp_path_factory.mktemp("three")
    data = _cls_data(tmp / "data", ["cat", "dog", "fox"])
    main(["fit", *FIT, "--data.data_dir", str(data), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
          "--trainer.default_root_dir", str(tmp / "run")])
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return data, ckpt


def _error(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ")
    return lines[-1]


def test_same_classes_predict(three_class_ckpt, tmp_path):
    data, ckpt = three_class_ckpt
    main(["predict", *FIT, "--data.data_dir", str(data), "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path)])
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == 2


@pytest.mark.parametrize("verb", ["predict", "fit"])
def test_checkpoint_for_other_classes_names_both(three_class_ckpt, tmp_path, capsys, verb):
    _, ckpt = three_class_ckpt
    data = _cls_data(tmp_path / "five", ["a", "b", "c", "d", "e"])
    run = tmp_path / "run"
    # predict takes the classes from the checkpoint's recipe unless the command line gives others.
    classes = ["--data.classes", "[a, b, c, d, e]"] if verb == "predict" else []
    err = _error(capsys, [verb, *FIT, "--data.data_dir", str(data), "--ckpt_path", str(ckpt), "--trainer.max_epochs", "2",
                          *classes, "--trainer.default_root_dir", str(run)])
    assert str(ckpt) in err
    assert "trained for 3 classes ['cat', 'dog', 'fox']" in err and "the data has 5 ['a', 'b', 'c', 'd', 'e']" in err
    assert not (run / "predictions.csv").exists() and not (run / "checkpoints").exists()


def test_same_count_other_class_names(three_class_ckpt, tmp_path, capsys):
    _, ckpt = three_class_ckpt
    data = _cls_data(tmp_path / "other", ["cat", "dog", "owl"])
    err = _error(capsys, ["predict", *FIT, "--data.data_dir", str(data), "--ckpt_path", str(ckpt),
                          "--data.classes", "[cat, dog, owl]", "--trainer.default_root_dir", str(tmp_path / "run")])
    assert "['cat', 'dog', 'fox']" in err and "['cat', 'dog', 'owl']" in err


def test_cli_builds_the_checkpoint_architecture(three_class_ckpt, tmp_path, capsys):
    """The checkpoint defines the architecture: the config's backbone is replaced by the checkpoint's, and
    another --model.backbone on the command line is a one-line error, not a silent swap."""
    data, ckpt = three_class_ckpt
    main(["validate", *FIT, "--data.data_dir", str(data), "--ckpt_path", str(ckpt),
          "--trainer.default_root_dir", str(tmp_path / "run")])
    err = _error(capsys, ["validate", *FIT, "--model.backbone", "resnet10t", "--data.data_dir", str(data),
                          "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "run2")])
    assert f"--model.backbone 'resnet10t' contradicts checkpoint {ckpt}" in err


def test_checkpoint_of_another_task(three_class_ckpt, tmp_path, capsys):
    _, ckpt = three_class_ckpt
    seg = tmp_path / "seg"
    for folder in ("train", "train_masks"):
        (seg / folder).mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(seg / "train" / f"{i}.png"), np.zeros((32, 32, 3), np.uint8))
        cv2.imwrite(str(seg / "train_masks" / f"{i}_mask.png"), np.zeros((32, 32), np.uint8))
    err = _error(capsys, ["validate", "--config", "configs/seg.yaml", "--model.encoder", "tu-test_resnet",
                          "--data.data_dir", str(seg), "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "run")])
    assert f"checkpoint {ckpt} is a ClassificationTask, but the config asks for a SegmentationTask" in err


def test_on_load_checkpoint_checks_task_and_architecture(three_class_ckpt):
    from lightning_cv.tasks import SegmentationTask

    _, ckpt = three_class_ckpt
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    with pytest.raises(UserInputError, match="the checkpoint is a ClassificationTask, not a SegmentationTask"):
        SegmentationTask(num_classes=3, encoder="tu-test_resnet", image_size=32).on_load_checkpoint(checkpoint)
    with pytest.raises(UserInputError, match=r"does not fit this model \(\d+ weights of another shape"):
        ClassificationTask.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True, backbone="resnet10t")


def test_load_from_checkpoint_with_other_classes(three_class_ckpt):
    _, ckpt = three_class_ckpt
    task = ClassificationTask.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    assert task.class_names == ["cat", "dog", "fox"]
    # load_from_checkpoint merges the overrides into the stored hyperparameters: the weights tell.
    with pytest.raises(UserInputError, match=r"does not fit this model .* is \(3, \d+\) there, \(5, \d+\) here"):
        ClassificationTask.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True, num_classes=5,
                                                class_names=list("abcde"))


class _RunsCode:
    """Unpickling this would create `marker`: what a malicious checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_load_weights_only(three_class_ckpt, tmp_path):
    """A checkpoint carrying a pickled callable is refused by the CLI's loader; nothing from it runs."""
    data, ckpt = three_class_ckpt
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    marker = tmp_path / "code-ran"
    checkpoint["extra"] = _RunsCode(marker)
    bad = tmp_path / "bad.ckpt"
    torch.save(checkpoint, bad)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        main(["predict", *FIT, "--data.data_dir", str(data), "--ckpt_path", str(bad),
              "--trainer.default_root_dir", str(tmp_path / "run")])
    assert not marker.exists()
