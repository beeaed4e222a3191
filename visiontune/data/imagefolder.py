"""Decode an ImageFolder tree once into uint8 arrays that every trial shares.

Layouts: `DIR/{train,val,test}/<class>/<image>`, or `DIR/<class>/<image>` split 70/15/15 per class
with a fixed seed (`stratified_split`, the split the embedded generator writes its tree with).
Grayscale stays one channel (thermal data usually is); if any image is colour, every image
becomes RGB. All images are resized to one size (default: the most common one), so a
trial can index batches straight out of one array instead of running a DataLoader.

Every split must hold images: an explicit `train/`, `val/` or `test/` folder without any is bad
input (a split never evaluated would be reported as numbers nobody measured). The size is bounded
before anything is allocated: at most MAX_IMAGE_SIDE px per side, and the decoded dataset at most
a quarter of the memory available when it is loaded (MEMORY_SHARE: this process, Ray's object
store and every training process each hold a copy of it).
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from visiontune.errors import InputError

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm"}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P"}
MAX_IMAGE_SIDE = 4096  # px; 16.8 MB per grayscale image, 50 MB in RGB: beyond any trainable here
MEMORY_SHARE = 4  # the decoded dataset may take 1/MEMORY_SHARE of the memory available
LAYOUTS = "DIR/<class>/<image> or DIR/{train,val,test}/<class>/<image>"


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
        counts = {name: int(len(split.labels)) for name, split in self.splits.items()}
        return dataset_summary(self, self.classes, counts)


def _split_counts(size: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """How many of one class's images go to train, val and test; rounding slack goes to train."""
    val, test = (round(size * f) for f in fractions[1:])
    if size >= 3:
        # Every split needs each class, even a class too rare to earn one image by rounding.
        val = max(val, 1) if fractions[1] > 0 else val
        test = max(test, 1) if fractions[2] > 0 else test
    keep_train = 1 if fractions[0] > 0 and size > 0 else 0
    while val + test > size - keep_train:
        val, test = (val - 1, test) if val >= test else (val, test - 1)
    return size - val - test, val, test


def stratified_split(
    labels: np.ndarray, seed: int, fractions: Sequence[float] = (0.70, 0.15, 0.15)
) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices (sorted int64), the same for the same labels and seed.

    Each class is shuffled and cut by ``fractions`` (val and test rounded, train takes the
    rest); a class of three or more images puts at least one in every split. The embedded
    ir-solar-modules tree is written with this split, so changing it changes that dataset.
    """
    fracs = tuple(float(f) for f in fractions)
    if len(fracs) != 3 or min(fracs) < 0 or not math.isclose(sum(fracs), 1.0, abs_tol=1e-6):
        raise InputError(f"fractions must be three numbers >= 0 summing to 1, got {fractions!r}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InputError(f"labels must be one-dimensional, got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        train, val, _ = _split_counts(members.size, fracs)
        for name, chunk in zip(SPLITS, np.split(members, [train, train + val]), strict=True):
            parts[name].append(chunk)
    empty = np.empty(0, dtype=np.int64)
    return {name: np.sort(np.concatenate([empty, *chunks])) for name, chunks in parts.items()}


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
            if not dirs:
                raise InputError(
                    f"{root / name}: the {name} split folder has no class folders with images "
                    f"(expected {name}/<class>/<image>)"
                )
            extra = sorted({d.name for d in dirs} - set(classes))
            if extra:
                raise InputError(f"{root / name}: class folder(s) {extra} not in {root / 'train'}")
            per_split[name] = [(f, d.name) for d in dirs for f in _image_files(d)]
        return classes, per_split, []
    classes = tuple(p.name for p in _class_dirs(root))
    flat = [(f, name) for name in classes for f in _image_files(root / name)]
    return classes, None, flat


def decode_image(path: Path) -> np.ndarray:
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
    except (
        UnidentifiedImageError, OSError, ValueError, ImportError, Image.DecompressionBombError,
    ) as exc:  # fmt: skip
        # ImportError: once ultralytics is imported in the process, PIL's open of a file it does
        # not recognise goes on to look for an optional HEIF plugin (pi_heif) and fails there
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


def available_memory() -> int:
    """Bytes of memory this machine can still give a process without swapping."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_decoded_size(
    root: Path, count: int, channels: int, size: tuple[int, int], given: bool
) -> None:
    """InputError unless `count` images of `size` fit (see the module docstring): a side over
    MAX_IMAGE_SIDE, or more than 1/MEMORY_SHARE of the available memory."""
    height, width = size
    what = f"image_size {[height, width]}" if given else f"{root}: the most common image size"
    if max(height, width) > MAX_IMAGE_SIDE:
        raise InputError(
            f"{what} is larger than {MAX_IMAGE_SIDE} px per side; set data.image_size smaller"
        )
    needed, available = count * channels * height * width, available_memory()
    if needed * MEMORY_SHARE > available:
        raise InputError(
            f"{what}: {count} images of {height}x{width} px ({channels} channel(s)) take "
            f"{needed / 2**30:.1f} GiB decoded, more than 1/{MEMORY_SHARE} of the "
            f"{available / 2**30:.1f} GiB of memory available; set data.image_size smaller"
        )


