"""Image classifier trainable: the seed's custom ResNet, Keras-style augmentation, Adam + step decay.

Run one configuration without Ray: `visiontune train search_spaces/classifier.yaml`.
Inside a sweep, `visiontune.trainables.tune_edge.run_trial` drives `TASK` (the trainable contract,
trainables/contract.py) once per trial; everything here is plain PyTorch and is tested without Ray.

Defaults are the seed's "custom" configuration (l2 1e-4, dropout 0.2 per ResBlock and 0.5 before
the dense head, Adam 1e-4 decayed x0.1 after 50 epochs, Keras augmentation: rotation 40 deg, shifts
0.2, shear 0.2 deg, zoom 0.2, horizontal flip, fill 'nearest'), at widths small enough for a CPU.
Reported losses are cross-entropy without the l2 penalty, so trials with different l2 compare fairly.

On a GPU (a trial with `resources.gpu`), the forward passes run under bfloat16 autocast (float16
with loss scaling on GPUs without native bfloat16); `amp: false` keeps float32. The CPU path is
float32 either way.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field
from torch import nn

from visiontune.data.imagefolder import ImageDataset
from visiontune.params import StrictModel
from visiontune.trainables.contract import InferenceModel
from visiontune.trainables.session import (
    FULL_PRECISION,
    CheckpointedSession,
    Precision,
    SessionTask,
    decoded_images,
    to_device,
    upload,
)

DATA_FORMAT = "imagefolder"  # visiontune.data.load_dataset reads DIR/{train,val,test}/<class>/
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch")
ARCHITECTURES = {
    # blocks per stage; each stage doubles the width and halves the resolution after the first.
    "baseline": (2, 2, 2),  # the standard small ResNet (ResNet-20 layout at reduced width)
    "custom": (1, 1, 1),  # the seed's trimmed ResNet: one block per stage
}
FILL_MODES = {"nearest": "border", "constant": "zeros", "reflect": "reflection"}


class Config(StrictModel):
    """The classifier's hyperparameters with their defaults and bounds."""

    # fmt: off
    arch: Literal["baseline", "custom"] = "custom"  # a key of ARCHITECTURES
    width: int = Field(16, ge=1)  # channels of the first stage
    rotation: float = Field(40.0, ge=0)  # degrees, angle ~ U(-rotation, rotation)
    width_shift: float = Field(0.2, ge=0)  # fraction of the width
    height_shift: float = Field(0.2, ge=0)  # fraction of the height
    shear: float = Field(0.2, ge=0)  # degrees (Keras semantics), angle ~ U(-shear, shear)
    zoom: float = Field(0.2, ge=0, lt=1)  # x and y zoom drawn independently from [1 - zoom, 1 + zoom]
    horizontal_flip: bool = True
    fill_mode: Literal["nearest", "constant", "reflect"] = "nearest"  # a key of FILL_MODES
    l2: float = Field(1e-4, ge=0)  # Keras kernel_regularizer l2(lambda): lambda * sum(w^2) over kernels
    block_dropout: float = Field(0.2, ge=0, lt=1)
    head_dropout: float = Field(0.5, ge=0, lt=1)
    lr: float = Field(1e-4, gt=0)
    lr_decay_epoch: int = Field(50, ge=1)  # after this many epochs the LR is multiplied by lr_decay_factor
    lr_decay_factor: float = Field(0.1, gt=0, le=1)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(6, ge=1)
    seed: int = 0  # weight init, shuffling and augmentation draws
    amp: bool = True  # mixed precision on a GPU (bfloat16, or float16 + loss scaling); CPU: float32
    # fmt: on


