"""Faster R-CNN's training-time augmentation: batched scale jitter, horizontal flip and intensity
jitter, drawn per image from one generator, the boxes moved with the pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from visiontune.trainables.faster_rcnn.data import MIN_BOX_SIZE

if TYPE_CHECKING:
    from visiontune.trainables.faster_rcnn import Config

MIN_VISIBLE = 0.25  # a box cut by scale jitter is kept if this share of its area stays in frame


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
