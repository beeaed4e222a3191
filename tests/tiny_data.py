"""Tiny in-memory and on-disk datasets that every task learns something from in a few epochs
(import as `from tiny_data import ...`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from visiontune.data.detection import DetectionDataset, DetectionSplit
from visiontune.data.imagefolder import ImageDataset, Split

HEIGHT, WIDTH = 24, 40  # classification images: not square, so a height/width mix-up shows
NAMES = ("hot", "warm", "rare")  # detection classes; "rare" has boxes in train only
SIZE = 64  # detection images, square
BRIGHTNESS = (230, 150, 100)  # per detection class, over a ground of 20..60
DETECTION_COUNTS = {"train": 16, "val": 8, "test": 8}


def _classification_split(n: int, rng: np.random.Generator) -> Split:
    """Class 0 dark, class 1 bright, with noise: separable by mean brightness."""
    labels = np.arange(n) % 2
    base = np.where(labels == 0, 50, 200)[:, None, None, None]
    images = base + rng.integers(-30, 30, size=(n, 1, HEIGHT, WIDTH))
    return Split(images.astype(np.uint8), labels.astype(np.int64))


def classification_dataset(seed: int = 0) -> ImageDataset:
    """Grey dark-vs-bright images: 32 train, 16 val, 16 test."""
    rng = np.random.default_rng(seed)
    splits = {
        "train": _classification_split(32, rng),
        "val": _classification_split(16, rng),
        "test": _classification_split(16, rng),
    }
    train = splits["train"].images.astype(np.float32) / 255.0
    return ImageDataset(
        ("dark", "bright"), splits, "mem", (float(train.mean()),), (float(train.std()),)
    )


def _write_detection_split(
    root: Path, split: str, count: int, rng: np.random.Generator
) -> DetectionSplit:
    images, boxes, labels, files = [], [], [], []
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for index in range(count):
        image = rng.integers(20, 60, (SIZE, SIZE)).astype(np.uint8)
        classes = [index % 2, (index + 1) % 2]
        if split == "train" and index % 4 == 0:
            classes.append(2)
        rows = []
        for slot, label in enumerate(classes):  # one box per horizontal band: no overlaps
            w, h = (int(v) for v in rng.integers(8, 18, 2))
            x0 = int(rng.integers(0, SIZE - w))
            y0 = slot * SIZE // len(classes) + int(rng.integers(0, SIZE // len(classes) - h + 1))
            image[y0 : y0 + h, x0 : x0 + w] = BRIGHTNESS[label]
            rows.append([(x0 + w / 2) / SIZE, (y0 + h / 2) / SIZE, w / SIZE, h / SIZE])
        path = root / "images" / split / f"{index:03d}.png"
        Image.fromarray(image).save(path)
        text = "".join(
            f"{c} {' '.join(f'{v:.6f}' for v in r)}\n" for c, r in zip(classes, rows, strict=True)
        )
        (root / "labels" / split / f"{index:03d}.txt").write_text(text)
        images.append(image)
        boxes.append(np.array(rows, dtype=np.float32))
        labels.append(np.array(classes, dtype=np.int64))
        files.append(str(path))
    return DetectionSplit(images, boxes, labels, files)


def write_detection_dataset(root: Path, seed: int = 0) -> DetectionDataset:
    """Bright boxes on a dark ground in YOLO layout under `root` (data.yaml with an absolute
    path), decoded as the loader would: 16 train, 8 val, 8 test images of 64x64."""
    rng = np.random.default_rng(seed)
    splits = {
        split: _write_detection_split(root, split, n, rng) for split, n in DETECTION_COUNTS.items()
    }
    meta = {
        "path": str(root),
        **{s: f"images/{s}" for s in DETECTION_COUNTS},
        "names": dict(enumerate(NAMES)),
    }
    (root / "data.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return DetectionDataset(NAMES, splits, "tiny", root / "data.yaml")
