"""Prediction stores: rows written a batch at a time, read a chunk at a time, merged across DDP ranks in
the dataset's order; ensembles and out-of-fold predictions of masks on the same stores."""

from __future__ import annotations

import tracemalloc
import zipfile
from types import SimpleNamespace

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from predicting import run_writer
from torch.utils.data import DataLoader, Dataset

from lightning_cv.cli.commands.cv import gather_oof
from lightning_cv.io.masks import rle_decode
from lightning_cv.predictions import stores
from lightning_cv.predictions.files import Predictions, load_predictions
from lightning_cv.predictions.stores import DiskRows, RowWriter
from lightning_cv.predictions.writer import PredictionWriter
from lightning_cv.tasks import SegmentationTask


def _maps(index: np.ndarray, side: int = 32) -> np.ndarray:
    """A float16 probability map per dataset index: a square whose place and size follow the index."""
    maps = np.zeros((len(index), 1, side, side), dtype=np.float16)
    for row, i in enumerate(index):
        top, size = int(i) % (side // 2), 4 + int(i) % 8
        maps[row, 0, top:top + size, 2:2 + size] = 0.9
    return maps


def test_disk_rows_read_like_the_array_they_hold(tmp_path):
    array = np.random.default_rng(0).random((11, 2, 3, 4)).astype(np.float16)
    writer = RowWriter(tmp_path)
    for start in range(0, 11, 4):
        writer.append("probs", array[start:start + 4])
    rows = writer.close()["probs"]
    assert isinstance(rows, DiskRows) and rows.shape == array.shape and len(rows) == 11
    np.testing.assert_array_equal(np.load(tmp_path / "probs.npy"), array)  # a plain .npy
    for key in (3, -1, slice(2, 9, 3), [7, 1, 2], np.arange(11) % 2 == 0, (slice(None), 1), (4, 0, 2)):
        np.testing.assert_array_equal(rows[key], array[key])
    view = rows.take([9, 2, 3]).take([2, 0])  # views read nothing until asked
    np.testing.assert_array_equal(view[:], array[[3, 9]])
    np.testing.assert_array_equal(np.stack(list(rows)), array)
    np.testing.assert_array_equal(rows.astype(np.float32), array.astype(np.float32))


def test_maps_are_stored_uncompressed_and_read_back_lazily(tmp_path):
    probs = _maps(np.arange(6))
    predictions = Predictions("seg", np.array([f"i{k}" for k in range(6)]), {"probs": probs, "size": np.full((6, 2), 40)},
                              ["background", "object"], {"threshold": 0.5}, targets=(probs[:, 0] > 0.5).astype(np.uint8))
    predictions.save(tmp_path / "p.npz")
    with zipfile.ZipFile(tmp_path / "p.npz") as archive:
        kinds = {i.filename: i.compress_type for i in archive.infolist()}
    assert kinds["probs.npy"] == zipfile.ZIP_STORED
    assert kinds["size.npy"] == kinds["ids.npy"] == kinds["targets.npy"] == zipfile.ZIP_DEFLATED
    with np.load(tmp_path / "p.npz") as plain:  # still an ordinary npz
        np.testing.assert_array_equal(plain["probs"], probs)
    loaded = load_predictions(tmp_path / "p.npz")
    assert isinstance(loaded.arrays["probs"], DiskRows) and isinstance(loaded.arrays["size"], np.ndarray)
    subset = loaded.take(np.array([4, 1]))
    subset.save(tmp_path / "q.npz")  # a view of stored rows saves without reading them all
    again = load_predictions(tmp_path / "q.npz")
    assert again.ids.tolist() == ["i4", "i1"]
    np.testing.assert_array_equal(again.arrays["probs"][:], probs[[4, 1]])


def test_ddp_shards_merge_in_the_dataset_order(tmp_path):
    """Two ranks of a DistributedSampler (rank r: indices r, r+2, ...; the last rank padded with index 0)
    write their own shards; rank 0 merges them: every image once, in the dataset's order."""
    ids = np.array([f"img{i}" for i in range(9)])
    per_rank = {0: [0, 2, 4, 6, 8], 1: [1, 3, 5, 7, 0]}
    writer = PredictionWriter(tmp_path)
    module = SegmentationTask(num_classes=2, encoder="tu-test_resnet", image_size=32)
    datamodule = SimpleNamespace(task_name="seg", predict_split="test")
    for rank in (1, 0):
        order = per_rank[rank]
        batches = [{"id": list(ids[order[s:s + 2]]), "probs": torch.from_numpy(_maps(np.array(order[s:s + 2]))),
                    "size": torch.tensor([[40, 40]] * len(order[s:s + 2]))} for s in range(0, 5, 2)]
        run_writer(writer, module, batches, datamodule, [order[s:s + 2] for s in range(0, 5, 2)], rank=rank, world_size=2)
        assert (tmp_path / ".predict-rank1").is_dir() == (rank == 1)  # rank 0 removes every shard after the merge
    saved = load_predictions(tmp_path / "predictions.npz")
    assert saved.ids.tolist() == ids.tolist()
    np.testing.assert_array_equal(saved.arrays["probs"][:], _maps(np.arange(9)))
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [f"{i}.png" for i in ids]
    assert not list(tmp_path.glob(".predict-*"))


class _Images(Dataset):
    def __len__(self) -> int:
        return 480

    def __getitem__(self, i: int) -> dict:
        return {"id": f"img{i:04d}", "index": i, "size": torch.tensor([48, 40])}


class _MapTask(SegmentationTask):
    """A segmentation task whose predictions are generated maps (no network), made as numpy arrays so
    that holding them would show in tracemalloc."""

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"id": batch["id"], "probs": _maps(batch["index"].numpy(), side=64), "size": batch["size"]}


