"""Hierarchical labels: a coarse-group head beside the class head, combined as p(class | group) x p(group)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.nn import functional as F

from lightning_cv.data import ClassificationDataModule
from lightning_cv.errors import UserInputError
from lightning_cv.tasks import ClassificationTask
from lightning_cv.tasks.checkpoints import load_task
from lightning_cv.training.trainer import Trainer

CLASSES = ["a", "b", "c", "d", "e"]
GROUPS = {"odd": ["a", "c", "e"], "even": ["b", "d"]}


def _module(**kwargs) -> ClassificationTask:
    return ClassificationTask(num_classes=5, class_names=CLASSES, backbone="test_resnet", image_size=32, groups=GROUPS, **kwargs)


def _batch(n: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(n, 3, 32, 32, generator=g), "target": torch.arange(n) % 5, "id": [str(i) for i in range(n)]}


def _heads(module: ClassificationTask, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return module.model.heads((images - module.mean) / module.std)


@pytest.mark.parametrize("backbone", ["test_resnet", "small_cnn"])
def test_combined_probabilities_are_class_given_group_times_group(backbone):
    in_chans = 1 if backbone == "small_cnn" else 3
    module = ClassificationTask(num_classes=5, in_chans=in_chans, class_names=CLASSES, backbone=backbone, groups=GROUPS).eval()
    images = torch.rand(4, in_chans, 32, 32)
    with torch.no_grad():
        out = module(images)
        fine, coarse = _heads(module, images)
    assert out.shape == (4, 5)  # one tensor of log-probabilities, as exported
    probs = out.exp()
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    group_probs = coarse.softmax(1)
    for g, names in enumerate(GROUPS.values()):
        members = [CLASSES.index(n) for n in names]
        expected = fine[:, members].softmax(1) * group_probs[:, g : g + 1]
        torch.testing.assert_close(probs[:, members], expected)
    # Predictions are probabilities over the classes.
    predicted = module.predict_step({"image": images, "id": list("wxyz")}, 0)["probs"]
    torch.testing.assert_close(predicted, probs)


@pytest.mark.parametrize(("groups", "message"), [
    ({"odd": ["a", "c"], "even": ["b", "d"]}, "class 'e' is in no group"),
    ({"odd": ["a", "c", "e"], "even": ["b", "d", "a"]}, "class 'a' is in two groups, 'odd' and 'even'"),
    ({"odd": ["a", "c", "e", "z"], "even": ["b", "d"]}, "'z' \\(group 'odd'\\) is not a class"),
    ({}, "--model.groups is empty"),
])
def test_every_class_in_exactly_one_group(groups, message):
    with pytest.raises(UserInputError, match=message) as err:
        ClassificationTask(num_classes=5, class_names=CLASSES, backbone="small_cnn", groups=groups)
    assert "\n" not in str(err.value)


def test_loss_is_class_plus_weighted_group_cross_entropy():
    module = _module(coarse_weight=0.5, label_smoothing=0.1).train()
    batch = _batch(6)
    outputs = module(batch["image"])
    assert outputs.shape == (6, 5 + 2)  # training: raw class and group logits side by side
    fine, coarse = outputs[:, :5], outputs[:, 5:]
    group_of = torch.tensor([0, 1, 0, 1, 0])
    expected = (F.cross_entropy(fine, batch["target"], label_smoothing=0.1)
                + 0.5 * F.cross_entropy(coarse, group_of[batch["target"]], label_smoothing=0.1))
    torch.testing.assert_close(module.compute_loss(outputs, batch), expected)


def test_mixup_mixes_the_group_targets_too():
    module = _module(mixup_alpha=0.4).train()
    batch = _batch(6)
    np.random.seed(0)
    mixed = module.mix(batch)
    outputs = module(mixed["image"])
    soft = mixed["soft_target"]
    soft_groups = torch.stack([soft[:, [0, 2, 4]].sum(1), soft[:, [1, 3]].sum(1)], dim=1)
    expected = F.cross_entropy(outputs[:, :5], soft) + F.cross_entropy(outputs[:, 5:], soft_groups)
    torch.testing.assert_close(module.compute_loss(outputs, mixed), expected)


def test_coarse_head_trains_at_the_head_learning_rate():
    torch.manual_seed(0)
    module = _module(backbone_lr_scale=0.1).train()
    batch = _batch(10)
    group_target = torch.tensor([0, 1, 0, 1, 0])[batch["target"]]
    optimizer = module.configure_optimizers()
    coarse_ids = {id(p) for p in module.model.coarse.parameters()}
    assert all(g["lr"] == pytest.approx(1e-3) for g in optimizer.param_groups if coarse_ids & {id(p) for p in g["params"]})
    before_weight = module.model.coarse.weight.detach().clone()

    def coarse_loss() -> float:
        with torch.no_grad():  # in training mode (batch statistics), as the steps see the batch
            return F.cross_entropy(_heads(module, batch["image"])[1], group_target).item()

    before = coarse_loss()
    for _ in range(8):
        optimizer.zero_grad()
        module.compute_loss(module(batch["image"]), batch).backward()
        optimizer.step()
    assert coarse_loss() < before
    assert not torch.equal(module.model.coarse.weight, before_weight)


def test_fit_logs_coarse_accuracy_and_checkpoints_round_trip(data_root, tmp_path):
    from lightning_cv.data.demos import make_shapes

    root = data_root / "cls"
    if not (root / "train.csv").is_file():
        make_shapes(root, n_train=40, n_test=8, size=(32, 32), seed=1)
    datamodule = ClassificationDataModule(str(root), image_size=32, batch_size=8)
    groups = {"round": ["circle"], "pointed": ["square", "triangle", "star"], "crossed": ["cross"]}
    module = ClassificationTask(num_classes=5, class_names=datamodule.class_names, backbone="test_resnet", image_size=32,
                                groups=groups)
    trainer = Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), precision="32-true",
                      callbacks=[ModelCheckpoint(dirpath=tmp_path, filename="last")])
    trainer.fit(module, datamodule)
    assert 0.0 <= float(trainer.callback_metrics["val/coarse_acc"]) <= 1.0
    assert {"val/acc", "val/loss"} <= set(trainer.callback_metrics)

    module.eval()
    x = module.example_input_array
    restored = ClassificationTask.load_from_checkpoint(tmp_path / "last.ckpt", weights_only=True).eval()
    config = tmp_path / "config.yaml"  # as `fit` writes it (a plain Trainer's checkpoint does not name its class)
    config.write_text("model:\n  class_path: lightning_cv.tasks.ClassificationTask\n")
    exported = load_task(tmp_path / "last.ckpt", config)  # what `export` rebuilds from the hyperparameters
    with torch.no_grad():
        torch.testing.assert_close(restored(x), module(x))
        torch.testing.assert_close(exported(x), module(x))
    assert restored.groups == groups
