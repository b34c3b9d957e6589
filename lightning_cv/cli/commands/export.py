"""`lightning-cv export`: a trained checkpoint to ONNX, checked against PyTorch with onnxruntime.

The exported graph is the task's `forward`: [0, 1] RGB float images (N, C, H, W) in, raw outputs
(logits, box values) out; normalisation is inside, activations are not. The batch is dynamic, and so
are height and width for tasks that say `dynamic_spatial = True` (segmentation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_cv.errors import UserInputError
from lightning_cv.tasks.base import CVTask
from lightning_cv.tasks.checkpoints import checkpoint_recipe, load_task


def _size_divisor(height: int, width: int) -> int:
    """The largest of 32/16/8 dividing the example size: encoder-decoder models need such multiples."""
    return next((d for d in (32, 16, 8) if height % d == 0 and width % d == 0), 1)


def export_onnx(task: CVTask, out: Path, data_options: dict[str, Any] | None = None) -> Path:
    """Write `task.forward` as a single-file ONNX model with a dynamic batch (and size, if the task says so);
    `data_options` (the checkpoint's data recipe: image size, RLE order ...) go into its metadata."""
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
    _write_metadata(task, out, example, data_options or {})
    return out


def _write_metadata(task: CVTask, out: Path, example: torch.Tensor, data_options: dict[str, Any]) -> None:
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
        # How the images were read and the submission written in training (resize, channels, RLE order ...).
        "data_options": json.dumps(data_options, default=str),
        # The task's decisions (e.g. multi-label thresholds), as `predict` would save them.
        **{key: json.dumps(value) for key, value in task.prediction_meta(None).items()},
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
    recipe = checkpoint_recipe(ckpt_path)
    out = export_onnx(task, Path(out), recipe["data"]["init_args"] if recipe else None)
    print(f"exported {type(task).__name__} to {out} ({out.stat().st_size / 1e6:.1f} MB)")
    if check:
        inputs = sample_inputs(task)
        diff = max_abs_difference(task, out, inputs)
        shapes = ", ".join("x".join(map(str, x.shape)) for x in inputs)
        print(f"onnxruntime vs PyTorch on inputs {shapes}: max abs difference {diff:.2e}")
        if not diff <= atol:
            raise UserInputError(f"ONNX outputs differ from PyTorch by {diff:.2e} > --atol {atol}: do not deploy {out}")
    return out
