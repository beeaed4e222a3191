"""Synthetic thermal drone images of photovoltaic arrays, every module boxed, in the YOLO layout.

Each image is one 8-bit thermal frame looking down on a few rows of modules (2-4 rows of 3-6
modules, 14-30 px per side at 128 px, small gaps within a row, wider aisles between rows, a
slight rotation) on cooler ground with its own texture and row shadows. Every module gets a box and one of the five classes of
the seed's detection set, in its order: ``NAMES``. No-Anomaly is most boxes (``CLASS_SHARES``);
"Unclassified" collects the other anomaly kinds (hot spots, active bypass diodes, offline
modules, soiling). The module appearance and the sensor model follow
:mod:`visiontune.data.ir_solar` (cells, cooler frame, offset, gradient, correlated noise, blur,
row/column stripes), so a detector and the module classifier see the same physics.

Run it
------
Write a YOLO dataset (``OUT/data.yaml``, ``OUT/images/<split>/*.png``, ``OUT/labels/<split>/*.txt``)::

    python -m visiontune.data.pv_arrays OUT [--seed 0] [--contrast 1.0] [--size 128]

or from Python: ``write_yolo("OUT")``; ``render(rng)`` returns one image with its boxes.

Why the defaults
----------------
* ``IMAGE_SIZE = 128``: a multiple of 32 (YOLO's largest stride) and small enough that a
  YOLOv5n or a small Faster R-CNN trains an epoch of the default set in seconds on a CPU.
  Other multiples of 32 scale the whole layout, so the scene looks the same at 256.
* ``DEFAULT_NUM_IMAGES``: 96/32/32 images hold about 1,100/350/350 boxes, enough for every
  class to appear in every split (the rarest classes are ~8% of boxes, a few dozen per
  evaluation split) while an epoch stays cheap enough for a sweep on a CPU.
* ``DEFAULT_CONTRAST = 1.0``: anomaly amplitudes are in units of the sensor noise sigma
  (``_AMPLITUDE``) and were chosen by eye on a contact sheet so most anomalies are visible
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

import argparse
import math
import os
import pathlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import yaml
from PIL import Image

from visiontune.data.detection import format_labels
from visiontune.data.files import write_tree_atomically
from visiontune.data.ir_solar import (
    NOISE_SIGMA,
    _blur,
    _check_contrast,
    _sigmoid,
)
from visiontune.errors import InputError

NAMES: tuple[str, ...] = ("No-Anomaly", "Shadowing", "Cell-Multi", "Cell", "Unclassified")
# Share of boxes per class, in NAMES order: healthy modules dominate real inspections.
CLASS_SHARES: tuple[float, ...] = (0.64, 0.08, 0.08, 0.11, 0.09)
IMAGE_SIZE: int = 128
DEFAULT_NUM_IMAGES: dict[str, int] = {"train": 96, "val": 32, "test": 32}
DEFAULT_CONTRAST: float = 1.0
SPLITS = ("train", "val", "test")

# Anomaly amplitude ranges in noise sigmas at contrast 1 (negative = cooler).
_AMPLITUDE: dict[str, tuple[float, float]] = {
    "Shadowing": (1.5, 4.5),
    "Cell-Multi": (3.0, 8.0),
    "Cell": (4.0, 10.0),
    "Hot-Spot": (8.0, 16.0),
    "Diode": (2.5, 5.0),
    "Offline-Module": (2.5, 5.0),
    "Soiling": (2.5, 5.0),
}
# A 60-cell module: 6 cells across its short side, 10 along its long side.
_CELLS_SHORT, _CELLS_LONG = 6, 10
_REFERENCE_SIZE = 128  # layout lengths below are in pixels at this image size
_SHORT_SIDE = (14.0, 19.0)
_ASPECT = (1.5, 1.75)  # long side / short side; long sides stop at _LONG_SIDE_MAX
_LONG_SIDE_MAX = 30.0
_MARGIN = 3.0  # between the array and the image border


@dataclass(frozen=True)
class _Module:
    """One module's pixel window and its own coordinates there.

    ``u`` runs 0..1 across the module's width and ``v`` 0..1 down its height (the module's own
    axes, so they follow the array's rotation); ``cover`` is the anti-aliased footprint.
    """

    window: tuple[slice, slice]
    u: np.ndarray
    v: np.ndarray
    cover: np.ndarray
    width: float
    height: float

    @property
    def portrait(self) -> bool:
        return self.height >= self.width

    def cells(self) -> tuple[int, int]:
        """(rows, cols) of cells."""
        if self.portrait:
            return _CELLS_LONG, _CELLS_SHORT
        return _CELLS_SHORT, _CELLS_LONG

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
    return _Module(window, u, v, cover, layout.width, layout.height), box


def _smooth_noise(
    rng: np.random.Generator, u: np.ndarray, v: np.ndarray, lattice_shape: tuple[int, int]
) -> np.ndarray:
    """Bilinearly upsampled random lattice in [-1, 1] over u, v in [0, 1]."""
    rows, cols = lattice_shape
    lattice = rng.uniform(-1.0, 1.0, lattice_shape)
    gy = np.clip(v, 0, 1) * (rows - 1)
    gx = np.clip(u, 0, 1) * (cols - 1)
    y0 = np.minimum(gy.astype(int), rows - 2)
    x0 = np.minimum(gx.astype(int), cols - 2)
    fy, fx = gy - y0, gx - x0
    top = lattice[y0, x0] * (1 - fx) + lattice[y0, x0 + 1] * fx
    bottom = lattice[y0 + 1, x0] * (1 - fx) + lattice[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _ground(rng: np.random.Generator, size: int, layout: _Layout) -> np.ndarray:
    """Ground between the rows: offset, a smooth tilt, patchy texture and row shadows."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    level = 100.0 + NOISE_SIGMA * rng.uniform(-4.0, 4.0)
    angle = rng.uniform(0.0, 2 * math.pi)
    tilt = NOISE_SIGMA * rng.uniform(0.0, 4.0)
    along = ((xs - size / 2) * math.cos(angle) + (ys - size / 2) * math.sin(angle)) / size
    texture = NOISE_SIGMA * rng.uniform(0.4, 1.5) * _smooth_noise(rng, xs / size, ys / size, (7, 7))
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


