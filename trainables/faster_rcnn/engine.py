"""Faster R-CNN's loops: one training epoch, prediction, and COCO evaluation of a prepared split."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from visiontune.trainables.faster_rcnn.augment import Augmentation
from visiontune.trainables.faster_rcnn.data import DetectionTensors, to_float, to_model_input
from visiontune.trainables.session import FULL_PRECISION, Precision, to_device

LOSSES = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
EVAL_BATCH_SIZE = 8


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
    the boxes on the CPU; backward and step under `precision` (loss scaling for float16). Mixed
    precision itself lives in the model: its backbone only (model.autocast_backbone)."""
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
    model: nn.Module, images: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE
) -> list[dict[str, torch.Tensor]]:
    """Detections (boxes xyxy px, scores, labels 1-based) for uint8 NCHW images, eval mode;
    float32 boxes and scores (only a mixed-precision model's backbone autocasts)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        out += model(to_model_input(to_float(images[start : start + batch_size])))
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


def evaluate(model: nn.Module, data: DetectionTensors, names: tuple[str, ...]) -> dict[str, Any]:
    """COCO metrics of `model` on one prepared split (see `compute_map`), no augmentation."""
    predictions = predict(model, data.images)
    targets = [{"boxes": b, "labels": c} for b, c in zip(data.boxes, data.labels, strict=True)]
    return compute_map(predictions, targets, names)
