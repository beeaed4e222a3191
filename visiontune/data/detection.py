"""Object-detection datasets in the YOLO layout, decoded once and shared by every trial.

Layout: a `data.yaml` with `path`, `train`, `val`, `test` (folders of images relative to `path`)
and `names` (list or {index: name}); labels live beside the images with `images` replaced by
`labels` in the path and a `.txt` suffix, one `class cx cy w h` line per box, normalised to [0, 1].
Both detectors read the same dataset: Faster R-CNN from the decoded arrays here, ultralytics from
the files (through `yolo_yaml`, a copy of data.yaml with an absolute `path`).

`load_yolo` resolves a relative `path` against the data.yaml's own folder (a missing `path` means
that folder), so a dataset can be moved or named from any working directory. Ultralytics resolves
it against the cwd instead; `yolo_yaml` is therefore written with absolute paths into a cache
folder under the system temp dir, never into the user's dataset. Labels are found the way
ultralytics finds them (the last `images` folder of the image path becomes `labels`; without
one, the `.txt` sits beside the image), so both detectors train on the same boxes. An image
without a label file is a background image; a label file without an image is an error.
Writing the layout (that copy, label text, a whole tree from memory) is yolo_tree.py's job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from visiontune.data.imagefolder import dataset_summary, decode_image
from visiontune.data.yolo_tree import SPLITS, write_yolo_yaml
from visiontune.errors import InputError
from visiontune.params import short_repr

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


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
        counts = {name: len(split) for name, split in self.splits.items()}
        boxes = {name: int(sum(len(b) for b in s.boxes)) for name, s in self.splits.items()}
        return {**dataset_summary(self, self.names, counts), "boxes": boxes}


def to_xyxy_abs(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normalised (n, 4) cx, cy, w, h -> float32 (n, 4) absolute x1, y1, x2, y2 in pixels."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy, w, h = boxes.T
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return (xyxy * np.array([width, height, width, height], dtype=np.float64)).astype(np.float32)


def load_yolo(data_yaml: str | os.PathLike) -> DetectionDataset:
    """Decode every image and label of a YOLO dataset (see the module docstring for the layout).

    `data_yaml` may also name a folder holding a `data.yaml`. If any image is colour, every
    image is returned as RGB, so a trainer can batch them without checking.
    """
    yaml_path = _find_yaml(Path(data_yaml))
    data = _read_yaml(yaml_path)
    names = _parse_names(data, yaml_path)
    root = _dataset_root(data, yaml_path)
    split_dirs = {split: _split_dir(data, split, root, yaml_path) for split in SPLITS}
    splits = {
        split: _read_split(folder, split, names, yaml_path) for split, folder in split_dirs.items()
    }
    if any(img.ndim == 3 for split in splits.values() for img in split.images):
        splits = {name: _as_rgb(split) for name, split in splits.items()}
    yolo_yaml = write_yolo_yaml(yaml_path, data, root, split_dirs, names)
    return DetectionDataset(names, splits, str(yaml_path), yolo_yaml)


def label_path(image: Path) -> Path:
    """Where ultralytics looks for an image's labels: the last `images` folder becomes `labels`
    and the suffix `.txt`; an image with no `images` folder above it keeps its labels beside it."""
    parts = image.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            return Path(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")
    return image.with_suffix(".txt")


def _find_yaml(path: Path) -> Path:
    path = path.expanduser().resolve()
    if path.is_dir() and (path / "data.yaml").is_file():
        return path / "data.yaml"
    if path.is_dir():
        raise InputError(f"{path}: is a folder without a data.yaml; name the YOLO data.yaml")
    if not path.is_file():
        raise InputError(f"{path}: data.yaml does not exist")
    return path


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise InputError(f"{path}{where}: malformed YAML ({problem})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read data.yaml ({exc.__class__.__name__})") from None
    if data is None:
        raise InputError(f"{path}: data.yaml is empty; it needs train, val, test and names")
    if not isinstance(data, dict):
        raise InputError(
            f"{path}: expected a mapping with train, val, test and names, got {type(data).__name__}"
        )
    for key in (*SPLITS, "names"):
        if data.get(key) is None:
            raise InputError(
                f"{path}: missing key {key!r} (a data.yaml needs train, val, test, names)"
            )
    return data


def _parse_names(data: dict[str, Any], path: Path) -> tuple[str, ...]:
    raw = data["names"]
    if isinstance(raw, dict):
        keys = list(raw)
        indices = all(isinstance(k, int) and not isinstance(k, bool) for k in keys)
        if not indices or set(keys) != set(range(len(keys))):
            raise InputError(
                f"{path}: 'names' keys must be the indices 0..{len(keys) - 1}, got {short_repr(keys)}"
            )
        raw = [raw[i] for i in range(len(keys))]
    if not isinstance(raw, list) or not raw:
        raise InputError(
            f"{path}: 'names' must be a non-empty list or {{index: name}}, got {short_repr(raw)}"
        )
    bad = [
        name for name in raw if not isinstance(name, str | int | float) or isinstance(name, bool)
    ]
    if bad:
        raise InputError(f"{path}: 'names' entries must be plain names, got {short_repr(bad[0])}")
    if data.get("nc") is not None and data["nc"] != len(raw):
        raise InputError(
            f"{path}: 'nc: {short_repr(data['nc'])}' does not match the {len(raw)} names"
        )
    return tuple(str(name) for name in raw)


def _dataset_root(data: dict[str, Any], path: Path) -> Path:
    raw = data.get("path")
    if raw is None or raw == "":
        return path.parent
    if not isinstance(raw, str):
        raise InputError(f"{path}: 'path' must be a folder, got {short_repr(raw)}")
    # Unlike ultralytics (cwd), a relative path is relative to the data.yaml's folder.
    root = (path.parent / Path(raw).expanduser()).resolve()
    if not root.is_dir():
        raise InputError(f"{path}: 'path' folder {root} does not exist")
    return root


def _split_dir(data: dict[str, Any], split: str, root: Path, path: Path) -> Path:
    raw = data[split]
    if not isinstance(raw, str) or not raw.strip():  # "" would be the whole dataset folder
        raise InputError(f"{path}: {split!r} must be one folder of images, got {short_repr(raw)}")
    folder = (root / Path(raw).expanduser()).resolve()
    if folder.is_file():
        raise InputError(f"{path}: {split!r} is a file ({folder}); name a folder of images")
    if not folder.is_dir():
        raise InputError(f"{path}: {split!r} folder {folder} does not exist")
    return folder


def _visible_files(folder: Path) -> list[Path]:
    """Every file under folder, recursively, skipping hidden files and folders like glob does."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, f) for f in filenames if not f.startswith(".")]
    return sorted(found, key=str)


