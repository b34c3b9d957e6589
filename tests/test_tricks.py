"""Training tricks on tiny generated data: mixup/cutmix, EMA, SWA, gradient accumulation, backbone
learning rate, class weights and the balanced sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from specs import ROOT
from timm.loss import SoftTargetCrossEntropy
from torch.nn import functional as F
from torch.utils.data import WeightedRandomSampler

from lightning_cv.cli import build_cli
from lightning_cv.data import ClassificationDataModule
from lightning_cv.data.base import CVDataModule
from lightning_cv.data.dataset import ImageDataset
from lightning_cv.errors import UserInputError
from lightning_cv.tasks import ClassificationTask
from lightning_cv.training.callbacks import EMA
from lightning_cv.training.trainer import Trainer


@pytest.fixture(scope="module")
def cls_data(data_root):
    from lightning_cv.data.demos import make_shapes

    root = data_root / "cls"
    if not (root / "train.csv").is_file():
        make_shapes(root, n_train=40, n_test=8, size=(32, 32), seed=1)
    return root


# timm's tiny test model, with BatchNorm (whose statistics EMA and SWA must carry too): fast on a shared CPU.
BACKBONE = "test_resnet"


def _common(data_dir) -> list[str]:
    return ["--config", str(ROOT / "configs/cls.yaml"), "--data.data_dir", str(data_dir), "--model.backbone", BACKBONE,
            "--data.image_size", "32", "--data.batch_size", "8", "--trainer.limit_val_batches", "1",
            "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _batch(n: int, classes: int = 3) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(n, 3, 32, 32, generator=g), "target": torch.arange(n) % classes,
            "id": [f"im{i}.png" for i in range(n)], "index": torch.arange(n)}


def _trainer(tmp_path, **kwargs) -> Trainer:
    defaults = dict(max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=str(tmp_path), precision="32-true")
    return Trainer(**{**defaults, **kwargs})


# -- mixup / cutmix ------------------------------------------------------------------------------------
def test_mixup_mixes_images_and_smoothed_targets_alike():
    module = ClassificationTask(num_classes=3, backbone=BACKBONE, image_size=32, mixup_alpha=0.4, label_smoothing=0.1)
    batch = _batch(6)
    original = batch["image"].clone()
    np.random.seed(0)
    mixed = module.mix(batch)
    off, on = 0.1 / 3, 0.9 + 0.1 / 3
    onehot = F.one_hot(batch["target"], 3).float() * (on - off) + off
    lam = (mixed["soft_target"][0, batch["target"][0]] - off) / (on - off)  # rows 0 and 5 hold other classes
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(mixed["image"], lam * original + (1 - lam) * original.flip(0))
    torch.testing.assert_close(mixed["soft_target"], lam * onehot + (1 - lam) * onehot.flip(0))
    torch.testing.assert_close(mixed["soft_target"].sum(1), torch.ones(6))
    assert torch.equal(batch["image"], original)  # the loader's batch is left alone


def test_mixup_odd_batch_keeps_its_last_image_unmixed():
    module = ClassificationTask(num_classes=3, backbone=BACKBONE, image_size=32, cutmix_alpha=1.0)
    batch = _batch(5)
    np.random.seed(0)
    with pytest.warns(UserWarning, match="batch of 5 images is odd"):
        mixed = module.mix(batch)
    assert torch.equal(mixed["image"][4], batch["image"][4])
    assert torch.equal(mixed["soft_target"][4], F.one_hot(batch["target"][4], 3).float())
    assert not torch.equal(mixed["image"][:4], batch["image"][:4])


def test_mixup_trains_on_timm_soft_target_loss_and_validates_on_labels():
    module = ClassificationTask(num_classes=3, backbone=BACKBONE, image_size=32, mixup_alpha=0.4, cutmix_alpha=1.0)
    batch = _batch(6)
    module.train()
    np.random.seed(3)
    loss = module.training_step(batch, 0)["loss"]
    np.random.seed(3)
    mixed = module.mix(batch)
    torch.testing.assert_close(loss, SoftTargetCrossEntropy()(module(mixed["image"]), mixed["soft_target"]))
    module.eval()
    with torch.no_grad():
        module.validation_step(batch, 0)
        expected = F.cross_entropy(module(batch["image"]), batch["target"])
    torch.testing.assert_close(module.val_loss.compute(), expected)


def test_mixup_refuses_an_odd_batch_size(cls_data, tmp_path):
    datamodule = ClassificationDataModule(str(cls_data), image_size=32, batch_size=7)
    module = ClassificationTask(num_classes=5, class_names=datamodule.class_names, backbone=BACKBONE, image_size=32,
                                mixup_alpha=0.2)
    with pytest.raises(UserInputError, match="even batch size; --data.batch_size is 7"):
        _trainer(tmp_path, enable_checkpointing=False).fit(module, datamodule)


# -- EMA, gradient accumulation -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ema_run(cls_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ema")
    # 32-true as the re-validation below: `auto` would fit in bf16-mixed on a CPU with native bf16.
    cli = build_cli(["fit", *_common(cls_data), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4",
                     "--trainer.accumulate_grad_batches", "2", "--trainer.default_root_dir", str(run_dir),
                     "--trainer.callbacks+=lightning_cv.training.callbacks.EMA", "--trainer.callbacks.decay", "0.5",
                     "--trainer.precision", "32-true"])
    return cli, run_dir / "checkpoints" / "last.ckpt"


def test_ema_from_the_command_line_is_validated_and_checkpointed(ema_run, tmp_path):
    cli, last = ema_run
    [ema] = [c for c in cli.trainer.callbacks if isinstance(c, EMA)]
    assert ema.decay == 0.5
    # 4 batches accumulated in pairs: 2 optimizer steps, one EMA update after each.
    assert cli.trainer.global_step == 2 and ema._latest_update_step == 2
    checkpoint = torch.load(last, weights_only=True)
    average, training = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(average[k], training[k]) for k in average if average[k].is_floating_point())
    assert all(torch.equal(cli.model.state_dict()[k], v) for k, v in average.items())  # fit ends on the average

    # The logged validation loss is the average's; the training weights score another.
    logged = float(cli.trainer.callback_metrics["val/loss"])
    restored = ClassificationTask.load_from_checkpoint(last, weights_only=True)
    trainer = _trainer(tmp_path, enable_checkpointing=False)
    assert trainer.validate(restored, datamodule=cli.datamodule, verbose=False)[0]["val/loss"] == pytest.approx(logged, rel=1e-5)
    restored.load_state_dict(training)
    assert trainer.validate(restored, datamodule=cli.datamodule, verbose=False)[0]["val/loss"] != pytest.approx(logged, rel=1e-5)


def test_ema_resume_restores_the_training_weights_and_the_average(ema_run, cls_data, tmp_path):
    """`fit --ckpt_path last` with the EMA: the module trains on from the training weights, the average
    from the checkpoint's (one more optimizer step moves both)."""
    _, last = ema_run
    checkpoint = torch.load(last, weights_only=True)
    cli = build_cli(["fit", *_common(cls_data), "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
                     "--trainer.accumulate_grad_batches", "2", "--trainer.default_root_dir", str(tmp_path),
                     "--trainer.callbacks+=lightning_cv.training.callbacks.EMA", "--trainer.callbacks.decay", "0.5",
                     "--trainer.precision", "32-true", "--ckpt_path", str(last)])
    [ema] = [c for c in cli.trainer.callbacks if isinstance(c, EMA)]
    assert cli.trainer.global_step == 3 and ema._latest_update_step == 3
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    # average_3 = 0.5 * average_2 + 0.5 * weights_3 for every averaged float parameter
    for name, before in checkpoint["state_dict"].items():
        if before.is_floating_point() and "num_batches" not in name:
            expected = 0.5 * before + 0.5 * resumed["current_model_state"][name]
            assert torch.allclose(resumed["state_dict"][name], expected, atol=1e-6), name


