"""Model factories by name: timm classifiers and feature extractors, smp segmentation models, with offline-safe weights."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from lightning_cv.errors import MissingFileError, UserInputError


class SmallCNN(nn.Module):
    """A four-conv CNN for MNIST-sized inputs, with timm's features/head interface."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 32, drop_rate: float = 0.1):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(in_chans, width), block(width, 2 * width))
        self.num_features = self.head_hidden_size = 2 * width
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.pretrained_cfg = {"mean": (0.5,) * in_chans, "std": (0.5,) * in_chans}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)


LOCAL_MODELS = {"small_cnn": SmallCNN}


def _check_name(name: str, known: list[str], what: str) -> None:
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise UserInputError(f"Unknown {what} {name!r}.{hint}")


def check_timm_name(name: str, what: str = "timm model") -> None:
    """A name `timm.create_model` takes: an architecture, with a pretrained tag (`resnet18.a1_in1k`: the tag
    picks the weights) or as `hf-hub:<repo>` (read from the Hugging Face hub); close matches otherwise."""
    if name.startswith("hf-hub:"):
        return
    arch, tag = timm.models.split_model_name_tag(name)
    _check_name(arch, timm.list_models(), what)
    if tag and name not in timm.list_pretrained(f"{arch}.*"):
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{arch}.*")]
        close = difflib.get_close_matches(tag, tags, n=5, cutoff=0.5) or tags[:8]
        raise UserInputError(f"Unknown pretrained tag {tag!r} for {what} {arch!r}. Its tags: {', '.join(close)}.")


def _hub_error(name: str, err: Exception) -> UserInputError:
    return UserInputError(
        f"{name!r} is read from the Hugging Face hub, which is not reachable ({type(err).__name__}); offline, name "
        "the model as timm does (e.g. resnet18.a1_in1k) and pass --model.weights PATH for its weights"
    )


def check_weights(weights: str | Path | None) -> str | None:
    """A local weights file's path (None stays None); a missing file is a MissingFileError naming it."""
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MissingFileError(f"--model.weights: weights file {path} does not exist")
    return str(path)


def _download_error(name: str, err: Exception) -> UserInputError:
    return UserInputError(
        f"Could not fetch pretrained weights for {name!r} ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
        "Offline? Download the weights once where there is network (timm / Hugging Face cache), then pass "
        "--model.weights PATH (a .pth or .safetensors file), or train from scratch with --model.pretrained false."
    )


def create_classifier(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    pretrained: bool = False,
    weights: str | Path | None = None,
    drop_rate: float = 0.0,
) -> nn.Module:
    """A timm (or local) classifier with a fresh `num_classes` head.

    `weights` is a local file of the backbone's pretrained weights (ImageNet etc.); the classifier
    and first conv are adapted by timm just as for a download.
    """
    if name in LOCAL_MODELS:
        if pretrained or weights:
            raise ValueError(f"{name!r} has no pretrained weights; use --model.pretrained false")
        return LOCAL_MODELS[name](num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
    return _timm_model(name, pretrained, weights, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)


def _timm_model(name: str, pretrained: bool, weights: str | Path | None, **kwargs: Any) -> nn.Module:
    """`timm.create_model(name, **kwargs)` from a local weights file, a download (a failed one: a one-line
    error naming the way out), or fresh weights."""
    check_timm_name(name)
    weights = check_weights(weights)
    if weights:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": weights}, **kwargs)
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ConnectionError) as err:
        if name.startswith("hf-hub:"):
            raise _hub_error(name, err) from err
        if not pretrained:
            raise
        raise _download_error(name, err) from err


def create_features(
    name: str,
    out_indices: tuple[int, ...],
    in_chans: int = 3,
    pretrained: bool = False,
    weights: str | Path | None = None,
) -> nn.Module:
    """A timm backbone's feature maps of the stages `out_indices` (`features_only`: `feature_info` gives their
    channels and strides), for detectors' FPNs; `weights` as for `create_classifier`."""
    return _timm_model(name, pretrained, weights, features_only=True, out_indices=out_indices, in_chans=in_chans)


def create_segmentation_model(
    arch: str,
    encoder: str,
    num_classes: int,
    in_chans: int = 3,
    pretrained: bool = False,
    weights: str | Path | None = None,
    decoder_attention_type: str | None = None,
) -> nn.Module:
    """An smp model (Unet, FPN, ...) with any smp or `tu-` timm encoder.

    `weights` is a local file of the encoder's pretrained weights: timm reads it for `tu-` encoders, and
    it is loaded into smp's own encoders (a classifier's keys, e.g. `fc.`, are left out).
    """
    import segmentation_models_pytorch as smp

    names = [n for n in dir(smp) if isinstance(getattr(smp, n), type) and issubclass(getattr(smp, n), nn.Module)]
    _check_name(arch, names, "smp architecture")
    encoders = list(smp.encoders.get_encoder_names())
    if encoder.startswith("tu-"):
        check_timm_name(encoder[3:], "timm encoder")
    else:
        _check_name(encoder, encoders, "smp encoder")
    weights = check_weights(weights)
    kwargs: dict = dict(encoder_name=encoder, in_channels=in_chans, classes=num_classes)
    if arch in ("Unet", "UnetPlusPlus") and decoder_attention_type:
        kwargs["decoder_attention_type"] = decoder_attention_type
    elif decoder_attention_type:
        raise ValueError(f"decoder_attention_type is supported by Unet and UnetPlusPlus, not {arch}")
    cls = getattr(smp, arch)
    if weights and encoder.startswith("tu-"):
        return cls(encoder_weights=True, pretrained_cfg_overlay={"file": weights}, **kwargs)
    if weights:
        model = cls(encoder_weights=None, **kwargs)
        load_encoder_weights(model.encoder, weights)
        return model
    try:
        return cls(encoder_weights=("imagenet" if pretrained else None), **kwargs)
    except (OSError, RuntimeError, ConnectionError, KeyError, ValueError) as err:
        if not pretrained:
            raise
        raise _download_error(encoder, err) from err


def load_encoder_weights(encoder: nn.Module, path: str) -> None:
    """Load a local weights file (.pth, .pt, .bin or .safetensors; a backbone's or classifier's state dict)
    into an smp encoder: every encoder weight must be in the file with its shape; a classifier head is left out."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = encoder.state_dict()
    missing = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    if missing:
        raise UserInputError(f"--model.weights {path} does not fit the encoder: {len(missing)} of its {len(own)} weights "
                             f"are missing or of another shape (e.g. {missing[0]!r}); is it the same architecture?")
    encoder.load_state_dict({k: state[k] for k in own})


def normalization(model: nn.Module, in_chans: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean/std the backbone was pretrained with, as (1, C, 1, 1) tensors for [0, 1] inputs."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN), cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)
    if len(mean) != in_chans:
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    return torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)


def enable_grad_checkpointing(model: nn.Module, name: str) -> None:
    """Recompute activations in the backward pass instead of storing them (timm models, and smp's timm
    `tu-` encoders): less memory for a larger model or image, about a third more compute."""
    found = [m for m in model.modules() if callable(getattr(m, "set_grad_checkpointing", None))]
    if not found:
        raise UserInputError(f"--model.grad_checkpointing: {name} does not support gradient checkpointing; timm "
                             "backbones do, and smp encoders built on timm (encoder 'tu-<timm name>', e.g. tu-resnet34)")
    for module in found:
        module.set_grad_checkpointing(True)
