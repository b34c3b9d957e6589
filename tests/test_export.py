"""ONNX export: onnxruntime matches PyTorch for every task, with dynamic batch (and size where declared)."""

from __future__ import annotations

import json
import re
import runpy
import sys
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from specs import ROOT, SPECS

from lightning_cv.cli import main
from lightning_cv.cli.commands.export import sample_inputs
from lightning_cv.tasks.checkpoints import load_task

# One export per task class (exports are slow): specs sharing a class (cls, mnist) test the same code.
ONE_SPEC_PER_TASK = list({type(spec.make_module()).__name__: spec for spec in reversed(SPECS)}.values())


def _save_checkpoint(task: torch.nn.Module, path: Path) -> None:
    """What export reads from a Lightning checkpoint: weights and hyperparameters (these without the
    `_class_path` LightningCLI adds, so the training config must name the class)."""
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                "pytorch-lightning_version": L.__version__}, path)


def _input_dims(path: Path) -> list:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


def _run_example(monkeypatch, capsys, *args: str) -> str:
    """examples/onnx_predict.py in-process, with any `import torch` failing."""
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(sys, "argv", ["onnx_predict.py", *args])
    runpy.run_path(str(ROOT / "examples" / "onnx_predict.py"), run_name="__main__")
    monkeypatch.delitem(sys.modules, "torch")
    return capsys.readouterr().out


# Classification and segmentation in the quick suite; the other heads with the slow one.
@pytest.mark.parametrize("spec", [s if s.name in ("cls", "seg") else pytest.param(s, marks=pytest.mark.slow)
                                  for s in ONE_SPEC_PER_TASK], ids=lambda s: s.name)
def test_export_command_matches_eager(spec, tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    trained = spec.make_module().eval()
    for p in trained.parameters():  # move away from the initialisation, as training would
        p.data.add_(0.01 * torch.randn_like(p))
    if hasattr(trained, "label_thresholds"):  # multi-label: tuned thresholds travel with the export
        trained.label_thresholds.copy_(torch.linspace(0.3, 0.7, trained.num_classes))
    ckpt, out = tmp_path / "last.ckpt", tmp_path / "onnx" / "model.onnx"
    _save_checkpoint(trained, ckpt)

    main(["export", "--config", str(ROOT / spec.config), "--ckpt_path", str(ckpt), "--out", str(out)])
    printed = capsys.readouterr().out
    diff = float(re.search(r"max abs difference (\S+)", printed).group(1))
    assert diff < 1e-3 and out.is_file()

    dims = _input_dims(out)
    assert isinstance(dims[0], str), f"batch should be dynamic, got {dims}"
    assert all(isinstance(dims[i], str) == trained.dynamic_spatial for i in (2, 3)), dims
    # The exported weights are the checkpoint's, whatever the config's backbone says.
    inputs = sample_inputs(trained, seed=1)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for x in inputs:
            np.testing.assert_allclose(session.run(None, {"images": x.numpy()})[0], trained(x).numpy(), atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["task"] == type(trained).__name__
    assert json.loads(meta["class_names"]) == list(trained.class_names)

    # The torch-free example reads the same file.
    image = tmp_path / "im.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    shown = _run_example(monkeypatch, capsys, str(out), str(image), "--out", str(tmp_path / "mask.png"))
    if trained.dynamic_spatial:
        assert cv2.imread(str(tmp_path / "mask.png"), cv2.IMREAD_GRAYSCALE).shape == (40, 56)
    elif meta["task"] == "BBoxCropTask":
        assert re.fullmatch(r"x=\S+ y=\S+ size=\S+\n", shown)
    elif meta["task"] == "DetectionTask":
        count, *lines = shown.splitlines()
        assert count == f"boxes: {len(lines)}" and all(re.fullmatch(r"\S+ [01]\.\d{4}( \S+){4}", line) for line in lines)
    else:
        lines = shown.splitlines()
        chosen = lines.pop(0).removeprefix("tags:").split() if meta["activation"] == "sigmoid" else None
        probs = {name: float(prob) for name, prob in (line.split("\t") for line in lines)}
        assert set(probs) <= set(trained.class_names) and len(probs) == min(5, trained.num_classes)
        if chosen is not None:  # multi-label: the tags above the exported per-tag thresholds
            thresholds = dict(zip(trained.class_names, json.loads(meta["thresholds"])))
            assert chosen == [n for n in trained.class_names if probs[n] > thresholds[n]]


def test_load_task_uses_checkpoint_hyperparameters(tmp_path):
    """Hyperparameters win over the config; pretrained weights are never fetched for an export."""
    from lightning_cv.tasks import ClassificationTask

    task = ClassificationTask(num_classes=3, backbone="small_cnn", image_size=32, class_names=["a", "b", "c"])
    task.hparams["pretrained"] = True  # as if trained from ImageNet weights: must not download now
    ckpt = tmp_path / "c.ckpt"
    _save_checkpoint(task, ckpt)
    loaded = load_task(ckpt, ROOT / "configs" / "cls.yaml")  # the config says resnet18
    assert isinstance(loaded, ClassificationTask) and loaded.class_names == ["a", "b", "c"]
    assert not loaded.training
    for key, value in task.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_export_needs_a_class(tmp_path, capsys):
    ckpt = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"num_classes": 3}}, ckpt)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "m.onnx")])
    assert exit_info.value.code == 2
    assert "--config" in capsys.readouterr().err
