"""Synthetic thermal drone images of photovoltaic arrays, every module boxed, in the YOLO layout.

Each image is one 8-bit thermal frame looking down on a few rows of modules (2-4 rows of 3-6
modules, 14-30 px per side at 128 px, small gaps within a row, wider aisles between rows, a
slight rotation) on cooler ground with its own texture and row shadows. Every module gets a
box and one of the five classes of the seed's detection set, in its order: ``NAMES``.
No-Anomaly is most boxes (``CLASS_SHARES``); "Unclassified" collects the other anomaly kinds
(hot spots, active bypass diodes, offline modules, soiling). The module face, the shared anomaly
shapes and the sensor come from :mod:`visiontune.data.thermal`, which
:mod:`visiontune.data.ir_solar` renders with too, so a detector and the module classifier see
the same physics; the array layout, the ground, the class table and the YOLO writer are here.

Run it
------
Write the embedded YOLO dataset (``OUT/data.yaml``, ``OUT/images/<split>/*.png``,
``OUT/labels/<split>/*.txt``)::

    visiontune data make pv-arrays --out OUT [--seed 0]

or from Python: ``write_yolo("OUT", {"train": 96, "val": 32, "test": 32}, seed=0,
contrast=1.0, size=128)``; ``render(rng)`` returns one image with its boxes.

Why the defaults
----------------
* ``IMAGE_SIZE = 128``: a multiple of 32 (YOLO's largest stride) and small enough that a
  YOLOv5n or a small Faster R-CNN trains an epoch of the default set in seconds on a CPU.
  Other multiples of 32 scale the whole layout, so the scene looks the same at 256.
* ``DEFAULT_NUM_IMAGES``: 96/32/32 images hold about 1,100/350/350 boxes, enough for every
  class to appear in every split (the rarest classes are ~8% of boxes, a few dozen per
  evaluation split) while an epoch stays cheap enough for a sweep on a CPU.
* ``DEFAULT_CONTRAST = 1.0``: anomaly amplitudes are in units of the sensor noise sigma
  (``AMPLITUDE``) and were chosen by eye on a contact sheet so most anomalies are visible
  while the weak end of each range sits near the noise and the cell-to-cell spread. Contrast
  multiplies all of them: at 0 every module looks healthy and only the boxes remain learnable.
  A YOLOv5n trained from scratch on the default set (ultralytics, SGD lr0 0.01, batch 16,
  40 epochs at 128 px, ~3 min on 2 CPU cores) reached test mAP50 0.23 at 1.0 (No-Anomaly AP50
  0.67, the anomaly classes 0.06-0.17) and 0.38 at 2.0: boxes are easy, telling anomalies apart
  is not, so hyperparameters have room to matter. Recalibrate against the real detector sweep.
* Everything is a pure function of the seed, and each split has its own random stream, so the
  validation images do not change when the number of training images does.
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import yaml
from PIL import Image

from visiontune.data import thermal
from visiontune.data.files import write_tree_atomically
from visiontune.data.thermal import NOISE_SIGMA
from visiontune.data.yolo_tree import SPLITS, format_labels
from visiontune.errors import InputError

NAMES: tuple[str, ...] = ("No-Anomaly", "Shadowing", "Cell-Multi", "Cell", "Unclassified")
# Share of boxes per class, in NAMES order: healthy modules dominate real inspections.
CLASS_SHARES: tuple[float, ...] = (0.64, 0.08, 0.08, 0.11, 0.09)
IMAGE_SIZE: int = 128
DEFAULT_NUM_IMAGES: dict[str, int] = {"train": 96, "val": 32, "test": 32}
DEFAULT_CONTRAST: float = 1.0

# Anomaly amplitude ranges in noise sigmas at contrast 1 (negative = cooler).
AMPLITUDE: dict[str, tuple[float, float]] = {
    "Shadowing": (1.5, 4.5),
    "Cell-Multi": (3.0, 8.0),
    "Cell": (4.0, 10.0),
    "Hot-Spot": (8.0, 16.0),
    "Diode": (2.5, 5.0),
    "Offline-Module": (2.5, 5.0),
    "Soiling": (2.5, 5.0),
}

_REFERENCE_SIZE = 128  # layout lengths below are in pixels at this image size
_SHORT_SIDE = (14.0, 19.0)
_ASPECT = (1.5, 1.75)  # long side / short side; long sides stop at _LONG_SIDE_MAX
_LONG_SIDE_MAX = 30.0
_MARGIN = 3.0  # between the array and the image border


@dataclass(frozen=True)
class _Module(thermal.ModuleFace):
    """One module's pixel window in the frame; ``u``, ``v`` follow the array's rotation there."""

    window: tuple[slice, slice]

    def rect(self, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
        """Soft coverage of a rectangle given in module coordinates."""
        inside_u = np.minimum(self.u - u0, u1 - self.u) * self.width
        inside_v = np.minimum(self.v - v0, v1 - self.v) * self.height
        return np.clip(np.minimum(inside_u, inside_v) + 0.5, 0.0, 1.0)


@dataclass(frozen=True)
class _Layout:
    rows: int
    cols: int
    width: float  # one module, px
    height: float
    gap: float  # between modules of a row
    aisle: float  # between rows
    angle: float  # radians; the whole array turns about its centre
    centre: tuple[float, float]  # (x, y) of the array, px


def _scaled(value: float, size: int) -> float:
    return value * size / _REFERENCE_SIZE


def _draw_layout(rng: np.random.Generator, size: int) -> _Layout:
    """Rows, columns, module size and pose of one array that fits inside the frame."""
    short = _scaled(rng.uniform(*_SHORT_SIDE), size)
    long = min(short * rng.uniform(*_ASPECT), _scaled(_LONG_SIDE_MAX, size))
    width, height = (short, long) if rng.random() < 0.6 else (long, short)
    gap = _scaled(rng.uniform(0.6, 1.8), size)
    aisle = _scaled(rng.uniform(3.0, 10.0), size)
    room = size - 2 * _scaled(_MARGIN, size)
    max_cols = int((room + gap) // (width + gap))
    max_rows = int((room + aisle) // (height + aisle))
    # Even the largest module with the widest gaps leaves room for 3 columns and 2 rows.
    cols = int(rng.integers(3, min(6, max_cols) + 1))
    rows = int(rng.integers(2, min(4, max_rows) + 1))
    extent_x = cols * width + (cols - 1) * gap
    extent_y = rows * height + (rows - 1) * aisle
    angle = math.radians(float(np.clip(rng.normal(0.0, 2.0), -5.0, 5.0)))
    # A rotated array needs more room; halve the angle until it fits (0 always fits).
    for _ in range(8):
        cos, sin = abs(math.cos(angle)), abs(math.sin(angle))
        span_x, span_y = extent_x * cos + extent_y * sin, extent_x * sin + extent_y * cos
        if span_x <= room and span_y <= room:
            break
        angle /= 2
    else:
        angle, span_x, span_y = 0.0, extent_x, extent_y
    slack_x, slack_y = (room - span_x) / 2, (room - span_y) / 2
    centre = (size / 2 + rng.uniform(-slack_x, slack_x), size / 2 + rng.uniform(-slack_y, slack_y))
    return _Layout(rows, cols, width, height, gap, aisle, angle, centre)


def _module_centres(layout: _Layout) -> np.ndarray:
    """(rows * cols, 2) pixel centres, row by row, rotated about the array centre."""
    step_x, step_y = layout.width + layout.gap, layout.height + layout.aisle
    local_x = (np.arange(layout.cols) - (layout.cols - 1) / 2) * step_x
    local_y = (np.arange(layout.rows) - (layout.rows - 1) / 2) * step_y
    gx, gy = np.meshgrid(local_x, local_y)
    cos, sin = math.cos(layout.angle), math.sin(layout.angle)
    x = layout.centre[0] + gx * cos - gy * sin
    y = layout.centre[1] + gx * sin + gy * cos
    return np.stack([x.ravel(), y.ravel()], axis=1)


def _module_at(centre: np.ndarray, layout: _Layout, size: int) -> tuple[_Module, np.ndarray]:
    """The module's pixel window and coordinates, and its tight box (x0, y0, x1, y1) in px."""
    cos, sin = math.cos(layout.angle), math.sin(layout.angle)
    half_x = (layout.width * abs(cos) + layout.height * abs(sin)) / 2
    half_y = (layout.width * abs(sin) + layout.height * abs(cos)) / 2
    cx, cy = float(centre[0]), float(centre[1])
    box = np.array([cx - half_x, cy - half_y, cx + half_x, cy + half_y])
    x0, y0 = max(int(box[0]) - 1, 0), max(int(box[1]) - 1, 0)
    x1, y1 = min(int(math.ceil(box[2])) + 1, size), min(int(math.ceil(box[3])) + 1, size)
    dx = np.arange(x0, x1, dtype=float)[None, :] + 0.5 - cx
    dy = np.arange(y0, y1, dtype=float)[:, None] + 0.5 - cy
    along, down = dx * cos + dy * sin, -dx * sin + dy * cos
    u, v = along / layout.width + 0.5, down / layout.height + 0.5
    inside = np.minimum(layout.width / 2 - np.abs(along), layout.height / 2 - np.abs(down))
    cover = np.clip(inside + 0.5, 0.0, 1.0)
    window = (slice(y0, y1), slice(x0, x1))
    module = _Module(u=u, v=v, cover=cover, width=layout.width, height=layout.height, window=window)
    return module, box