def test_predict_streams_rows_to_disk(tmp_path, monkeypatch):
    """A real Trainer.predict over 60 batches of maps: the writer keeps no batch (the loop keeps none
    either), the maps reach predictions.npz in order, the masks and the RLE submission are right."""
    monkeypatch.setattr(stores, "CHUNK_BYTES", 32 << 10)  # chunks smaller than this test's few MB of maps
    task = _MapTask(num_classes=2, encoder="tu-test_resnet", image_size=32)
    def trainer(out):
        return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[PredictionWriter(out)])

    trainer(tmp_path / "warm-up").predict(task, DataLoader(torch.utils.data.Subset(_Images(), range(16)), batch_size=8))
    trainer = trainer(tmp_path)  # measured after a first run, so that what Lightning imports lazily is not counted
    loader = DataLoader(_Images(), batch_size=8)
    total = len(_Images()) * _maps(np.arange(1), side=64).nbytes
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        returned = trainer.predict(task, loader)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert returned is None and trainer.predict_loop.predictions == []
    assert peak < total / 4, f"peak {peak} bytes while predicting {total} bytes of maps"
    saved = load_predictions(tmp_path / "predictions.npz")
    assert saved.ids.tolist() == [f"img{i:04d}" for i in range(480)]
    np.testing.assert_array_equal(saved.arrays["probs"][[0, 7, 479]], _maps(np.array([0, 7, 479]), side=64))
    mask = cv2.imread(str(tmp_path / "masks" / "img0007.png"), cv2.IMREAD_GRAYSCALE)
    expected = cv2.resize((_maps(np.array([7]), side=64)[0, 0] > 0.5).astype(np.uint8), (40, 48), interpolation=cv2.INTER_NEAREST)
    assert mask.shape == (48, 40) and ((mask > 0) == (expected > 0)).mean() > 0.97
    rows = {r.split(",")[0]: r.split(",")[1] for r in (tmp_path / "submission.csv").read_text().splitlines()[1:]}
    assert len(rows) == 480
    np.testing.assert_array_equal(rle_decode(rows["img0007"], (48, 40), order="C"), mask > 0)


