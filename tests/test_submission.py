"""`predict --data.sample_submission`: submission.csv in the sample's exact shape (ids, order, columns),
for classification (labels or probabilities) and masks (RLE matched by id or file stem)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from specs import ROOT

from lightning_cv.cli import build_cli
from lightning_cv.data.classification import ClassificationDataModule
from lightning_cv.data.demos import make_shapes
from lightning_cv.data.segmentation import SegmentationDataModule
from lightning_cv.errors import DataError, UserInputError
from lightning_cv.io.images import read_mask
from lightning_cv.io.masks import rle_encode
from lightning_cv.predictions.submission import read_sample, sample_for

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _cls_args(data_dir: Path) -> list[str]:
    return ["--config", str(ROOT / "configs/cls.yaml"), "--data.data_dir", str(data_dir), "--model.backbone", "resnet10t",
            "--data.image_size", "32", "--data.batch_size", "8", *QUIET]


def _seg_args(data_dir: Path) -> list[str]:
    return ["--config", str(ROOT / "configs/seg.yaml"), "--data.data_dir", str(data_dir), "--model.encoder", "tu-test_resnet",
            "--data.image_size", "32", "--data.batch_size", "8", *QUIET]


def _fit(args: list[str], run_dir: Path) -> Path:
    build_cli(["fit", *args, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
               "--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(run_dir)])
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("submission_cls")
    make_shapes(root / "data", n_train=40, n_test=8, size=(32, 32), seed=1)
    return root / "data", _fit(_cls_args(root / "data"), root / "run")


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory) -> Path:
    """The shape of a submission does not depend on training: masks predict from the config's model."""
    root = tmp_path_factory.mktemp("submission_seg")
    make_shapes(root / "data", n_train=4, n_test=4, size=(32, 32), seed=2)
    return root / "data"