def _ground(rng: np.random.Generator, size: int, layout: _Layout) -> np.ndarray:
    """Ground between the rows: offset, a smooth tilt, patchy texture and row shadows."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    level = 100.0 + NOISE_SIGMA * rng.uniform(-4.0, 4.0)
    angle = rng.uniform(0.0, 2 * math.pi)
    tilt = NOISE_SIGMA * rng.uniform(0.0, 4.0)
    along = ((xs - size / 2) * math.cos(angle) + (ys - size / 2) * math.sin(angle)) / size
    texture_depth = NOISE_SIGMA * rng.uniform(0.4, 1.5)
    texture = texture_depth * thermal.smooth_noise(rng, xs / size, ys / size, (7, 7))
    # Each row shades a strip of ground on its side away from the sun, which stays cooler.
    shade_depth = NOISE_SIGMA * rng.uniform(0.5, 1.5)
    shade_width = layout.aisle * rng.uniform(0.3, 0.8)
    cos, sin = math.cos(layout.angle), math.sin(layout.angle)
    dx, dy = xs - layout.centre[0], ys - layout.centre[1]
    across, down = dx * cos + dy * sin, -dx * sin + dy * cos
    half_row = (layout.cols * (layout.width + layout.gap) - layout.gap) / 2
    step = layout.height + layout.aisle
    shade = np.zeros((size, size))
    for row in range(layout.rows):
        below = down - ((row - (layout.rows - 1) / 2) * step + layout.height / 2)
        band = np.clip(np.minimum(below, shade_width - below) + 0.5, 0, 1)
        shade += band * np.clip(half_row - np.abs(across) + 0.5, 0, 1)
    return level + tilt * along + texture - shade_depth * shade


def _healthy(m: _Module, rng: np.random.Generator, warmth: float) -> np.ndarray:
    """A healthy module's excess over the ground, in grey levels (before masking by cover)."""
    body = warmth + thermal.cell_pattern(m, rng, spread=0.3, grid_depth=(0.3, 0.8), falloff=2.0)
    # The aluminium frame has low emissivity, so it reads cooler than the glass.
    frame_depth = rng.uniform(0.5, 1.5)
    frame = 1.0 - m.rect(0.05, 0.95, 0.03, 0.97)
    return body - NOISE_SIGMA * frame_depth * frame


