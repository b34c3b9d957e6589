"""ONNX export: onnxruntime matches PyTorch for every task, with dynamic batch (and size where declared)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import onnx
import pytest
import torch
from specs import ROOT, SPECS

from lightning_cv.cli import main
from lightning_cv.commands.export import export_onnx, max_abs_difference, sample_inputs
from lightning_cv.tasks import ClassificationTask

# One export per task class: specs sharing a class (cls, mnist) test the same code.
ONE_SPEC_PER_TASK = list({type(spec.make_module()).__name__: spec for spec in reversed(SPECS)}.values())


def _input_dims(path: Path) -> list:
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


@pytest.mark.parametrize("spec", ONE_SPEC_PER_TASK, ids=lambda s: s.name)
def test_export_matches_eager(spec, tmp_path):
    task = spec.make_module().eval()
    out = export_onnx(task, tmp_path / "model.onnx")
    dims = _input_dims(out)
    assert isinstance(dims[0], str), f"batch should be dynamic, got {dims}"
    assert isinstance(dims[2], str) == task.dynamic_spatial and isinstance(dims[3], str) == task.dynamic_spatial
    inputs = sample_inputs(task)
    assert {x.shape[0] for x in inputs} >= {1, 3}
    assert max_abs_difference(task, out, inputs) < 1e-4


def _checkpoint(path: Path) -> ClassificationTask:
    """A checkpoint as Lightning writes it, from one optimisation step."""
    task = ClassificationTask(num_classes=3, backbone="small_cnn", image_size=32, class_names=["a", "b", "c"])
    images, targets = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    loader = torch.utils.data.DataLoader([{"image": i, "target": t} for i, t in zip(images, targets)], batch_size=4)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=path.parent)
    trainer.fit(task, loader)
    trainer.save_checkpoint(path)
    return task


def test_export_command_from_checkpoint(tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "last.ckpt"
    trained = _checkpoint(ckpt).eval()
    out = tmp_path / "onnx" / "model.onnx"
    # Checkpoints from plain Lightning do not name their class: the training config does.
    main(["export", "--config", str(ROOT / "configs" / "cls.yaml"), "--ckpt_path", str(ckpt), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "max abs difference" in printed and out.is_file()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["class_names"]) == ["a", "b", "c"] and json.loads(meta["input_size"]) == [32, 32]
    # The exported weights are the trained ones (small_cnn from the checkpoint, not the config's resnet18).
    import onnxruntime as ort

    x = torch.rand(2, 3, 32, 32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, trained(x).numpy(), atol=1e-4)

    # The torch-free example script reads the same file.
    image = tmp_path / "im.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` in the script fails
    monkeypatch.setattr(sys, "argv", ["onnx_predict.py", str(out), str(image)])
    runpy.run_path(str(ROOT / "examples" / "onnx_predict.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == ["a", "b", "c"]
    assert abs(sum(float(line.split("\t")[1]) for line in lines) - 1) < 1e-3


def test_export_needs_a_class(tmp_path, capsys):
    ckpt = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"num_classes": 3}}, ckpt)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", str(ckpt), "--out", str(tmp_path / "m.onnx")])
    assert exit_info.value.code == 2
    assert "--config" in capsys.readouterr().err