def test_ema_warmup_ramps_the_decay():
    from lightning_cv.training.callbacks import _ramped_ema

    average, current = torch.zeros(1), torch.ones(1)
    assert _ramped_ema(average, current, torch.tensor(1), decay=0.99).item() == pytest.approx(2**-0.75)
    assert _ramped_ema(average, current, torch.tensor(10**6), decay=0.99).item() == pytest.approx(0.01)


# -- SWA -------------------------------------------------------------------------------------------------
def test_swa_from_the_command_line_with_the_cls_scheduler_and_checkpoints(cls_data, tmp_path):
    from torch.optim.swa_utils import SWALR

    cli = build_cli(["fit", *_common(cls_data), "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "1",
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.callbacks+=StochasticWeightAveraging",
                     "--trainer.callbacks.swa_lrs", "1e-3", "--trainer.callbacks.swa_epoch_start", "0.5"])
    [swa] = [c for c in cli.trainer.callbacks if type(c).__name__ == "StochasticWeightAveraging"]
    assert isinstance(cli.trainer.lr_scheduler_configs[0].scheduler, SWALR)  # replaced the config's cosine schedule
    assert cli.trainer.current_epoch == 3  # Lightning adds one epoch to recompute the BatchNorm statistics
    assert swa.n_averaged == 2  # swa_epoch_start 0.5 of 2 epochs: both averaged
    average = dict(swa._average_model.named_parameters())
    assert all(torch.equal(p, average[k]) for k, p in cli.model.named_parameters())
    # last.ckpt is written after the extra epoch: the average with its BatchNorm statistics.
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(state[k], v) for k, v in cli.model.state_dict().items())