def _shadow(m: _Module, rng: np.random.Generator) -> np.ndarray:
    """A soft-edged cool half-plane over 15-55% of the module: a pole, a tree, the next row."""
    angle = rng.integers(4) * math.pi / 2 + (rng.random() < 0.4) * math.pi / 4
    angle += rng.normal(0.0, 0.15)
    depth = (m.u - 0.5) * math.cos(angle) * m.width + (m.v - 0.5) * math.sin(angle) * m.height
    reach = math.hypot(m.width * math.cos(angle), m.height * math.sin(angle)) / 2
    threshold = reach * (1.0 - 2.0 * rng.uniform(0.15, 0.55))
    strength = thermal.amplitude(rng, AMPLITUDE["Shadowing"])
    return -strength * thermal.sigmoid((depth - threshold) / rng.uniform(0.4, 1.0))


def _hot_cell(m: _Module, rng: np.random.Generator) -> np.ndarray:
    strength = thermal.amplitude(rng, AMPLITUDE["Cell"])
    return strength * thermal.cell(m, int(rng.integers(thermal.CELLS_SHORT * thermal.CELLS_LONG)))


def _hot_spot(m: _Module, rng: np.random.Generator) -> np.ndarray:
    # Smaller than a cell: a point defect (a failed solder joint), much hotter than a hot cell.
    u, v = rng.uniform(0.15, 0.85, 2)
    sigma = rng.uniform(0.5, 0.9)
    blob = thermal.spot((m.u - u) * m.width, (m.v - v) * m.height, sigma)
    return thermal.amplitude(rng, AMPLITUDE["Hot-Spot"]) * blob


