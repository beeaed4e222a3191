"""Faster R-CNN trainable: torchvision's detector from scratch, SGD with warmup and step decay.

Run one configuration without Ray: `visiontune train search_spaces/faster_rcnn.yaml`.
Inside a sweep, `visiontune.trainables.tune_edge.run_trial` drives `TASK` (the trainable contract,
trainables/contract.py) once per trial; everything here is plain PyTorch and is tested without Ray.

Defaults are torchvision's detection reference recipe scaled to the seed's batch of 2: SGD lr
0.02 * 2/16 = 0.0025, momentum 0.9, weight decay 1e-4 on every parameter, linear warmup from
x0.001 over the first epoch, x0.1 step decay at epoch 16, horizontal flip p=0.5, no other
augmentation. The model is torchvision's Faster R-CNN, built from the same public parts as its
`fasterrcnn_mobilenet_v3_large_fpn` / `fasterrcnn_resnet50_fpn` builders (`build_model` says
which settings give exactly the builder's model), with choices for a CPU and small thermal images:
* No pretrained weights (backbone `weights=None`): nothing is ever downloaded, every backbone
  stage trains (`trainable_backbone_layers` None; a number freezes the lowest stages, as
  torchvision does only when it loads pretrained weights).
* `min_size`/`max_size` are the data's own image size, so the model never upscales (torchvision's
  800 px default would make a 128 px image ~40x more expensive).
* `finest_stride` 8: torchvision's mobilenet builder feeds the FPN two stride-32 stages only, a
  4x4 grid at 128 px, which leaves a 14-30 px module less than one feature cell; 8 adds the
  stride-8 and -16 stages. Defaults otherwise, val mAP after 8 epochs was 0.13 with it and
  0.001 with the builder's layout, for 0.66 vs 0.59 s per training step.
* `norm` "group": GroupNorm instead of BatchNorm in the backbone. Two images per step make
  noisy batch statistics, and eval-mode running statistics drift from them: trained 10 epochs
  on 16 pv-arrays images and scored on those images, BatchNorm reached mAP@.5 0.19 in eval
  mode (0.34 with batch statistics), GroupNorm 0.31. Detection trained from scratch uses
  GroupNorm for this reason (He et al., "Rethinking ImageNet Pre-training", 2019).
* `anchor_scale` 0.5 halves torchvision's 32-512 px anchors to 16-256 px: they were sized for
  800 px images, and the embedded pv-arrays modules are 14-30 px.
* Grey images are replicated to 3 channels rather than changing the stem: both backbones stay
  stock torchvision modules, and the replicated input costs only the first convolution.
  `image_mean`/`image_std` are the training split's pixel statistics, not ImageNet's, because
  no ImageNet weights are involved.
* `box_batch_size_per_image` 128 (torchvision: 512) and `rpn_post_nms_top_n_test` 300 (1000):
  the box head (12544 -> 1024 -> 1024) runs once per RoI and dominates CPU time (a training step
  takes 2.18 s at 512 RoIs, 0.66 s at 128, 0.35 s at 32); 300 proposals at test time is what
  the Faster R-CNN paper used. `rpn_batch_size_per_image` (256) only picks the anchors in the
  RPN loss (64 saves nothing measurable), so it stays torchvision's.

Measured on this 2-core CPU, one thread, default config, embedded pv-arrays (128x128 grey, 96
train / 32 val images, ~16 boxes per image): a training epoch (48 steps of 2) takes 32-37 s of
CPU, a val evaluation (32 images, pycocotools) 5-6 s; resnet50_fpn takes 0.92 s per step (1.11 s
at finest_stride 4). Val mAP after 10 epochs: 0.18 with the defaults, 0.22 at lr 0.01.
`visiontune tune search_spaces/faster_rcnn.yaml --num-samples 2 --max-epochs 2` took 2 min 20 s.

Reported losses are torchvision's training losses (mean over the epoch's images, augmentation
on); `map`, `map50`, `ar100` are COCO metrics on the val split as fractions in [0, 1].

On a GPU (a trial with `resources.gpu`), training and evaluation run under float16 autocast with
loss scaling (`amp: false` keeps float32; `Session.__init__` says why not bfloat16). The CPU path
is float32 either way.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone

from visiontune.data.detection import DetectionDataset, DetectionSplit, to_xyxy_abs
from visiontune.params import StrictModel
from visiontune.trainables.session import (
    FULL_PRECISION,
    CheckpointedSession,
    Precision,
    SessionTask,
    to_device,
)

DATA_FORMAT = "yolo"  # visiontune.data.load_dataset decodes a YOLO-layout data.yaml
METRICS = (
    "map",
    "map50",
    "ar100",
    "loss",
    "loss_classifier",
    "loss_box_reg",
    "loss_objectness",
    "loss_rpn_box_reg",
    "lr",
    "epoch",
)
LOSSES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
STAGE_STRIDES = {
    # px per feature cell after each stage torchvision's extractors count; the stage count is
    # the most `trainable_backbone_layers` can be. torchvision's builders use the stages from
    # index 1 (resnet50: layer1-4, strides 4-32) and the last two (mobilenet: both stride 32).
    "mobilenet_v3_large_fpn": (2, 4, 8, 16, 32, 32),
    "resnet50_fpn": (2, 4, 8, 16, 32),
}
MIN_BOX_SIZE = 1.0  # px; thinner boxes cannot be learnt, and zero-width ones crash torchvision
MIN_VISIBLE = 0.25  # a box cut by scale jitter is kept if this share of its area stays in frame
EVAL_BATCH_SIZE = 8


class Config(StrictModel):
    """Faster R-CNN's hyperparameters with their defaults and bounds."""

    # fmt: off
    backbone: Literal["mobilenet_v3_large_fpn", "resnet50_fpn"] = "mobilenet_v3_large_fpn"  # or resnet50_fpn (~1.4x slower per step at 128 px)
    trainable_backbone_layers: int | None = Field(None, ge=0)  # stages trained from the top; None = all
    norm: Literal["group", "batch"] = "group"  # backbone normalisation: group (GroupNorm) or batch (torchvision's BN)
    finest_stride: Literal[4, 8, 16, 32] = 8  # px per cell of the finest FPN level; torchvision: 32 / 4 (resnet)
    anchor_scale: float = Field(0.5, gt=0)  # multiplies torchvision's anchor sizes (32-512 px)
    lr: float = Field(0.0025, gt=0)  # SGD; torchvision reference 0.02 for 16 images per step, scaled to 2
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)  # SGD's coupled l2 on every parameter, as torchvision's reference
    warmup_epochs: float = Field(1.0, ge=0)  # linear warmup per step over this many epochs (fractions allowed)
    warmup_factor: float = Field(0.001, gt=0, le=1)  # LR multiplier at the first step of the warmup
    lr_decay_epoch: int = Field(16, ge=1)  # after this many epochs the LR is multiplied by lr_decay_factor
    lr_decay_factor: float = Field(0.1, gt=0, le=1)
    batch_size: int = Field(2, ge=1)  # images per step, as in the seed
    epochs: int = Field(10, ge=1)
    hflip: float = Field(0.5, ge=0, le=1)  # probability of a horizontal flip per image
    scale_jitter: float = Field(0.0, ge=0, lt=1)  # zoom ~ U(1 - s, 1 + s) per image, then crop/pad to the frame
    brightness: float = Field(0.0, ge=0, le=1)  # additive intensity offset ~ U(-b, b), fraction of the 0-255 range
    contrast: float = Field(0.0, ge=0, lt=1)  # gain about the image mean ~ U(1 - c, 1 + c)
    rpn_batch_size_per_image: int = Field(256, ge=1)  # anchors sampled per image for the RPN loss
    box_batch_size_per_image: int = Field(128, ge=1)  # RoIs sampled per image for the box head (CPU cost)
    rpn_post_nms_top_n_test: int = Field(300, ge=1)  # proposals per image at evaluation (CPU cost)
    score_threshold: float = Field(0.05, ge=0, lt=1)  # detections below this score are dropped at evaluation
    detections_per_img: int = Field(100, ge=1)  # COCO's AR@100 and mAP count at most 100 per image
    seed: int = 0  # weight init, shuffling, RoI sampling and augmentation draws
    amp: bool = True  # mixed precision on a GPU (float16 + loss scaling); CPU: float32
    # fmt: on

    @model_validator(mode="after")
    def _layers_within_the_backbone(self) -> Config:
        stages = len(STAGE_STRIDES[self.backbone])
        layers = self.trainable_backbone_layers
        if layers is not None and layers > stages:
            raise ValueError(
                f"trainable_backbone_layers must be None or an int in [0, {stages}] for "
                f"{self.backbone}, got {layers!r}"
            )
        return self