# -- learning rates ------------------------------------------------------------------------------------
def test_backbone_lr_scale_scales_every_backbone_group_only():
    module = ClassificationTask(num_classes=3, backbone=BACKBONE, image_size=32, backbone_lr_scale=0.1)
    optimizer = module.configure_optimizers()
    head = {id(p) for p in module.head.parameters()}
    seen = []
    for group in optimizer.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1
        assert group["lr"] == pytest.approx(1e-3 if in_head.pop() else 1e-4)
        seen += [id(p) for p in group["params"]]
    assert sorted(seen) == sorted(id(p) for p in module.model.parameters())


# -- class imbalance -----------------------------------------------------------------------------------
def test_explicit_class_weights_weight_the_loss():
    module = ClassificationTask(num_classes=3, backbone=BACKBONE, image_size=32, class_weights=[1.0, 2.0, 0.5]).eval()
    batch = _batch(6)
    with torch.no_grad():
        outputs = module(batch["image"])
        expected = F.cross_entropy(outputs, batch["target"], weight=torch.tensor([1.0, 2.0, 0.5]))
        torch.testing.assert_close(module.compute_loss(outputs, batch), expected)
    with pytest.raises(UserInputError, match="2 weights given for 3 classes"):
        ClassificationTask(num_classes=3, backbone=BACKBONE, class_weights=[1.0, 2.0])


def test_checkpoints_without_class_weights_still_load_strictly():
    state = ClassificationTask(num_classes=3, backbone=BACKBONE).state_dict()
    del state["criterion.weight"]
    module = ClassificationTask(num_classes=3, backbone=BACKBONE, class_weights=[1.0, 2.0, 0.5])
    module.on_load_checkpoint({"state_dict": state, "hyper_parameters": {"num_classes": 3}})
    module.load_state_dict(state, strict=True)
    assert torch.equal(module.criterion.weight, torch.ones(3))