def _diode(m: _Module, rng: np.random.Generator) -> np.ndarray:
    # Three bypass diodes each guard a third of the cells, split along the short side; an
    # active one turns its substring's power into heat.
    third = int(rng.integers(3))
    lo, hi = third / 3, (third + 1) / 3
    strip = m.rect(lo, hi, 0, 1) if m.portrait else m.rect(0, 1, lo, hi)
    return thermal.amplitude(rng, AMPLITUDE["Diode"]) * strip


def _soiling(m: _Module, rng: np.random.Generator) -> np.ndarray:
    patches, near_bottom = thermal.dirt(m, rng, (8, 5))
    return thermal.amplitude(rng, AMPLITUDE["Soiling"]) * patches * near_bottom


_UNCLASSIFIED: tuple[Callable[[_Module, np.random.Generator], np.ndarray], ...] = (
    _hot_spot,
    _diode,
    functools.partial(thermal.offline, bounds=AMPLITUDE["Offline-Module"]),
    _soiling,
)


def _unclassified(m: _Module, rng: np.random.Generator) -> np.ndarray:
    return _UNCLASSIFIED[int(rng.integers(len(_UNCLASSIFIED)))](m, rng)


_ANOMALIES: tuple[Callable[[_Module, np.random.Generator], np.ndarray], ...] = (
    thermal.no_anomaly,
    _shadow,
    functools.partial(thermal.hot_cells, bounds=AMPLITUDE["Cell-Multi"], most=6),
    _hot_cell,
    _unclassified,
)


def _check_size(size: int) -> None:
    if not (isinstance(size, int | np.integer) and size >= 64 and size % 32 == 0):
        raise InputError(f"size must be a multiple of 32 and at least 64, got {size!r}")