# --- data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectionTensors:
    """One split ready for torchvision: every image at the same size, targets in pixels."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    boxes: list[torch.Tensor]  # float32 (n, 4) per image: absolute x1, y1, x2, y2 in px
    labels: list[torch.Tensor]  # int64 (n,) per image: class index + 1 (0 is background)

    def __len__(self) -> int:
        return len(self.images)


def to_target(
    boxes: np.ndarray, labels: np.ndarray, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised cx, cy, w, h -> absolute x1, y1, x2, y2 clipped to the image, labels + 1,
    boxes narrower or lower than MIN_BOX_SIZE px dropped. Empty inputs give (0, 4) and (0,)."""
    xyxy = torch.from_numpy(to_xyxy_abs(boxes, height, width))
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    xyxy = torch.minimum(xyxy.clamp(min=0), scale)
    keep = ((xyxy[:, 2:] - xyxy[:, :2]) >= MIN_BOX_SIZE).all(dim=1)
    classes = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1) + 1
    return xyxy[keep], classes[keep]


def prepare_split(split: DetectionSplit, image_size: tuple[int, int]) -> DetectionTensors:
    """Decode one split; images of another size are resized to `image_size` (normalised boxes
    do not change with the image size)."""
    height, width = image_size
    images, boxes, labels = [], [], []
    for image, image_boxes, image_labels in zip(
        split.images, split.boxes, split.labels, strict=True
    ):
        # a copy: arrays from the object store are read-only
        tensor = torch.from_numpy(np.array(image))
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        if tuple(tensor.shape[1:]) != (height, width):
            resized = F.interpolate(
                tensor[None].float(), size=(height, width), mode="bilinear", antialias=True
            )
            tensor = resized[0].round().clamp(0, 255).to(torch.uint8)
        images.append(tensor)
        xyxy, classes = to_target(image_boxes, image_labels, height, width)
        boxes.append(xyxy)
        labels.append(classes)
    return DetectionTensors(torch.stack(images), boxes, labels)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float NCHW in [0, 1] (augmentation works in pixel space)."""
    return images.float().div_(255.0)


def to_model_input(images: torch.Tensor) -> list[torch.Tensor]:
    """Float NCHW -> the list of 3-channel images torchvision's detectors take (grey replicated)."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return list(images)


