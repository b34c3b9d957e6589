"""One-stage detectors from torchvision's FCOS on timm or torchvision backbones with an FPN, export-ready.

torchvision's `FCOS` takes a list of images, resizes them (`GeneralizedRCNNTransform`) and returns losses in
train mode and NMS-ed detections in eval mode: neither is a tensor an ONNX graph or an ensemble can use. Here
its parts do the work (backbone + FPN, `FCOSHead`, `AnchorGenerator`, `BoxLinearCoder`, `compute_loss`) and
`DenseDetector.forward` returns one dense tensor per image, (N, A, 5 + C) over the A feature locations of all
levels: the decoded box (x_min, y_min, x_max, y_max in input pixels), the centre-ness logit and C class logits.
Loss (`loss`) and detections (`detections`: scores, top-k, class-wise NMS) are functions of that tensor, so
training, TTA, validation and an exported model's consumers read the same outputs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOS, FCOSHead
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import batched_nms
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from lightning_cv.errors import UserInputError
from lightning_cv.models.backbones import check_weights, create_features

BOX, CTR = 4, 1  # leading columns of the dense output: the box, then the centre-ness logit
TORCHVISION_PREFIX = "tv-"
EXTRA_LEVELS = {"p6p7": 2, "pool": 1, "none": 0}


def _extra_block(extra: str, channels: int) -> nn.Module | None:
    if extra not in EXTRA_LEVELS:
        raise UserInputError(f"--model.extra_levels {extra!r}: choose {', '.join(EXTRA_LEVELS)}")
    return {"p6p7": lambda: LastLevelP6P7(channels, channels), "pool": LastLevelMaxPool, "none": lambda: None}[extra]()


class FPNBackbone(nn.Module):
    """A backbone's stages (a list or dict of maps, strides `reductions`) under torchvision's FeaturePyramidNetwork,
    plus extra levels (P6/P7 convolutions or a max-pooled P6); `strides` of every output level."""

    def __init__(self, body: nn.Module, in_channels: list[int], reductions: list[int], channels: int, extra: str,
                 pretrained_cfg: dict | None = None):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels, channels, extra_blocks=_extra_block(extra, channels))
        self.strides = list(reductions) + [reductions[-1] * 2 ** (k + 1) for k in range(EXTRA_LEVELS[extra])]
        self.out_channels = channels
        self.pretrained_cfg = pretrained_cfg or {}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(x)
        features = features.values() if isinstance(features, dict) else features
        return list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features))).values())


def torchvision_body(name: str, in_chans: int, pretrained: bool, weights: str | None,
                     out_indices: Sequence[int]) -> tuple[nn.Module, list[int]]:
    """torchvision's own ResNet stages (`IntermediateLayerGetter`), pretrained BatchNorm frozen as torchvision's
    detectors keep it, learnt from scratch otherwise; and the stages' channels."""
    from torchvision.models import get_model, get_model_weights
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.ops.misc import FrozenBatchNorm2d

    if not name.startswith(("resnet", "wide_resnet", "resnext")):
        raise UserInputError(f"--model.backbone tv-{name}: torchvision FPN backbones are its ResNets (tv-resnet18, "
                             "tv-resnet50 ...); for others use a timm name (e.g. convnext_tiny, efficientnet_b0)")
    if in_chans != 3:
        raise UserInputError(f"--model.backbone tv-{name} takes RGB images; use a timm backbone for {in_chans} channels")
    if not set(out_indices) <= {1, 2, 3, 4}:
        raise UserInputError(f"--model.out_indices {list(out_indices)}: torchvision ResNets have stages 1 to 4")
    tv_weights = get_model_weights(name).DEFAULT if pretrained and weights is None else None
    resnet = get_model(name, weights=tv_weights, norm_layer=FrozenBatchNorm2d if pretrained or weights else nn.BatchNorm2d)
    if weights is not None:
        resnet.load_state_dict(torch.load(check_weights(weights), map_location="cpu", weights_only=True))
    width = resnet.inplanes // 4  # layer2's channels (layer4 has inplanes)
    body = IntermediateLayerGetter(resnet, {f"layer{i}": str(k) for k, i in enumerate(out_indices)})
    return body, [width * 2 ** (i - 2) for i in out_indices]


def create_fpn_backbone(name: str, in_chans: int = 3, pretrained: bool = False, weights: str | Path | None = None,
                        channels: int = 128, out_indices: Sequence[int] = (2, 3, 4), extra: str = "p6p7") -> nn.Module:
    """An FPN over a backbone's stages `out_indices` (2, 3, 4: strides 8, 16, 32), plus extra levels: a timm
    name (any `features_only` model), or `tv-<resnet>` for torchvision's own."""
    if channels % 32:
        raise UserInputError(f"--model.fpn_channels {channels}: FCOS's GroupNorm(32) needs a multiple of 32")
    if name.startswith(TORCHVISION_PREFIX):
        body, in_channels = torchvision_body(name[len(TORCHVISION_PREFIX):], in_chans, pretrained,
                                             None if weights is None else str(weights), out_indices)
        reductions = [2 ** (i + 1) for i in out_indices]
        return FPNBackbone(body, in_channels, reductions, channels, extra,
                           {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)})
    body = create_features(name, tuple(out_indices), in_chans, pretrained, weights)
    return FPNBackbone(body, body.feature_info.channels(), body.feature_info.reduction(), channels, extra,
                       getattr(body, "pretrained_cfg", {}))