def render(
    rng: np.random.Generator, size: int = IMAGE_SIZE, contrast: float = DEFAULT_CONTRAST
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One thermal frame of a PV array: image uint8 (size, size), boxes float32 (n, 4) as
    normalised cx, cy, w, h (one tight box per module, row by row), labels int64 (n,).

    The random draws do not depend on ``contrast``, so the same generator state rendered at two
    contrasts gives the same scene with stronger or weaker anomalies.
    """
    _check_size(size)
    thermal.check_contrast(contrast)
    layout = _draw_layout(rng, size)
    scene = _ground(rng, size, layout)
    warmth = NOISE_SIGMA * rng.uniform(3.0, 6.0)  # modules in the sun run warmer than ground
    centres = _module_centres(layout)
    labels = rng.choice(len(NAMES), size=len(centres), p=CLASS_SHARES).astype(np.int64)
    boxes = np.empty((len(centres), 4))
    for i, (centre, label) in enumerate(zip(centres, labels, strict=True)):
        module, boxes[i] = _module_at(centre, layout, size)
        module_warmth = warmth + NOISE_SIGMA * rng.normal(0.0, 0.4)
        body = _healthy(module, rng, module_warmth)
        anomaly = _ANOMALIES[label](module, rng)
        body = body + contrast * NOISE_SIGMA * anomaly
        # A module reads as its excess over the local ground; cover is 0 outside the module,
        # so the margin of its window and any neighbour sharing it stay untouched.
        scene[module.window] += module.cover * body
    image = thermal.expose(scene, rng)
    cxcywh = np.stack(
        [
            (boxes[:, 0] + boxes[:, 2]) / 2,
            (boxes[:, 1] + boxes[:, 3]) / 2,
            boxes[:, 2] - boxes[:, 0],
            boxes[:, 3] - boxes[:, 1],
        ],
        axis=1,
    )
    return image, (cxcywh / size).astype(np.float32), labels


def _split_images(
    seed_sequence: np.random.SeedSequence, count: int, size: int, contrast: float
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed_sequence)
    return [render(rng, size, contrast) for _ in range(count)]


def _check_counts(num_images: Mapping[str, int]) -> dict[str, int]:
    unknown = sorted(set(num_images) - set(SPLITS))
    if unknown:
        raise InputError(f"num_images: unknown split(s) {unknown}; expected {', '.join(SPLITS)}")
    counts = {split: num_images.get(split, 0) for split in SPLITS}
    for split, count in counts.items():
        if not (isinstance(count, int | np.integer) and count >= 1):
            raise InputError(f"num_images[{split!r}] must be an integer >= 1, got {count!r}")
    return {split: int(count) for split, count in counts.items()}


def generate(
    num_images: Mapping[str, int] = DEFAULT_NUM_IMAGES,
    seed: int = 0,
    contrast: float = DEFAULT_CONTRAST,
    size: int = IMAGE_SIZE,
) -> dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """{split: [(image, boxes, labels), ...]} like ``render``; each split has its own stream."""
    counts = _check_counts(num_images)
    _check_size(size)
    thermal.check_contrast(contrast)
    streams = np.random.SeedSequence(seed).spawn(len(SPLITS))
    return {
        split: _split_images(stream, counts[split], size, contrast)
        for split, stream in zip(SPLITS, streams, strict=True)
    }


def _data_yaml() -> str:
    # `path: .` keeps the folder relocatable; load_yolo resolves it against this file's folder
    # (ultralytics would use the cwd, so trainers get load_yolo's absolute copy instead).
    data = {
        "path": ".",
        **{split: f"images/{split}" for split in SPLITS},
        "names": dict(enumerate(NAMES)),
    }
    return yaml.safe_dump(data, sort_keys=False)


def _write_tree(
    root: pathlib.Path, splits: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]
) -> None:
    for split, samples in splits.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for index, (image, boxes, labels) in enumerate(samples):
            stem = f"{split}_{index:05d}"
            Image.fromarray(image).save(root / "images" / split / f"{stem}.png")
            (root / "labels" / split / f"{stem}.txt").write_text(format_labels(boxes, labels))
    (root / "data.yaml").write_text(_data_yaml())


def write_yolo(
    out_dir: str | os.PathLike[str],
    num_images: Mapping[str, int] = DEFAULT_NUM_IMAGES,
    seed: int = 0,
    contrast: float = DEFAULT_CONTRAST,
    size: int = IMAGE_SIZE,
) -> pathlib.Path:
    """Write a YOLO dataset of 8-bit grey PNGs with a relative data.yaml; return the resolved root.

    The tree is written into a hidden sibling and renamed into place in one step, so out_dir
    is either absent or complete, never half-written.
    """
    splits = generate(num_images, seed, contrast, size)
    return write_tree_atomically(out_dir, lambda root: _write_tree(root, splits))