def _grid_lines(m: _Module) -> np.ndarray:
    """1 on the thin gaps between cells, fading to 0 half a pixel away."""
    rows, cols = m.cells()
    across, down = m.u * cols, m.v * rows
    dist_x = np.abs(across - np.rint(across)) * (m.width / cols)
    dist_y = np.abs(down - np.rint(down)) * (m.height / rows)
    return np.clip(1.0 - 2.0 * np.minimum(dist_x, dist_y), 0.0, 1.0)


def _healthy(m: _Module, rng: np.random.Generator, warmth: float) -> np.ndarray:
    """A healthy module's excess over the ground, in grey levels (before masking by cover)."""
    rows, cols = m.cells()
    # Cells are never identical (binning, soldering), which is what makes one hot cell subtle.
    spread = rng.normal(0.0, 0.3, (rows, cols))
    r = np.clip((m.v * rows).astype(int), 0, rows - 1)
    c = np.clip((m.u * cols).astype(int), 0, cols - 1)
    grid_depth, frame_depth = rng.uniform(0.3, 0.8), rng.uniform(0.5, 1.5)
    body = warmth + NOISE_SIGMA * (spread[r, c] - grid_depth * _grid_lines(m))
    # The aluminium frame has low emissivity, so it reads cooler than the glass.
    frame = 1.0 - m.rect(0.05, 0.95, 0.03, 0.97)
    return body - NOISE_SIGMA * frame_depth * frame


def _amp(name: str, rng: np.random.Generator) -> float:
    return float(rng.uniform(*_AMPLITUDE[name]))


def _cell(m: _Module, index: int) -> np.ndarray:
    rows, cols = m.cells()
    row, col = divmod(index, cols)
    return m.rect(col / cols, (col + 1) / cols, row / rows, (row + 1) / rows)


def _no_anomaly(m: _Module, rng: np.random.Generator) -> np.ndarray:
    return np.zeros_like(m.u)


def _shadow(m: _Module, rng: np.random.Generator) -> np.ndarray:
    """A soft-edged cool half-plane over 15-55% of the module: a pole, a tree, the next row."""
    angle = rng.integers(4) * math.pi / 2 + (rng.random() < 0.4) * math.pi / 4
    angle += rng.normal(0.0, 0.15)
    depth = (m.u - 0.5) * math.cos(angle) * m.width + (m.v - 0.5) * math.sin(angle) * m.height
    reach = math.hypot(m.width * math.cos(angle), m.height * math.sin(angle)) / 2
    threshold = reach * (1.0 - 2.0 * rng.uniform(0.15, 0.55))
    return -_amp("Shadowing", rng) * _sigmoid((depth - threshold) / rng.uniform(0.4, 1.0))


