"""Contract tests every task passes, driven by the registry in tests/specs.py."""

from __future__ import annotations

import copy

import pytest
import torch
from specs import SPECS

pytestmark = pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])


def _optimizer(module):
    configured = module.configure_optimizers()
    return configured["optimizer"] if isinstance(configured, dict) else configured


def test_forward_shape_and_example_input(spec):
    module = spec.make_module().eval()
    batch = spec.make_batch(4)
    with torch.no_grad():
        out = module(batch["image"])
        example = module(module.example_input_array)
    assert tuple(out.shape) == spec.output_shape(4)
    assert torch.isfinite(out).all()
    assert example.shape[0] == module.example_input_array.shape[0]


def test_one_step_lowers_loss_on_a_tiny_batch(spec):
    torch.manual_seed(0)
    module = spec.make_module().train()
    batch = spec.make_batch(4)
    optimizer = _optimizer(module)
    with torch.no_grad():
        before = module.compute_loss(module.eval()(batch["image"]), batch).item()
    module.train()
    for _ in range(5):
        optimizer.zero_grad()
        module.compute_loss(module(batch["image"]), batch).backward()
        optimizer.step()
    with torch.no_grad():
        after = module.compute_loss(module.eval()(batch["image"]), batch).item()
    assert after < before


def test_validation_metric_keys(spec):
    module = spec.make_module().eval()
    batch = spec.make_batch(4)
    with torch.no_grad():
        module._step(batch, "val")
    computed = module.val_metrics.compute()
    for key in spec.metric_keys:
        assert key in computed, f"{key} missing from {sorted(computed)}"
        assert torch.isfinite(torch.as_tensor(computed[key])).all()


def test_state_dict_round_trip(spec):
    module = spec.make_module().eval()
    clone = copy.deepcopy(module)
    for p in clone.parameters():
        p.data.add_(1.0)
    clone.load_state_dict(module.state_dict())
    batch = spec.make_batch(2)
    with torch.no_grad():
        torch.testing.assert_close(clone(batch["image"]), module(batch["image"]))


def test_param_groups_cover_every_parameter_once(spec):
    module = spec.make_module()
    grouped = [id(p) for g in module.parameter_groups() for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in module.model.parameters())


def test_non_finite_loss_names_the_step_and_images(spec):
    module = spec.make_module()
    batch = spec.make_batch(2)
    batch["image"] = batch["image"].clone()
    batch["image"][0] = float("nan")
    with pytest.raises(FloatingPointError, match="global step 0") as info:
        module._step(batch, "train")
    assert str(batch["id"][0]) in str(info.value)