class ResBlock(nn.Module):
    """conv-bn-relu-dropout-conv-bn plus a (projected) shortcut, then relu."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(F.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def build_model(config: Config, in_channels: int, num_classes: int) -> nn.Module:
    width = config.width
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    cin = width
    for stage, blocks in enumerate(ARCHITECTURES[config.arch]):
        cout = width * 2**stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(ResBlock(cin, cout, stride, config.block_dropout))
            cin = cout
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(config.head_dropout),
        nn.Linear(cin, num_classes),
    ]
    return nn.Sequential(*layers)


def build_augmentation(config: Config) -> nn.Module:
    """Keras ImageDataGenerator semantics, batched with per-image parameters (kornia)."""
    ops: list[nn.Module] = []
    if config.horizontal_flip:
        ops.append(K.RandomHorizontalFlip(p=0.5))
    geometric = (
        config.rotation,
        config.width_shift,
        config.height_shift,
        config.shear,
        config.zoom,
    )
    if any(geometric):
        lo, hi = 1.0 - config.zoom, 1.0 + config.zoom
        ops.append(
            K.RandomAffine(
                degrees=config.rotation,
                translate=(config.width_shift, config.height_shift),
                scale=(lo, hi, lo, hi),
                shear=config.shear,
                padding_mode=FILL_MODES[config.fill_mode],
                p=1.0,  # Keras transforms every image; kornia's default is p=0.5
            )
        )
    return nn.Sequential(*ops)


def build_optimizer(
    model: nn.Module, config: Config
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam with Keras l2 on kernels only: d/dw (lambda * w^2) = 2 * lambda * w, i.e. Adam's
    (coupled) weight_decay = 2 * lambda on conv/dense weights, none on biases and BatchNorm."""
    kernels = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.Adam(
        [
            {"params": kernels, "weight_decay": 2.0 * config.l2},
            {"params": others, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[config.lr_decay_epoch], gamma=config.lr_decay_factor
    )
    return optimizer, scheduler


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float in [0, 1] (augmentation works in pixel space, as Keras does)."""
    return images.float().div_(255.0)


def train_one_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    augment: nn.Module,
    normalize: nn.Module,
    batch_size: int,
    generator: torch.Generator,
    precision: Precision = FULL_PRECISION,
) -> dict[str, float]:
    """One pass over `images` (uint8, already on the training device) in shuffled batches;
    augmentation runs in float32, the model and loss under `precision`."""
    model.train()
    device = images.device
    order = to_device(torch.randperm(len(labels), generator=generator), device)
    total_loss, correct = 0.0, 0
    for idx in order.split(batch_size):
        x = normalize(augment(to_input(images[idx])))
        y = labels[idx]
        with precision.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        value = loss.item()
        if not math.isfinite(value):  # stop at once: every later step would be wasted
            raise FloatingPointError(f"train_loss became {value} (diverged; try a lower lr)")
        precision.backward_and_step(loss, optimizer)
        total_loss += value * len(idx)
        correct += int((logits.argmax(1) == y).sum())
    return {"train_loss": total_loss / len(labels), "train_acc": correct / len(labels)}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    normalize: nn.Module,
    batch_size: int = 256,
    precision: Precision = FULL_PRECISION,
) -> dict[str, float | None]:
    """Mean cross-entropy and accuracy, no augmentation, eval mode; None for both on no images
    (nothing was measured: never a 0)."""
    if len(labels) == 0:
        return {"loss": None, "acc": None}
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        x = normalize(to_input(images[start : start + batch_size]))
        y = labels[start : start + batch_size]
        with precision.autocast():
            logits = model(x)
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return {"loss": total_loss / len(labels), "acc": correct / len(labels)}


class Normalize(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Preprocess:
    """Decoded images (see `session.decoded_images`) -> the model's input: the training images'
    channels and size (resized as the ImageFolder loader resizes, PIL bilinear), scaled to
    [0, 1] and normalised with the training split's statistics, on the model's device."""

    def __init__(self, size: tuple[int, int], channels: int, normalize: Normalize) -> None:
        self.size, self.channels, self.normalize = size, channels, normalize

    def __call__(self, images: Any) -> torch.Tensor:
        arrays = [_at_size(a, self.size) for a in decoded_images(images, self.channels)]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return self.normalize(to_input(to_device(batch, self.normalize.mean.device)))


def _at_size(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 H x W x C at `size` (height, width), as `imagefolder.load_imagefolder` resizes."""
    if image.shape[:2] == size:
        return image
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    return np.asarray(pil.resize(size[::-1], Image.BILINEAR)).reshape(*size, image.shape[2])


class Session(CheckpointedSession):
    """One configuration's training state: model, optimizer, LR schedule, RNG, epoch counter.

    Plain PyTorch; `TASK.train` (in a Tune trial or `visiontune train`) drives it one epoch at a time.
    """

    def __init__(self, config: Config, data: ImageDataset, device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model = build_model(config, data.channels, len(data.classes)).to(self.device)
        self.optimizer, self.scheduler = build_optimizer(self.model, config)
        self.precision = Precision.choose(self.device, config.amp)
        self.augment = build_augmentation(config).to(self.device)
        self.normalize = Normalize(data.mean, data.std).to(self.device)
        self.tensors = {  # the whole uint8 dataset stays on the device: no loader per batch
            name: (
                upload(torch.from_numpy(split.images.copy()), self.device),
                upload(torch.from_numpy(split.labels.copy()), self.device),
            )
            for name, split in data.splits.items()
        }
        self.epoch = 0

    def train_epoch(self) -> dict[str, float]:
        """Train one epoch, evaluate on val, step the LR schedule; returns the epoch's metrics."""
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        images, labels = self.tensors["train"]
        train = train_one_epoch(
            self.model,
            images,
            labels,
            self.optimizer,
            self.augment,
            self.normalize,
            self.config.batch_size,
            self.generator,
            self.precision,
        )
        val = self.evaluate("val")
        if not math.isfinite(val["loss"]):
            raise FloatingPointError(f"val_loss became {val['loss']} (diverged; try a lower lr)")
        self.scheduler.step()
        self.epoch += 1
        return {
            **train,
            "val_loss": val["loss"],
            "val_acc": val["acc"],
            "lr": lr,
            "epoch": self.epoch,
            "images_per_s": len(labels) / (time.perf_counter() - start),
        }

    def evaluate(self, split: str) -> dict[str, float]:
        images, labels = self.tensors[split]
        return evaluate(self.model, images, labels, self.normalize, precision=self.precision)

    def inference_model(self, data: ImageDataset) -> InferenceModel:
        """The model in eval mode (logits; float32, `evaluate` autocasts on a GPU), its input
        preparation and `data`'s class names."""
        preprocess = Preprocess(data.image_size, data.channels, self.normalize)
        return InferenceModel(self.model.eval(), preprocess, tuple(data.classes))


def summarize(result: dict[str, float], split: str) -> dict[str, float]:
    """`evaluate`'s loss and accuracy as `<split>_loss`, `<split>_acc`."""
    return {f"{split}_{key}": value for key, value in result.items()}


TASK = SessionTask("classifier", Config, METRICS, DATA_FORMAT, Session, summarize)  # the contract