def _hot_cell(m: _Module, rng: np.random.Generator) -> np.ndarray:
    return _amp("Cell", rng) * _cell(m, int(rng.integers(_CELLS_SHORT * _CELLS_LONG)))


def _hot_cells(m: _Module, rng: np.random.Generator) -> np.ndarray:
    picks = rng.choice(_CELLS_SHORT * _CELLS_LONG, size=int(rng.integers(2, 7)), replace=False)
    return sum(_amp("Cell-Multi", rng) * _cell(m, int(index)) for index in picks)


def _hot_spot(m: _Module, rng: np.random.Generator) -> np.ndarray:
    # Smaller than a cell: a point defect (a failed solder joint), much hotter than a hot cell.
    u, v = rng.uniform(0.15, 0.85, 2)
    sigma = rng.uniform(0.5, 0.9)
    dist2 = ((m.u - u) * m.width) ** 2 + ((m.v - v) * m.height) ** 2
    return _amp("Hot-Spot", rng) * np.exp(-dist2 / (2 * sigma**2))


def _diode(m: _Module, rng: np.random.Generator) -> np.ndarray:
    # Three bypass diodes each guard a third of the cells, split along the short side; an
    # active one turns its substring's power into heat.
    third = int(rng.integers(3))
    lo, hi = third / 3, (third + 1) / 3
    strip = m.rect(lo, hi, 0, 1) if m.portrait else m.rect(0, 1, lo, hi)
    return _amp("Diode", rng) * strip


def _offline(m: _Module, rng: np.random.Generator) -> np.ndarray:
    # An open-circuit module turns all absorbed light into heat, evenly over every cell.
    return np.full_like(m.u, _amp("Offline-Module", rng))


def _soiling(m: _Module, rng: np.random.Generator) -> np.ndarray:
    # Rain drains dirt to the lower frame, so patches thin out with distance from the bottom.
    threshold = rng.uniform(-0.4, 0.1)
    patches = np.clip(_smooth_noise(rng, m.u, m.v, (8, 5)) - threshold, 0, None) / (1 - threshold)
    near_bottom = np.exp(-(1 - m.v) / rng.uniform(0.15, 0.35))
    return _amp("Soiling", rng) * patches * near_bottom


_UNCLASSIFIED = (_hot_spot, _diode, _offline, _soiling)


def _unclassified(m: _Module, rng: np.random.Generator) -> np.ndarray:
    return _UNCLASSIFIED[int(rng.integers(len(_UNCLASSIFIED)))](m, rng)


_ANOMALIES: tuple[Callable[[_Module, np.random.Generator], np.ndarray], ...] = (
    _no_anomaly,
    _shadow,
    _hot_cells,
    _hot_cell,
    _unclassified,
)


def _expose(scene: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Optics blur, sensor noise (about NOISE_SIGMA per pixel in all) and 8-bit output."""
    sigma = NOISE_SIGMA * rng.uniform(0.75, 1.25)
    blurred = _blur(scene + rng.normal(0.0, 1.4 * sigma, scene.shape), rng.uniform(0.12, 0.28))
    noise = rng.normal(0.0, 0.6 * sigma, scene.shape)
    # Microbolometers have per-row and per-column offsets that flat-field correction misses.
    stripes = rng.normal(0.0, 0.25 * sigma, (scene.shape[0], 1))
    stripes = stripes + rng.normal(0.0, 0.25 * sigma, (1, scene.shape[1]))
    return np.clip(np.rint(blurred + noise + stripes), 0, 255).astype(np.uint8)


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
    _check_contrast(contrast)
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
    image = _expose(scene, rng)
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
    _check_contrast(contrast)
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


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic thermal PV-array YOLO dataset.")
    parser.add_argument("out_dir", help="directory to create; must not exist or be empty")
    for split in SPLITS:
        parser.add_argument(f"--{split}", type=int, default=DEFAULT_NUM_IMAGES[split])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contrast", type=float, default=DEFAULT_CONTRAST)
    parser.add_argument("--size", type=int, default=IMAGE_SIZE)
    args = parser.parse_args(argv)
    counts = {split: getattr(args, split) for split in SPLITS}
    try:
        root = write_yolo(args.out_dir, counts, args.seed, args.contrast, args.size)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
