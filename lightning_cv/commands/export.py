"""`lightning-cv export`: a trained checkpoint to ONNX, checked against PyTorch with onnxruntime.

The exported graph is the task's `forward`: [0, 1] RGB float images (N, C, H, W) in, raw outputs
(logits, box values) out; normalisation is inside, activations are not. The batch is dynamic, and so
are height and width for tasks that say `dynamic_spatial = True` (segmentation).
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lightning_cv.errors import MissingFileError, UserInputError
from lightning_cv.tasks.base import CVTask

# Hyperparameters that would fetch or read pretrained weights: the checkpoint already holds the weights.
OFFLINE_OVERRIDES = {"pretrained": False, "weights": None, "encoder_weights": None}
NOT_MODEL_ARGS = ("optimizer", "scheduler")


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise UserInputError(f"model class {class_path!r} cannot be imported ({err})") from None
    if not (inspect.isclass(cls) and issubclass(cls, CVTask)):
        raise UserInputError(f"model class {class_path!r} is not a lightning_cv task (CVTask subclass)")
    return cls


def _config_model(config: Path) -> tuple[str | None, dict[str, Any]]:
    """The model's class path and init args from a training config (the file given to `fit --config`)."""
    if not config.is_file():
        raise MissingFileError(f"--config: {config} does not exist")
    model = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
    if not isinstance(model, dict):
        raise UserInputError(f"--config {config}: `model` should be a mapping with class_path and init_args")
    return model.get("class_path"), dict(model.get("init_args") or {})


def load_task(ckpt_path: Path, config: Path | None = None) -> CVTask:
    """Rebuild a task from a checkpoint, in eval mode on the CPU, without fetching pretrained weights.

    The checkpoint's hyperparameters (written by `fit`, including the linked number of classes) win;
    the training config supplies the class and any argument the checkpoint lacks.
    """
    if not ckpt_path.is_file():
        raise MissingFileError(f"--ckpt_path: checkpoint {ckpt_path} does not exist")
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if "state_dict" not in checkpoint:
        raise UserInputError(f"{ckpt_path} is not a Lightning checkpoint (no state_dict)")
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    class_path, init_args = _config_model(config) if config else (None, {})
    class_path = hparams.get("_class_path") or class_path
    if not class_path:
        raise UserInputError(f"{ckpt_path} does not name its task class: pass the training config with --config")
    cls = _import(class_path)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", *NOT_MODEL_ARGS}
    kwargs = {k: v for k, v in {**init_args, **hparams}.items() if k in accepted}
    kwargs.update({k: v for k, v in OFFLINE_OVERRIDES.items() if k in accepted})
    task = cls(**kwargs)
    task.load_state_dict(checkpoint["state_dict"])
    return task.eval().cpu()


def _size_divisor(height: int, width: int) -> int:
    """The largest of 32/16/8 dividing the example size: encoder-decoder models need such multiples."""
    return next((d for d in (32, 16, 8) if height % d == 0 and width % d == 0), 1)


