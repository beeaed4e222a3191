"""Faster R-CNN trainable: torchvision's detector from scratch, SGD with warmup and step decay.

Run one configuration without Ray: `visiontune train search_spaces/faster_rcnn.yaml`.
Inside a sweep, `visiontune.trainables.tune_edge.run_trial` drives `TASK` (the trainable contract,
trainables/contract.py) once per trial; everything here is plain PyTorch and is tested without Ray.

Defaults are torchvision's detection reference recipe scaled to the seed's batch of 2: SGD lr
0.02 * 2/16 = 0.0025, momentum 0.9, weight decay 1e-4 on every parameter, linear warmup from
x0.001 over the first epoch, x0.1 step decay at epoch 16, horizontal flip p=0.5, no other
augmentation. The model is torchvision's Faster R-CNN, built from the same public parts as its
`fasterrcnn_mobilenet_v3_large_fpn` / `fasterrcnn_resnet50_fpn` builders (`model.build_model`
says which settings give exactly the builder's model), with choices for a CPU and small thermal images:
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

On a GPU (a trial with `resources.gpu`), the backbone runs under float16 autocast with loss
scaling, the RPN, box head, box decoding and NMS in float32 (`model.autocast_backbone`; `amp:
false` keeps float32 throughout). The CPU path is float32 either way.

The package, one job per module (as torchvision's references/detection): `model` builds the
detector and its optimiser, `augment` the training-time augmentation, `data` turns a decoded split
into tensors, `engine` holds the loops (one training epoch, prediction, COCO evaluation); this
module holds the config, the `Session` that ties them together, and `TASK`.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from visiontune.data.detection import DetectionDataset
from visiontune.params import StrictModel
from visiontune.trainables.contract import InferenceModel
from visiontune.trainables.faster_rcnn.augment import build_augmentation
from visiontune.trainables.faster_rcnn.data import (
    DetectionTensors,
    pixel_stats,
    prepare_split,
    to_float,
    to_model_input,
)
from visiontune.trainables.faster_rcnn.engine import evaluate, train_one_epoch
from visiontune.trainables.faster_rcnn.model import (
    STAGE_STRIDES,
    ClassIndexDetector,
    autocast_backbone,
    build_model,
    build_optimizer,
)
from visiontune.trainables.session import (
    CheckpointedSession,
    Precision,
    SessionTask,
    decoded_images,
    upload,
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
        # float16 with a GradScaler, as torchvision's detection reference trains with AMP, and
        # for the backbone only: anchors, box decoding, NMS and the heads stay in float32
        # (model.autocast_backbone), where a 100-px coordinate is not rounded to a 1/16-px
        # (float16) or 0.5-px (bfloat16) grid.
        self.precision = Precision.choose(self.device, config.amp, allow_bf16=False)
        autocast_backbone(self.model, self.precision)
        self.augment = build_augmentation(config)
        self.epoch = 0

    def _to_device(self, split: DetectionTensors) -> DetectionTensors:
        # boxes stay on the CPU: augmentation edits them per image, cheaper there than on a GPU;
        # train_one_epoch moves each batch's targets
        return DetectionTensors(upload(split.images, self.device), split.boxes, split.labels)

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
        return evaluate(self.model, self.tensors[split], self.names)

    def inference_model(self, data: DetectionDataset) -> InferenceModel:
        """The detector in eval mode (on a GPU its backbone autocasts, as in `evaluate`) with labels
        counted from 0, its input preparation and the class names. Images are not resized
        here: the model's own transform scales them to the training size and its boxes back."""
        channels, device = data.channels, self.device

        def preprocess(images: Any) -> list[torch.Tensor]:
            chw = [
                torch.tensor(a).permute(2, 0, 1).to(device)
                for a in decoded_images(images, channels)
            ]
            return [to_model_input(to_float(image[None]))[0] for image in chw]

        return InferenceModel(ClassIndexDetector(self.model).eval(), preprocess, self.names)


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
