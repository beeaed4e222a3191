"""Faster R-CNN's view of a detection split: every image decoded once into one uint8 tensor, the
boxes in pixels and the labels shifted past torchvision's background class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from visiontune.data.detection import DetectionSplit, to_xyxy_abs

MIN_BOX_SIZE = 1.0  # px; thinner boxes cannot be learnt, and zero-width ones crash torchvision


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