def pixel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units, repeated to 3 channels for grey images."""
    x = images.float().div(255.0).transpose(0, 1).flatten(1)
    mean, std = x.mean(dim=1).tolist(), x.std(dim=1).clamp(min=1e-3).tolist()
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    return mean, std


# --- augmentation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """Batched, per-image draws from one generator: scale jitter, horizontal flip, intensity.

    Photometric changes act on intensity only (a thermal frame has no hue): brightness adds an
    offset (a warmer or cooler scene), contrast scales about the image mean (the camera's span).
    """

    hflip: float = 0.0
    scale_jitter: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0

    def __call__(
        self,
        images: torch.Tensor,
        boxes: list[torch.Tensor],
        labels: list[torch.Tensor],
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """images float (B, C, H, W) in [0, 1]; returns new tensors, inputs are not modified."""
        if self.scale_jitter > 0:
            images, boxes, labels = scale_jitter(
                images, boxes, labels, self.scale_jitter, generator
            )
        if self.hflip > 0:
            flip = torch.rand(len(images), generator=generator) < self.hflip
            images, boxes = hflip(images, boxes, flip)
        if self.brightness > 0 or self.contrast > 0:
            images = jitter_intensity(images, self.brightness, self.contrast, generator)
        return images, boxes, labels


def build_augmentation(config: Config) -> Augmentation:
    return Augmentation(config.hflip, config.scale_jitter, config.brightness, config.contrast)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def hflip(
    images: torch.Tensor, boxes: list[torch.Tensor], flip: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mirror the images where `flip` (bool per image) is set, and their boxes with them."""
    width = images.shape[-1]
    mirror = flip.to(images.device)[:, None, None, None]
    images = torch.where(mirror, images.flip(-1), images)
    flipped = [
        torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1) if f else b
        for b, f in zip(boxes, flip.tolist(), strict=True)
    ]
    return images, flipped


