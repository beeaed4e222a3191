"""Faster R-CNN's model and optimiser: torchvision's detector assembled from its public parts
(backbone, FPN, anchors, heads), and SGD with linear warmup and step decay."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone

if TYPE_CHECKING:
    from visiontune.trainables.faster_rcnn import Config
    from visiontune.trainables.session import Precision

STAGE_STRIDES = {
    # px per feature cell after each stage torchvision's extractors count; the stage count is
    # the most `trainable_backbone_layers` can be. torchvision's builders use the stages from
    # index 1 (resnet50: layer1-4, strides 4-32) and the last two (mobilenet: both stride 32).
    "mobilenet_v3_large_fpn": (2, 4, 8, 16, 32, 32),
    "resnet50_fpn": (2, 4, 8, 16, 32),
}


def build_model(
    config: Config,
    num_classes: int,
    image_size: tuple[int, int],
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
) -> FasterRCNN:
    """Faster R-CNN from scratch for `num_classes` object classes (background added here).

    Assembled as torchvision's `fasterrcnn_<backbone>` builders do (same backbone, FPN, heads
    and anchor layout), from the same public parts, so that the FPN levels, the norm layer and
    the frozen stages can be chosen; with finest_stride 32 (mobilenet) or 4 (resnet50),
    norm "batch" and anchor_scale 1 the model is the builder's. `image_mean`/`image_std` are
    in [0, 1] units for the 3 input channels (default 0.5/0.25).
    """
    backbone, strides = build_backbone(config)
    return FasterRCNN(
        backbone,
        num_classes=num_classes + 1,
        min_size=min(image_size),  # the real size: no upscaling
        max_size=max(image_size),
        image_mean=image_mean or [0.5] * 3,
        image_std=image_std or [0.25] * 3,
        rpn_anchor_generator=build_anchors(config, strides),
        rpn_batch_size_per_image=config.rpn_batch_size_per_image,
        box_batch_size_per_image=config.box_batch_size_per_image,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
        box_score_thresh=config.score_threshold,
        box_detections_per_img=config.detections_per_img,
    )


def autocast_backbone(model: FasterRCNN, precision: Precision) -> None:
    """Run `model`'s backbone (with its FPN) under `precision`'s autocast and hand its feature
    maps on in float32, so that everything after it computes in float32: the anchors (made in
    the features' dtype), the RPN's and the box head's box decoding (in the regression's
    dtype: float16 puts a 600-px coordinate on a 0.5-px grid), NMS, the heads and the losses.
    The backbone is where the time goes; nothing box-shaped passes through it. A no-op for
    float32. The module tree and its state_dict stay as they are: checkpoints of a GPU and a
    CPU run are interchangeable."""
    if precision.dtype is None:
        return
    forward = model.backbone.forward

    def forward_mixed(images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        with precision.autocast():
            features = forward(images)
        return OrderedDict((name, level.float()) for name, level in features.items())

    model.backbone.forward = forward_mixed


class ClassIndexDetector(nn.Module):
    """A torchvision detector whose labels count from 0 (indices into the class names), as every
    task's loaded model gives them (trainables/contract.py: InferenceModel); torchvision's
    count from 1 (0 is its background). Boxes come back in the input images' own pixels."""

    def __init__(self, detector: FasterRCNN) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [{**found, "labels": found["labels"] - 1} for found in self.detector(images)]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups where the channels allow (Wu & He 2018), else gcd(32, C)."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def build_backbone(config: Config) -> tuple[nn.Module, list[int]]:
    """The backbone with its FPN (weights=None: never a download), and the stride of each
    feature map it returns, the FPN's extra max-pooled level included."""
    stage_strides = STAGE_STRIDES[config.backbone]
    returned = [i for i, s in enumerate(stage_strides) if i > 0 and s >= config.finest_stride]
    trainable = config.trainable_backbone_layers
    options = dict(
        weights=None,
        norm_layer=group_norm if config.norm == "group" else nn.BatchNorm2d,
        trainable_layers=len(stage_strides) if trainable is None else trainable,
        returned_layers=returned,
    )
    if config.backbone == "resnet50_fpn":
        backbone = resnet_fpn_backbone(backbone_name="resnet50", **options)
    else:
        backbone = mobilenet_backbone(backbone_name="mobilenet_v3_large", fpn=True, **options)
    strides = [stage_strides[i] for i in returned]
    return backbone, [*strides, 2 * strides[-1]]


def build_anchors(config: Config, strides: list[int]) -> AnchorGenerator:
    """torchvision's anchor layouts, sizes times `anchor_scale`, 3 aspect ratios each:
    mobilenet puts all five sizes (32-512 px) on every level, resnet50 one size of 8 x stride."""
    scale = config.anchor_scale
    if config.backbone == "resnet50_fpn":
        sizes = tuple((8 * stride * scale,) for stride in strides)
    else:
        sizes = (tuple(size * scale for size in (32, 64, 128, 256, 512)),) * len(strides)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))


def build_optimizer(
    model: nn.Module, config: Config, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with coupled weight decay; the LR schedule is stepped once per optimizer step:
    linear warmup from `warmup_factor` over `warmup_epochs`, then x`lr_decay_factor` from
    epoch `lr_decay_epoch` on (torchvision reference: warmup, then MultiStepLR)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    decay_step = config.lr_decay_epoch * steps_per_epoch

    def factor(step: int) -> float:
        warm = 1.0
        if step < warmup_steps:
            alpha = step / warmup_steps
            warm = config.warmup_factor * (1 - alpha) + alpha
        return warm * (config.lr_decay_factor if step >= decay_step else 1.0)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