def _read_split(folder: Path, split: str, names: tuple[str, ...], path: Path) -> DetectionSplit:
    images = [f for f in _visible_files(folder) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise InputError(f"{folder}: no images ({suffixes}) for split {split!r} of {path}")
    label_files = [label_path(image) for image in images]
    _check_orphans(_labels_dir(folder), set(label_files), folder)
    decoded = [decode_image(image) for image in images]
    parsed = [_read_labels(label, len(names)) for label in label_files]
    return DetectionSplit(
        images=decoded,
        boxes=[boxes for boxes, _ in parsed],
        labels=[labels for _, labels in parsed],
        files=[str(image) for image in images],
    )


def _labels_dir(images_dir: Path) -> Path:
    """The folder that mirrors images_dir for labels (images_dir itself if it has no `images`)."""
    parts = images_dir.parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            return Path(*parts[:i], "labels", *parts[i + 1 :])
    return images_dir


def _check_orphans(labels_dir: Path, expected: set[Path], images_dir: Path) -> None:
    if not labels_dir.is_dir():
        return
    for file in _visible_files(labels_dir):
        # labelImg writes its class list among the labels; it is not a label file.
        if file.suffix == ".txt" and file.name != "classes.txt" and file not in expected:
            raise InputError(f"{file}: label file has no matching image in {images_dir}")


def _read_labels(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read label file ({exc.__class__.__name__})") from None
    rows = [
        _parse_label_line(line, f"{path}:{number}", num_classes)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not rows:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    table = np.array(rows, dtype=np.float64)
    return table[:, 1:].astype(np.float32), table[:, 0].astype(np.int64)


def _parse_label_line(line: str, where: str, num_classes: int) -> list[float]:
    fields = line.split()
    try:
        values = [float(field) for field in fields]
    except ValueError:
        values = []
    if len(values) != 5:
        shown = line.strip() if len(line.strip()) <= 80 else line.strip()[:77] + "..."
        raise InputError(
            f"{where}: malformed label line {shown!r}; expected 5 numbers 'class cx cy w h'"
        )
    label = values[0]
    if not label.is_integer():
        raise InputError(f"{where}: class {short_repr(fields[0])} is not an integer")
    if not 0 <= label < num_classes:
        raise InputError(
            f"{where}: class {fields[0]} is out of range 0..{num_classes - 1} ({num_classes} names)"
        )
    for key, field, value in zip(("cx", "cy", "w", "h"), fields[1:], values[1:], strict=True):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{where}: {key} {field} is outside [0, 1]")
    if values[3] <= 0 or values[4] <= 0:
        raise InputError(f"{where}: box w {fields[3]} and h {fields[4]} must both be > 0")
    return values


def _as_rgb(split: DetectionSplit) -> DetectionSplit:
    images = [
        np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img for img in split.images
    ]
    return DetectionSplit(images, split.boxes, split.labels, split.files)