class DenseDetector(nn.Module):
    """torchvision FCOS parts over an FPN backbone; `forward(images)` -> (N, A, 5 + C) dense outputs.

    Args:
        backbone: an FPN backbone returning a list of levels, with `out_channels` and `strides`.
        num_classes: foreground classes (sigmoid, no background class).
        head_convs: convolutions of each FCOS tower (4 in the paper; 2 halves the head's cost).
        center_sampling_radius: FCOS's centre sampling, in strides.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, head_convs: int = 4, center_sampling_radius: float = 1.5):
        super().__init__()
        self.num_classes = num_classes
        strides = list(backbone.strides)
        # One anchor per location, as large as its level's stride: FCOS assigns objects to levels by size.
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        head = FCOSHead(backbone.out_channels, 1, num_classes, num_convs=head_convs)
        # torchvision starts the box regression at 0, the edge of its ReLU: an early step that pushes every
        # location below it leaves the boxes dead at zero size (seen from scratch with AdamW). Start at 1
        # (boxes an anchor wide on each side of the location), where mmdetection's exp() parameterisation starts.
        nn.init.constant_(head.regression_head.bbox_reg.bias, 1.0)
        self.net = FCOS(backbone, num_classes, anchor_generator=anchors, head=head,
                        center_sampling_radius=center_sampling_radius)
        self.pretrained_cfg = getattr(backbone, "pretrained_cfg", {})
        self._levels: dict[tuple[int, int], list[tuple[int, int]]] = {}  # input (H, W) -> each level's (h, w)

    @property
    def backbone(self) -> nn.Module:
        return self.net.backbone

    @property
    def head(self) -> nn.Module:
        return self.net.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.net.backbone(images)
        height, width = images.shape[-2:]
        self._levels[(int(height), int(width))] = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        out = self.net.head(features)
        # One image's anchors (they depend on the size alone), broadcast over the batch: the batch stays dynamic.
        anchors = self.net.anchor_generator(ImageList(images[:1], [(height, width)]), features)[0]
        boxes = self.net.box_coder.decode(out["bbox_regression"], anchors.unsqueeze(0))
        return torch.cat([boxes, out["bbox_ctrness"], out["cls_logits"]], dim=2)

    def anchors(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, list[int]]:
        """The (A, 4) anchors of an input size and the number per level (after a forward at that size)."""
        if (height, width) not in self._levels:
            raise RuntimeError(f"no forward pass at {height}x{width} yet: the levels' sizes are read from it")
        levels = self._levels[(height, width)]
        maps = [torch.empty(1, 0, h, w, device=device) for h, w in levels]
        anchors = self.net.anchor_generator(ImageList(torch.empty(1, 0, height, width, device=device), [(height, width)]), maps)[0]
        return anchors, [h * w for h, w in levels]

    def loss(self, outputs: torch.Tensor, targets: list[dict[str, torch.Tensor]], size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """FCOS's losses (focal classification, GIoU boxes, centre-ness BCE, each per foreground location) of dense
        outputs against per-image targets {"boxes" (M, 4) input pixels, "labels" (M,) 0-based}."""
        outputs = outputs.float()
        anchors, per_level = self.anchors(*size, outputs.device)
        head = {"bbox_regression": self.net.box_coder.encode(anchors.unsqueeze(0), outputs[..., :BOX]),
                "bbox_ctrness": outputs[..., BOX:BOX + CTR], "cls_logits": outputs[..., BOX + CTR:]}
        return self.net.compute_loss(targets, head, [anchors] * outputs.shape[0], per_level)


def dense_scores(outputs: torch.Tensor) -> torch.Tensor:
    """FCOS's detection score per location and class: sqrt(sigmoid(class) * sigmoid(centre-ness))."""
    outputs = outputs.float()
    return torch.sqrt(outputs[..., BOX + CTR:].sigmoid() * outputs[..., BOX:BOX + CTR].sigmoid())


def detections(outputs: torch.Tensor, score_threshold: float = 0.05, iou_threshold: float = 0.6,
               max_detections: int = 100, candidates: int = 1000, size: tuple[int, int] | None = None) -> list[dict[str, torch.Tensor]]:
    """Per image: the locations x classes scoring above `score_threshold` (the best `candidates`), boxes clipped
    to `size` (H, W), class-wise NMS at `iou_threshold`, the best `max_detections`, best first."""
    scores = dense_scores(outputs)
    result = []
    for boxes, image_scores in zip(outputs[..., :BOX].float(), scores):
        flat = image_scores.flatten()
        keep = torch.nonzero(flat > score_threshold).squeeze(1)
        if len(keep) > candidates:
            keep = keep[flat[keep].topk(candidates).indices]
        location, label = keep // image_scores.shape[1], keep % image_scores.shape[1]
        chosen = boxes[location]
        if size is not None:
            chosen = torch.stack([chosen[:, 0].clamp(0, size[1]), chosen[:, 1].clamp(0, size[0]),
                                  chosen[:, 2].clamp(0, size[1]), chosen[:, 3].clamp(0, size[0])], dim=1)
        kept = batched_nms(chosen, flat[keep], label, iou_threshold)[:max_detections]
        result.append({"boxes": chosen[kept], "scores": flat[keep][kept], "labels": label[kept]})
    return result