def load_imagefolder(
    root: str | os.PathLike, image_size: tuple[int, int] | None = None, split_seed: int = 0
) -> ImageDataset:
    """Decode every image under `root` (see the module docstring for the layouts)."""
    root = Path(root).expanduser().resolve()
    if root.is_file():
        raise InputError(f"{root}: is a file; an ImageFolder dataset is a directory ({LAYOUTS})")
    if not root.is_dir():
        raise InputError(f"{root}: data directory does not exist")
    if image_size is not None:  # before decoding anything
        check_decoded_size(root, 1, 1, tuple(image_size), given=True)
    classes, per_split, flat = _list_layout(root)
    if len(classes) < 2:
        raise InputError(
            f"{root}: found {len(classes)} class folder(s) {list(classes)}; need at least 2 "
            f"({LAYOUTS})"
        )
    entries = flat if per_split is None else [e for name in SPLITS for e in per_split[name]]
    decoded = [decode_image(path) for path, _ in entries]
    rgb = any(array.ndim == 3 for array in decoded)
    given = image_size is not None
    if image_size is None:
        image_size = collections.Counter(a.shape[:2] for a in decoded).most_common(1)[0][0]
    check_decoded_size(root, len(decoded), 3 if rgb else 1, tuple(image_size), given)
    images = _to_array(decoded, tuple(image_size), rgb)
    del decoded
    labels = np.array([classes.index(name) for _, name in entries], dtype=np.int64)
    if per_split is None:
        index = stratified_split(labels, split_seed)
        splits = {name: Split(images[index[name]], labels[index[name]]) for name in SPLITS}
    else:  # the splits are consecutive: views of one array, no copy
        bounds = np.cumsum([0] + [len(per_split[name]) for name in SPLITS])
        parts = {name: slice(bounds[i], bounds[i + 1]) for i, name in enumerate(SPLITS)}
        splits = {name: Split(images[part], labels[part]) for name, part in parts.items()}
    for name in SPLITS:  # a flat tree whose classes are too small for a 70/15/15 split
        if len(splits[name].labels) == 0:
            raise InputError(
                f"{root}: the {name} split has no images (a class needs at least 3 images to "
                f"appear in train, val and test)"
            )
    mean, std = channel_stats(splits["train"].images)
    return ImageDataset(classes, splits, str(root), mean, std)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (floored at 1e-3) of uint8 NCHW `images` scaled to [0, 1],
    summed a chunk at a time so that no float copy of the whole array is made."""
    sums = np.zeros(images.shape[1])
    squares = np.zeros(images.shape[1])
    step = max(1, (64 << 20) // max(1, 8 * images[0].size))  # ~64 MB of float64 at a time
    for start in range(0, len(images), step):
        chunk = images[start : start + step].astype(np.float64) / 255.0
        sums += chunk.sum(axis=(0, 2, 3))
        squares += np.square(chunk).sum(axis=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = sums / count
    variance = np.maximum(squares / count - np.square(mean), 0.0)
    return (
        tuple(float(v) for v in mean),
        tuple(float(max(v, 1e-3)) for v in np.sqrt(variance)),
    )


def dataset_summary(dataset: Any, classes: Any, counts: dict[str, int]) -> dict[str, Any]:
    """dataset.json's fields every dataset has: source, classes, channels, image size and the
    number of images per split."""
    return {
        "source": dataset.source,
        "classes": list(classes),
        "channels": dataset.channels,
        "image_size": list(dataset.image_size),
        "counts": counts,
    }