def test_balanced_weights_and_sampler_fit_and_round_trip(cls_data, tmp_path):
    datamodule = ClassificationDataModule(str(cls_data), image_size=32, batch_size=8, sampler="balanced")
    module = ClassificationTask(num_classes=5, class_names=datamodule.class_names, backbone=BACKBONE, image_size=32,
                                class_weights="balanced", mixup_alpha=0.2)
    trainer = _trainer(tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path, filename="last")])
    trainer.fit(module, datamodule)
    assert isinstance(trainer.train_dataloader.sampler, WeightedRandomSampler)

    targets = datamodule.train_targets()
    counts = np.bincount(targets, minlength=5)
    assert counts.max() >= 2 * counts.min()  # the demo's classes are imbalanced
    expected = torch.tensor(len(targets) / (5 * counts), dtype=torch.float32)
    torch.testing.assert_close(module.criterion.weight, expected)
    restored = ClassificationTask.load_from_checkpoint(tmp_path / "last.ckpt", weights_only=True)  # strict
    torch.testing.assert_close(restored.criterion.weight, expected)

    # Drawn with replacement, each class about equally often (the data: 34% to 10%).
    sampler = datamodule.balanced_sampler()
    draws = targets[np.concatenate([list(sampler) for _ in range(10)])]
    assert len(sampler) == len(targets)
    shares = np.bincount(draws, minlength=5) / len(draws)
    assert shares.min() > 0.12 and shares.max() < 0.28, shares


def test_ddp_wraps_the_balanced_sampler(cls_data):
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
    from lightning.pytorch.trainer.states import RunningStage

    datamodule = ClassificationDataModule(str(cls_data), image_size=32, batch_size=8)
    datamodule.sampler = "balanced"
    datamodule.setup("fit")
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, precision="32-true")
    sampler = trainer._data_connector._resolve_sampler(datamodule.train_dataloader(), shuffle=True,
                                                       mode=RunningStage.TRAINING)
    assert isinstance(sampler, DistributedSamplerWrapper) and sampler.num_replicas == 2
    assert len(sampler) == len(datamodule.datasets["train"]) // 2  # each rank draws its half of len(train)


def test_class_balance_needs_single_label_targets():
    datamodule = CVDataModule()
    datamodule.datasets["train"] = ImageDataset(["a.png", "b.png"], targets=[0, 1])
    datamodule.datasets["train"].targets = np.array([[1, 0], [1, 1]])  # multi-label (one row of tags per image)
    with pytest.raises(UserInputError, match="no single-label class targets"):
        datamodule.train_targets()
    with pytest.raises(UserInputError, match="sampler"):
        CVDataModule(sampler="weighted")


# -- gradient checkpointing ----------------------------------------------------------------------------
def test_grad_checkpointing_gives_the_same_gradients():
    """timm backbones and smp `tu-` encoders recompute activations in backward: same gradients; an encoder
    without support is a one-line error."""
    from lightning_cv.tasks.segmentation import SegmentationTask

    builds = (lambda gc: ClassificationTask(num_classes=3, backbone=BACKBONE, image_size=32, grad_checkpointing=gc),
              lambda gc: SegmentationTask(num_classes=2, encoder="tu-resnet10t", image_size=32, grad_checkpointing=gc))
    for build in builds:
        plain, checkpointed = build(False).train(), build(True).train()
        checkpointed.load_state_dict(plain.state_dict())
        flags = [m.grad_checkpointing for m in checkpointed.model.modules() if hasattr(m, "set_grad_checkpointing")]
        assert flags and all(flags)
        images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        for module in (plain, checkpointed):
            module.model(images).float().square().mean().backward()
        for a, b in zip(plain.model.parameters(), checkpointed.model.parameters()):
            assert b.grad is not None and torch.allclose(a.grad, b.grad, atol=1e-6)
    with pytest.raises(UserInputError, match="resnet18 does not support gradient checkpointing"):
        SegmentationTask(num_classes=2, encoder="resnet18", image_size=32, grad_checkpointing=True)
