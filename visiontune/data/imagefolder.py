"""Decode an ImageFolder tree once into uint8 arrays that every trial shares.

Layouts: `DIR/{train,val,test}/<class>/<image>`, or `DIR/<class>/<image>` split 70/15/15 per class
with a fixed seed. Grayscale stays one channel (thermal data usually is); if any image is colour,
every image becomes RGB. All images are resized to one size (default: the most common one), so a
trial can index batches straight out of one array instead of running a DataLoader.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from visiontune.errors import InputError

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm"}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P"}


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)


@dataclass(frozen=True)
class ImageDataset:
    classes: tuple[str, ...]
    splits: dict[str, Split]
    source: str
    mean: tuple[float, ...] = field(default=())  # per channel, of train images scaled to [0, 1]
    std: tuple[float, ...] = field(default=())

    @property
    def channels(self) -> int:
        return int(self.splits["train"].images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        _, _, height, width = self.splits["train"].images.shape
        return int(height), int(width)

    def summary(self) -> dict:
        return {
            "source": self.source,
            "classes": list(self.classes),
            "channels": self.channels,
            "image_size": list(self.image_size),
            "counts": {name: int(len(split.labels)) for name, split in self.splits.items()},
        }


def stratified_split(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Per-class 70/15/15 split of indices; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_val = int(round(0.15 * len(idx)))
        n_test = int(round(0.15 * len(idx)))
        n_train = len(idx) - n_val - n_test
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train : n_train + n_val])
        parts["test"].append(idx[n_train + n_val :])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(
        p
        for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise InputError(
            f"{class_dir}: class folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return files


def _list_layout(
    root: Path,
) -> tuple[tuple[str, ...], dict[str, list[tuple[Path, str]]] | None, list]:
    """Return classes and either per-split file lists or (None, flat file list)."""
    present = [name for name in SPLITS if (root / name).is_dir()]
    if present and len(present) < len(SPLITS):
        missing = ", ".join(name for name in SPLITS if name not in present)
        raise InputError(f"{root}: has split folder(s) {', '.join(present)} but not {missing}")
    if present:
        classes = tuple(p.name for p in _class_dirs(root / "train"))
        per_split = {}
        for name in SPLITS:
            dirs = _class_dirs(root / name)
            extra = sorted({d.name for d in dirs} - set(classes))
            if extra:
                raise InputError(f"{root / name}: class folder(s) {extra} not in {root / 'train'}")
            per_split[name] = [(f, d.name) for d in dirs for f in _image_files(d)]
        return classes, per_split, []
    classes = tuple(p.name for p in _class_dirs(root))
    flat = [(f, name) for name in classes for f in _image_files(root / name)]
    return classes, None, flat


def _decode(path: Path) -> np.ndarray:
    """HxW (grayscale) or HxWx3 uint8 array of one image file."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in _GRAY_MODES:
                array = np.asarray(img.convert("L") if img.mode in {"1", "LA", "P"} else img)
                if array.dtype.kind == "u" and array.dtype.itemsize == 2:  # I;16, I;16L, I;16B
                    return (array.astype(np.uint16) >> 8).astype(np.uint8)
                return np.clip(array, 0, 255).astype(np.uint8)
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read image ({exc.__class__.__name__})") from None


def _to_array(decoded: list[np.ndarray], size: tuple[int, int], rgb: bool) -> np.ndarray:
    out = np.empty((len(decoded), 3 if rgb else 1, *size), dtype=np.uint8)
    for i, array in enumerate(decoded):
        if array.shape[:2] != size:
            array = np.asarray(Image.fromarray(array).resize(size[::-1], Image.BILINEAR))
        if rgb and array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        out[i] = array.transpose(2, 0, 1) if array.ndim == 3 else array[None]
    return out


def load_imagefolder(
    root: str | os.PathLike, image_size: tuple[int, int] | None = None, split_seed: int = 0
) -> ImageDataset:
    """Decode every image under `root` (see the module docstring for the layouts)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"{root}: data directory does not exist")
    classes, per_split, flat = _list_layout(root)
    if len(classes) < 2:
        raise InputError(
            f"{root}: found {len(classes)} class folder(s) {list(classes)}; need at least 2"
        )
    entries = flat if per_split is None else [e for name in SPLITS for e in per_split[name]]
    decoded = [_decode(path) for path, _ in entries]
    rgb = any(array.ndim == 3 for array in decoded)
    if image_size is None:
        image_size = collections.Counter(a.shape[:2] for a in decoded).most_common(1)[0][0]
    images = _to_array(decoded, tuple(image_size), rgb)
    labels = np.array([classes.index(name) for _, name in entries], dtype=np.int64)
    if per_split is None:
        index = stratified_split(labels, split_seed)
    else:
        bounds = np.cumsum([0] + [len(per_split[name]) for name in SPLITS])
        index = {name: np.arange(bounds[i], bounds[i + 1]) for i, name in enumerate(SPLITS)}
    splits = {name: Split(images[index[name]], labels[index[name]]) for name in SPLITS}
    for name in ("train", "val"):
        if len(splits[name].labels) == 0:
            raise InputError(f"{root}: the {name} split has no images")
    train = splits["train"].images.astype(np.float32) / 255.0
    mean = tuple(float(v) for v in train.mean(axis=(0, 2, 3)))
    std = tuple(float(max(v, 1e-3)) for v in train.std(axis=(0, 2, 3)))
    return ImageDataset(classes, splits, str(root), mean, std)