def _seg_predictions(tmp_path, name: str, scale: float, ids: list[str]) -> Predictions:
    probs = (_maps(np.arange(len(ids))).astype(np.float32) * scale).astype(np.float16)
    Predictions("seg", np.array(ids), {"probs": probs, "size": np.full((len(ids), 2), 32)},
                ["background", "object"], {"threshold": 0.5}).save(tmp_path / name)
    return load_predictions(tmp_path / name)


def test_chunked_ensemble_and_oof_equal_the_in_memory_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(stores, "CHUNK_BYTES", 4 << 10)
    ids = [f"i{k}" for k in range(10)]
    members = [_seg_predictions(tmp_path, f"m{k}.npz", s, ids) for k, s in enumerate((1.0, 0.5, 0.8))]
    for method in ("mean", "vote"):
        on_disk = SegmentationTask.combine(members, method, [2, 1, 1], store=tmp_path / f"rows-{method}")
        in_memory = SegmentationTask.combine(members, method, [2, 1, 1])
        assert isinstance(on_disk.arrays["probs"], DiskRows) and on_disk.arrays["probs"].dtype == np.float16
        np.testing.assert_allclose(on_disk.arrays["probs"][:], in_memory.arrays["probs"], atol=1e-3)
    folds = [members[0].take(np.arange(0, 10, 2)), members[1].take(np.arange(1, 10, 2))]
    order = ids[::-1] + ["missing"]
    stored, seen = gather_oof(order, folds, tmp_path / "oof-rows")
    plain, _ = gather_oof(order, folds)
    assert isinstance(stored.arrays["probs"], DiskRows) and seen.tolist() == [1] * 10 + [0]
    np.testing.assert_array_equal(stored.arrays["probs"][:10], plain.arrays["probs"][:10])
    np.testing.assert_array_equal(stored.arrays["probs"][[9, 8]], np.stack([members[0].arrays["probs"][0], members[1].arrays["probs"][1]]))
    assert np.isnan(stored.arrays["probs"][10].astype(np.float32)).all()


