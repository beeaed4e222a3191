"""Object-detection datasets in the YOLO layout, decoded once and shared by every trial.

Layout: a `data.yaml` with `path`, `train`, `val`, `test` (folders of images relative to `path`)
and `names` (list or {index: name}); labels live beside the images with `images` replaced by
`labels` in the path and a `.txt` suffix, one `class cx cy w h` line per box, normalised to [0, 1].
Both detectors read the same dataset: Faster R-CNN from the decoded arrays here, ultralytics from
the files (through `yolo_yaml`, a copy of data.yaml with an absolute `path`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DetectionSplit:
    images: list[np.ndarray]  # uint8, (H, W) grayscale or (H, W, 3) RGB, one per image
    boxes: list[np.ndarray]  # float32 (n, 4) per image: normalised cx, cy, w, h in [0, 1]
    labels: list[np.ndarray]  # int64 (n,) per image: class index into names
    files: list[str]  # absolute image paths (for messages and for ultralytics)

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class DetectionDataset:
    names: tuple[str, ...]
    splits: dict[str, DetectionSplit]
    source: str  # what the user named: an embedded dataset name or the data.yaml path
    yolo_yaml: Path  # absolute data.yaml ultralytics can read from any working directory

    @property
    def channels(self) -> int:
        first = self.splits["train"].images[0]
        return 1 if first.ndim == 2 else int(first.shape[2])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the most common training image size."""
        sizes = [img.shape[:2] for img in self.splits["train"].images]
        return max(set(sizes), key=sizes.count)

    def summary(self) -> dict:
        return {
            "source": self.source,
            "classes": list(self.names),
            "channels": self.channels,
            "image_size": list(self.image_size),
            "counts": {name: len(split) for name, split in self.splits.items()},
            "boxes": {name: int(sum(len(b) for b in s.boxes)) for name, s in self.splits.items()},
        }