def scale_jitter(
    images: torch.Tensor,
    boxes: list[torch.Tensor],
    labels: list[torch.Tensor],
    jitter: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Zoom each image by f ~ U(1 - jitter, 1 + jitter) at a random place, keeping the frame:
    a zoomed-in image is cropped, a zoomed-out one is padded with its own mean intensity.

    A pixel at x lands at f * x + offset with offset ~ U between 0 and W - f * W (likewise y),
    so the model's transform still sees the original size and objects really change scale.
    Boxes follow, are clipped to the frame, and are dropped when less than MIN_VISIBLE of them
    stays in it (too little of the module to tell its class).
    """
    n, _, height, width = images.shape
    f = _uniform(n, 1.0 - jitter, 1.0 + jitter, generator)
    slack = torch.stack([width * (1 - f), height * (1 - f)], dim=1)  # W - fW, H - fH
    offset = slack * torch.rand(n, 2, generator=generator)  # between 0 and the slack
    # grid_sample maps output to input coordinates in [-1, 1] (align_corners=False):
    # u_in = u_out / f + (1 - f - 2 * offset / W) / f
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / f
    theta[:, :, 2] = (1 - f[:, None] - 2 * offset / torch.tensor([width, height])) / f[:, None]
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    fill = images.mean(dim=(1, 2, 3), keepdim=True)
    images = F.grid_sample(images - fill, grid, align_corners=False) + fill

    frame = torch.tensor([width, height, width, height], dtype=torch.float32)
    kept_boxes, kept_labels = [], []
    for image_boxes, image_labels, scale, shift in zip(boxes, labels, f, offset, strict=True):
        moved = image_boxes * scale + shift.repeat(2)
        clipped = torch.minimum(moved.clamp(min=0), frame)
        sides = clipped[:, 2:] - clipped[:, :2]
        area = (moved[:, 2:] - moved[:, :2]).prod(dim=1)
        keep = (sides >= MIN_BOX_SIZE).all(dim=1) & (sides.prod(dim=1) >= MIN_VISIBLE * area)
        kept_boxes.append(clipped[keep])
        kept_labels.append(image_labels[keep])
    return images, kept_boxes, kept_labels


def jitter_intensity(
    images: torch.Tensor, brightness: float, contrast: float, generator: torch.Generator
) -> torch.Tensor:
    """x -> (x - mean) * gain + mean + offset per image, the same on every channel, clipped."""
    n = len(images)
    gain = _uniform(n, 1.0 - contrast, 1.0 + contrast, generator).view(n, 1, 1, 1)
    offset = _uniform(n, -brightness, brightness, generator).view(n, 1, 1, 1)
    gain, offset = gain.to(images.device), offset.to(images.device)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * gain + mean + offset).clamp(0.0, 1.0)


# --- model and optimisation ----------------------------------------------------------------


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


# --- training and evaluation ---------------------------------------------------------------


def train_one_epoch(
    model: nn.Module,
    data: DetectionTensors,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    augment: Augmentation,
    batch_size: int,
    generator: torch.Generator,
    precision: Precision = FULL_PRECISION,
) -> dict[str, float]:
    """One shuffled pass; returns the mean of each loss over the epoch's images, and the LR of
    the last step (the warmup changes it within an epoch). Augmentation runs in float32 with
    the boxes on the CPU; the model and its losses under `precision`."""
    model.train()
    device = data.images.device
    totals = dict.fromkeys(("loss", *LOSSES), 0.0)
    lr = optimizer.param_groups[0]["lr"]
    for idx in torch.randperm(len(data), generator=generator).split(batch_size):
        boxes = [data.boxes[i] for i in idx.tolist()]
        labels = [data.labels[i] for i in idx.tolist()]
        images, boxes, labels = augment(
            to_float(data.images[to_device(idx, device)]), boxes, labels, generator
        )
        targets = [
            {"boxes": to_device(b, device), "labels": to_device(c, device)}
            for b, c in zip(boxes, labels, strict=True)
        ]
        with precision.autocast():
            losses = model(to_model_input(images), targets)
            loss = sum(losses[key] for key in LOSSES)
        value = loss.item()
        if not math.isfinite(value):  # stop at once: every later step would be wasted
            raise FloatingPointError(f"loss became {value} (diverged; try a lower lr)")
        precision.backward_and_step(loss, optimizer)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        totals["loss"] += value * len(idx)
        for key in LOSSES:
            totals[key] += losses[key].item() * len(idx)
    return {key: total / max(len(data), 1) for key, total in totals.items()} | {"lr": lr}


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = EVAL_BATCH_SIZE,
    precision: Precision = FULL_PRECISION,
) -> list[dict[str, torch.Tensor]]:
    """Detections (boxes xyxy px, scores, labels 1-based) for uint8 NCHW images, eval mode;
    boxes and scores come back as float32 whatever the autocast dtype."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        with precision.autocast():
            detections = model(to_model_input(to_float(images[start : start + batch_size])))
        out += [
            {key: value.float() if value.is_floating_point() else value for key, value in d.items()}
            for d in detections
        ]
    return out


def compute_map(
    predictions: list[dict[str, torch.Tensor]],
    targets: list[dict[str, torch.Tensor]],
    names: tuple[str, ...],
) -> dict[str, Any]:
    """COCO box metrics (pycocotools) as fractions, labels 1-based in both lists.

    `map` is AP@[.50:.95], `map50` AP@.50, `ar100` recall with up to 100 detections per image;
    `per_class_ap` holds AP@[.50:.95] per class name, None where the class has no ground truth
    (torchmetrics reports -1 there). Without any ground truth the three numbers are NaN.
    """
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(iou_type="bbox", class_metrics=True, backend="pycocotools")
    metric.update(
        [{k: p[k].detach().cpu() for k in ("boxes", "scores", "labels")} for p in predictions],
        [{k: t[k].detach().cpu() for k in ("boxes", "labels")} for t in targets],
    )
    result = metric.compute()

    def fraction(value: torch.Tensor) -> float:
        value = float(value)
        return value if value >= 0 else math.nan

    per_class: dict[str, float | None] = dict.fromkeys(names)
    classes = torch.atleast_1d(result["classes"]).tolist()
    for label, ap in zip(classes, torch.atleast_1d(result["map_per_class"]).tolist(), strict=True):
        if 1 <= label <= len(names) and ap >= 0:
            per_class[names[label - 1]] = float(ap)
    return {
        "map": fraction(result["map"]),
        "map50": fraction(result["map_50"]),
        "ar100": fraction(result["mar_100"]),
        "per_class_ap": per_class,
    }


def evaluate(
    model: nn.Module,
    data: DetectionTensors,
    names: tuple[str, ...],
    precision: Precision = FULL_PRECISION,
) -> dict[str, Any]:
    """COCO metrics of `model` on one prepared split (see `compute_map`), no augmentation."""
    predictions = predict(model, data.images, precision=precision)
    targets = [{"boxes": b, "labels": c} for b, c in zip(data.boxes, data.labels, strict=True)]
    return compute_map(predictions, targets, names)


class Session(CheckpointedSession):
    """One configuration's training state: model, optimizer, LR schedule, RNG, epoch counter.

    Plain PyTorch; `TASK.train` (in a Tune trial or `visiontune train`) drives it one epoch at a time.
    """

    def __init__(self, config: Config, data: DetectionDataset, device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.names = tuple(data.names)
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        size = data.image_size
        self.tensors = {
            name: self._to_device(prepare_split(split, size)) for name, split in data.splits.items()
        }
        mean, std = pixel_stats(self.tensors["train"].images.cpu())
        self.model = build_model(config, len(self.names), size, mean, std).to(self.device)
        steps = math.ceil(len(self.tensors["train"]) / config.batch_size)
        self.optimizer, self.scheduler = build_optimizer(self.model, config, steps)
        # float16 even where bfloat16 is native: boxes pass through the model in the autocast
        # dtype (anchors, proposals and detections are decoded in it), and bfloat16's 8-bit
        # significand puts a 100-px coordinate on a 0.5-px grid, float16's on a 1/16-px grid.
        # torchvision's detection reference trains with AMP in float16 and a GradScaler too.
        self.precision = Precision.choose(self.device, config.amp, allow_bf16=False)
        self.augment = build_augmentation(config)
        self.epoch = 0

    def _to_device(self, split: DetectionTensors) -> DetectionTensors:
        # boxes stay on the CPU: augmentation edits them per image, cheaper there than on a GPU;
        # train_one_epoch moves each batch's targets
        return DetectionTensors(to_device(split.images, self.device), split.boxes, split.labels)

    def train_epoch(self) -> dict[str, float]:
        """Train one epoch, evaluate on val; returns the epoch's METRICS and images_per_s."""
        start = time.perf_counter()
        train = train_one_epoch(
            self.model,
            self.tensors["train"],
            self.optimizer,
            self.scheduler,
            self.augment,
            self.config.batch_size,
            self.generator,
            self.precision,
        )
        val = self.evaluate("val")
        self.epoch += 1
        return {
            "map": val["map"],
            "map50": val["map50"],
            "ar100": val["ar100"],
            **train,
            "epoch": self.epoch,
            "images_per_s": len(self.tensors["train"]) / (time.perf_counter() - start),
        }

    def evaluate(self, split: str) -> dict[str, Any]:
        if split not in self.tensors:
            raise ValueError(f"split must be one of {sorted(self.tensors)}, got {split!r}")
        return evaluate(self.model, self.tensors[split], self.names, self.precision)


def _json_number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def summarize(result: dict[str, Any], split: str) -> dict[str, Any]:
    """`<split>_map`, `<split>_map50`, `<split>_ar100` and `per_class` {name: {"ap": ...}};
    NaN and absent classes become None (JSON null)."""
    return {
        **{f"{split}_{key}": _json_number(result[key]) for key in ("map", "map50", "ar100")},
        "per_class": {
            name: {"ap": _json_number(ap)} for name, ap in result["per_class_ap"].items()
        },
    }


TASK = SessionTask("faster_rcnn", Config, METRICS, DATA_FORMAT, Session, summarize)  # the contract