def test_a_row_of_another_shape_is_refused_and_strings_of_any_length_are_kept(tmp_path):
    writer = RowWriter(tmp_path)
    writer.append("probs", np.zeros((2, 1, 4, 4), np.float16))
    with pytest.raises(ValueError, match="rows of shape"):
        writer.append("probs", np.zeros((2, 1, 4, 5), np.float16))
    writer.append("id", np.array(["a", "b"]))
    writer.append("id", np.array(["a_much_longer_id"]))
    assert writer.close()["id"].tolist() == ["a", "b", "a_much_longer_id"]
    assert stores.gather_rows([np.zeros((0, 3))], np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (0, 3)


def test_mask_scores_and_tuning_read_stored_maps_a_chunk_at_a_time(tmp_path, monkeypatch):
    """Out-of-fold Dice, foreground shares, the report's per-image overlaps and the tuned post-processing of
    maps stored on disk: read a few images at a time, and equal to the same formulas on the whole arrays."""
    from lightning_cv.predictions.postprocess import pair_dice
    from lightning_cv.tasks.seg_multilabel import MultiLabelSegmentationTask
    from lightning_cv.tasks.segmentation import overlaps

    monkeypatch.setattr(stores, "CHUNK_BYTES", 4 << 10)          # 2-4 of these 12 images per read
    largest = []
    read = DiskRows.read
    monkeypatch.setattr(DiskRows, "read", lambda self, positions: largest.append(len(self._positions(positions))) or read(self, positions))
    rng = np.random.default_rng(0)
    targets = np.zeros((12, 2, 16, 16), np.uint8)
    for i in range(12):                                         # a block per class, absent from some images
        if i % 3:
            targets[i, 0, i % 8:i % 8 + 6, 2:8] = 1
        if i % 4:
            targets[i, 1, 8:12, i % 6:i % 6 + 5] = 1
    probs = np.clip(targets * 0.55 + rng.uniform(0, 0.4, targets.shape), 0, 1).astype(np.float16)
    probs[0, 1, :2, :2] = 0.95                                   # a speck where class b is absent
    ids = np.array([f"i{k}" for k in range(12)])
    size = np.full((12, 2), 16)

    meta = {"threshold": [0.4, 0.6], "min_area": [0, 8]}
    Predictions("seg-multilabel", ids, {"probs": probs, "size": size}, ["a", "b"], meta, targets).save(tmp_path / "ml.npz")
    stored = load_predictions(tmp_path / "ml.npz")
    assert isinstance(stored.arrays["probs"], DiskRows)
    scores = MultiLabelSegmentationTask.score(stored)
    above = probs.astype(np.float32) > np.array([0.4, 0.6], np.float32)[None, :, None, None]
    decided = above & (above.reshape(12, 2, -1).sum(-1) >= np.array([0, 8]))[:, :, None, None]
    assert scores["dice_pairs"] == pytest.approx(pair_dice(decided, targets).mean())
    assert scores["dice_pairs_raw"] == pytest.approx(pair_dice(probs.astype(np.float32) > 0.5, targets).mean())
    shares = MultiLabelSegmentationTask.oof_columns(stored)
    np.testing.assert_allclose(shares["share_b"], (probs[:, 1] > 0.5).reshape(12, -1).mean(-1).round(4))
    in_memory = Predictions("seg-multilabel", ids, {"probs": probs, "size": size}, ["a", "b"], meta, targets)
    whole = MultiLabelSegmentationTask.class_masks(in_memory, 1)         # the report's per-image statistics
    for key, values in MultiLabelSegmentationTask.class_overlaps(stored)[1].items():
        np.testing.assert_array_equal(values, overlaps(*whole)[key])
    tuned_meta, report = MultiLabelSegmentationTask.tune(stored, tmp_path)
    assert report["dice_pairs_tuned"] >= report["dice_pairs_raw"] == pytest.approx(scores["dice_pairs_raw"])
    assert MultiLabelSegmentationTask.score(stored.with_meta(**tuned_meta))["dice_pairs"] == pytest.approx(report["dice_pairs_tuned"])

    binary = probs[:, 1:].copy()                                 # one sigmoid channel: class b as foreground
    Predictions("seg", ids, {"probs": binary, "size": size}, ["background", "b"], {"threshold": 0.5},
                targets[:, 1]).save(tmp_path / "seg.npz")
    stored = load_predictions(tmp_path / "seg.npz")
    pred, truth = binary[:, 0].astype(np.float32) > 0.5, targets[:, 1] > 0
    inter, total = (pred & truth).sum(), pred.sum() + truth.sum()
    assert SegmentationTask.score(stored) == pytest.approx({"dice": 2 * inter / total, "iou": inter / (total - inter)})
    np.testing.assert_allclose(SegmentationTask.oof_columns(stored)["foreground_share"], pred.reshape(12, -1).mean(-1).round(4))
    assert largest and max(largest) < 12


def test_scratch_directories_beside_one_file_are_each_process_own(tmp_path):
    """Two gatherings into one CV directory (cluster jobs) get different scratch directories, made with
    their parent, so neither removes the other's rows; each is removed after its block."""
    with stores.scratch_dir(tmp_path / "cv", "oof-rows") as first, stores.scratch_dir(tmp_path / "cv", "oof-rows") as second:
        assert first != second and first.is_dir() and second.is_dir() and first.parent == tmp_path / "cv"
        assert first.name.startswith(".oof-rows-")
        (first / "probs.npy").write_bytes(b"rows")
    assert not first.exists() and not second.exists() and list((tmp_path / "cv").iterdir()) == []