def test_classification_submission_has_the_sample_shape(cls_run, tmp_path):
    data_dir, ckpt = cls_run
    out = tmp_path / "demo_sample"
    build_cli(["predict", *_cls_args(data_dir), "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(out),
               "--data.sample_submission", "sample_submission.csv"])
    sample = pd.read_csv(data_dir / "sample_submission.csv", dtype=str)
    submission = pd.read_csv(out / "submission.csv", dtype=str)
    predictions = pd.read_csv(out / "predictions.csv", dtype={"image": str}).set_index("image")
    assert list(submission.columns) == list(sample.columns)
    assert submission["image"].tolist() == sample["image"].tolist()
    assert submission["label"].tolist() == predictions.loc[sample["image"], "label"].tolist()

    # Another sample (absolute path): shuffled ids without extension, one probability column per class.
    classes = [c[len("prob_"):] for c in predictions.columns if c.startswith("prob_")]
    ids = [Path(i).stem for i in sample["image"]][::-1]
    custom = pd.DataFrame({"id": ids, **{c: 0.0 for c in classes[::-1]}})
    custom.to_csv(tmp_path / "probs_sample.csv", index=False)
    out = tmp_path / "prob_sample"
    build_cli(["predict", *_cls_args(data_dir), "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(out),
               "--data.sample_submission", str(tmp_path / "probs_sample.csv")])
    submission = pd.read_csv(out / "submission.csv", dtype={"id": str})
    assert list(submission.columns) == ["id", *classes[::-1]]
    assert submission["id"].tolist() == ids
    expected = predictions.loc[[f"{i}.png" for i in ids], [f"prob_{c}" for c in classes[::-1]]].to_numpy()
    np.testing.assert_allclose(submission[classes[::-1]].to_numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(submission[classes].sum(axis=1), 1.0, atol=1e-4)


def test_sample_checks_before_the_model_runs(cls_run, tmp_path):
    data_dir, _ = cls_run
    sample = pd.read_csv(data_dir / "sample_submission.csv", dtype=str)
    bad = pd.concat([sample, pd.DataFrame({"image": ["test_09999.png"], "label": ["circle"]})])
    bad.to_csv(tmp_path / "bad.csv", index=False)
    dm = ClassificationDataModule(str(data_dir), image_size=32, sample_submission=str(tmp_path / "bad.csv"))
    with pytest.raises(DataError) as err:
        dm.setup("predict")
    assert str(err.value) == (f"{tmp_path / 'bad.csv'}: row {len(sample) + 2}: image 'test_09999.png' has no prediction "
                              f"(1 of {len(bad)} sample ids have none; predicted were {len(sample)} images)")
    # cv's out-of-fold `predict --data.predict_split val` runs with the same options: it follows no sample.
    held_out = ClassificationDataModule(str(data_dir), image_size=32, sample_submission=str(tmp_path / "bad.csv"),
                                        predict_split="val")
    held_out.setup("predict")
    assert sample_for(held_out) is None and sample_for(dm) == tmp_path / "bad.csv"
    (tmp_path / "dup.csv").write_text("id,rle_mask\na,\nb,\na,\n")
    with pytest.raises(DataError, match=r"dup\.csv: row 4: duplicate id 'a'"):
        read_sample(tmp_path / "dup.csv")
    with pytest.raises(UserInputError, match="nope.csv: sample submission not found"):
        ClassificationDataModule(str(data_dir), sample_submission="nope.csv").setup("predict")


def test_mask_submission_follows_a_carvana_like_sample(seg_data, tmp_path):
    """Carvana: `img` holds file names with their extension, in the sample's own order; the RLE of
    each is the mask `predict` wrote for that image (masks/<stem>.png)."""
    data_dir = seg_data
    stems = sorted(p.stem for p in (data_dir / "test").iterdir())
    names = [f"{stem}.png" for stem in stems][::-1]
    pd.DataFrame({"img": names, "rle_mask": "1 1"}).to_csv(tmp_path / "carvana_sample.csv", index=False)
    out = tmp_path / "carvana"
    build_cli(["predict", *_seg_args(data_dir), "--trainer.default_root_dir", str(out),
               "--data.sample_submission", str(tmp_path / "carvana_sample.csv")])
    submission = pd.read_csv(out / "submission.csv", dtype=str, keep_default_na=False)
    assert list(submission.columns) == ["img", "rle_mask"]
    assert submission["img"].tolist() == names
    assert submission["rle_mask"].nunique() == len(names)  # distinct masks, so a wrong order would show
    assert submission["rle_mask"].tolist() == [rle_encode(read_mask(out / "masks" / f"{Path(n).stem}.png") > 0) for n in names]
    # The demo's masks sample matches the predicted ids (and solution_masks.csv, for `score`).
    demo_sample = read_sample(data_dir / "sample_submission_masks.csv")
    assert sorted(demo_sample["id"]) == stems
    assert list(demo_sample.columns) == list(pd.read_csv(data_dir / "solution_masks.csv").columns)


def test_mask_sample_checks(seg_data, tmp_path):
    data_dir = seg_data
    pd.DataFrame({"img": ["test_00000.png", "elsewhere.png"], "rle_mask": ["", ""]}).to_csv(tmp_path / "s.csv", index=False)
    dm = SegmentationDataModule(str(data_dir), image_size=32, sample_submission=str(tmp_path / "s.csv"))
    with pytest.raises(DataError, match=r"s\.csv: row 3: img 'elsewhere.png' has no prediction"):
        dm.setup("predict")
    multiclass = SegmentationDataModule(str(data_dir), image_size=32, classes=["background", "a", "b"],
                                        sample_submission="sample_submission_masks.csv")
    with pytest.raises(UserInputError, match="binary masks"):
        multiclass.setup("predict")


@pytest.mark.slow
def test_ensemble_predicts_with_checkpoints_first(cls_run, tmp_path, capsys):
    """`ensemble CKPT CKPT --config …` predicts with each checkpoint (a predict-* dir in its run) and
    combines them like saved predictions: one model twice, weighted, is that model."""
    from lightning_cv.cli import main

    data_dir, ckpt = cls_run
    out = tmp_path / "ensemble.csv"
    # A checkpoint without its recipe (not written by `fit`) needs the config it was trained with.
    bare = tmp_path / "bare.ckpt"
    torch.save({k: v for k, v in torch.load(ckpt, weights_only=True).items() if k != "datamodule_hyper_parameters"}, bare)
    with pytest.raises(SystemExit):
        main(["ensemble", str(bare), "--out", str(out)])
    assert f"{bare} holds no data recipe" in capsys.readouterr().err
    fp32 = ["--trainer.precision", "32-true"]  # both predictions in one precision, whatever `auto` picks here
    main(["ensemble", str(ckpt), str(ckpt), "--weights", "[1, 3]", "--out", str(out), *_cls_args(data_dir), *fp32])
    single = tmp_path / "single"
    build_cli(["predict", *_cls_args(data_dir), *fp32, "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(single)])
    expected = pd.read_csv(single / "predictions.csv")
    written = pd.read_csv(out)
    assert written["image"].tolist() == expected["image"].tolist() and written["label"].tolist() == expected["label"].tolist()
    np.testing.assert_allclose(written.filter(like="prob_").to_numpy(), expected.filter(like="prob_").to_numpy(), atol=2e-6)
    assert list((ckpt.parent.parent).glob("predict-*-last/predictions.npz"))