def export_onnx(task: CVTask, out: Path) -> Path:
    """Write `task.forward` as a single-file ONNX model with a dynamic batch (and size, if the task says so)."""
    example = task.example_input_array
    if example is None:
        raise UserInputError(f"{type(task).__name__} has no example_input_array to trace the export with")
    example = example.detach().float()
    if example.shape[0] < 2:  # a batch of 1 would be specialised to a constant by the exporter
        example = example.repeat(2, 1, 1, 1)
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=4096)}
    if task.dynamic_spatial:
        divisor = _size_divisor(*example.shape[-2:])
        # A dimension traced at 1 (x divisor) would be specialised to a constant, like a batch of 1.
        height, width = (max(side, 2 * divisor) for side in example.shape[-2:])
        if (height, width) != tuple(example.shape[-2:]):
            example = torch.rand(example.shape[0], example.shape[1], height, width, generator=torch.Generator().manual_seed(0))
        dims[2] = divisor * torch.export.Dim("height", min=1, max=16384 // divisor)
        dims[3] = divisor * torch.export.Dim("width", min=1, max=16384 // divisor)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            task.eval(), (example,), str(out), input_names=["images"], output_names=["outputs"],
            # optimize (the default) is needed: without it torch 2.14 can emit a graph that onnxruntime
            # rejects ("Duplicate definition of name (mean)": the normalisation buffer vs a pooling node).
            dynamic_shapes=(dims,), dynamo=True, external_data=False, optimize=True, verbose=False,
        )
    _write_metadata(task, out, example)
    return out


def _write_metadata(task: CVTask, out: Path, example: torch.Tensor) -> None:
    """What a torch-free runtime needs: input size, classes, and how to read the outputs."""
    import onnx

    model = onnx.load(str(out))
    onnx.helper.set_model_props(model, {
        "task": type(task).__name__,
        "class_names": json.dumps(list(getattr(task, "class_names", []))),
        "input_size": json.dumps(list(example.shape[-2:])),
        "in_chans": str(example.shape[1]),
        "dynamic_spatial": json.dumps(bool(task.dynamic_spatial)),
        "activation": task.activation,  # softmax: one class per image; sigmoid: independent tags
        "input": "float32 RGB in [0, 1], NCHW",
        **({"thresholds": json.dumps(task.label_thresholds.tolist())} if hasattr(task, "label_thresholds") else {}),
    })
    onnx.save(model, str(out))


def sample_inputs(task: CVTask, seed: int = 0) -> list[torch.Tensor]:
    """Inputs unlike the traced example: other batch sizes, and another size for dynamic-size tasks."""
    g = torch.Generator().manual_seed(seed)
    _, chans, height, width = task.example_input_array.shape
    shapes = [(1, chans, height, width), (3, chans, height, width)]
    if task.dynamic_spatial:
        d = _size_divisor(height, width)
        shapes.append((2, chans, height + 2 * d, width + d))
    return [torch.rand(*shape, generator=g) for shape in shapes]


def max_abs_difference(task: CVTask, onnx_path: Path, inputs: list[torch.Tensor]) -> float:
    """Largest |onnxruntime - PyTorch| over the inputs (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            expected = task(x).float().numpy()
            got = session.run(None, {name: x.numpy()})[0]
            if got.shape != expected.shape:
                raise AssertionError(f"ONNX output shape {got.shape} != PyTorch {expected.shape} for input {tuple(x.shape)}")
            worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export(
    ckpt_path: Path,
    config: Path | None = None,
    out: Path = Path("model.onnx"),
    check: bool = True,
    atol: float = 1e-3,
) -> Path:
    """Export a checkpoint to ONNX and check it against PyTorch with onnxruntime.

    Args:
        ckpt_path: a checkpoint written by `fit` (e.g. runs/cls/<time>/checkpoints/best-epoch007.ckpt).
        config: the training config; needed only for checkpoints that do not name their task class.
        out: the ONNX file to write (weights included, one file).
        check: compare onnxruntime and PyTorch outputs on random inputs of other batch sizes.
        atol: largest accepted absolute difference between the two.
    """
    task = load_task(Path(ckpt_path), Path(config) if config else None)
    out = export_onnx(task, Path(out))
    print(f"exported {type(task).__name__} to {out} ({out.stat().st_size / 1e6:.1f} MB)")
    if check:
        inputs = sample_inputs(task)
        diff = max_abs_difference(task, out, inputs)
        shapes = ", ".join("x".join(map(str, x.shape)) for x in inputs)
        print(f"onnxruntime vs PyTorch on inputs {shapes}: max abs difference {diff:.2e}")
        if not diff <= atol:
            raise UserInputError(f"ONNX outputs differ from PyTorch by {diff:.2e} > --atol {atol}: do not deploy {out}")
    return out
