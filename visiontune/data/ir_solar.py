"""Synthetic infrared (thermal) solar-module images in the style of "InfraredSolarModules".

The public InfraredSolarModules dataset holds 20,000 single-channel 8-bit thermal crops of one
photovoltaic module each, 24 px wide by 40 px tall, in 12 classes (one normal, eleven anomaly
kinds). This module renders look-alikes so a sweep can be built and tested without the real data
and so difficulty can be dialled with one knob.

Run it
------
Write an ImageFolder tree (``OUT/{train,val,test}/<class>/<class>_<index>.png``)::

    python -m visiontune.data.ir_solar OUT [--num-images 4000] [--seed 0] [--contrast 1.0]

or from Python: ``write_imagefolder("OUT")``; ``generate()`` returns arrays without touching disk.

Why the defaults
----------------
* ``DEFAULT_NUM_IMAGES = 4000``: a fifth of the real dataset. It keeps the real class imbalance
  (half No-Anomaly, a few dozen of the rarest classes) while a whole trial still trains in
  seconds; every class is floored at ``MIN_PER_CLASS`` so each split sees each class.
* ``DEFAULT_CONTRAST = 1.0``: anomaly amplitudes are written in units of the sensor noise
  sigma (``_AMPLITUDE``) and were chosen by eye on a contact sheet so most anomalies are
  visible but the weak end of every range sits near the noise, the global offset and the
  cell-to-cell spread. Contrast multiplies all of them, so lowering it pulls every class
  towards a plain module and towards each other; at 0 they are indistinguishable. A small
  4-layer CNN trained for 25 epochs on 8000 images scored about 85% test accuracy at 1.0 and
  61% at 0.5 (rare classes such as Cracking and Soiling suffer first), i.e. hard enough that
  hyperparameters matter. Treat 1.0 as a starting point to calibrate against a real classifier.
* Everything is a pure function of the seed: the same seed gives byte-identical images, labels
  and splits, which a hyperparameter search needs to compare trials fairly.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from visiontune.data.files import write_tree_atomically
from visiontune.errors import InputError

CLASS_COUNTS: dict[str, int] = {
    "No-Anomaly": 10000,
    "Cell": 1877,
    "Vegetation": 1639,
    "Diode": 1499,
    "Cell-Multi": 1288,
    "Shadowing": 1056,
    "Cracking": 941,
    "Offline-Module": 827,
    "Hot-Spot": 251,
    "Hot-Spot-Multi": 247,
    "Soiling": 205,
    "Diode-Multi": 175,
}
# Sorted like torchvision's ImageFolder sorts directory names, so label i means the same class
# whether it comes from generate() or from reading the written tree back.
CLASSES: tuple[str, ...] = tuple(sorted(CLASS_COUNTS))
IMAGE_SHAPE = (40, 24)
# Calibrated with the real classifier sweep (search_spaces/classifier.yaml, 8 epochs on a CPU):
# at 1.6 the seed's configurations (lr 1e-4, heavy augmentation) end near 0.55-0.6 validation
# accuracy while well-tuned trials pass 0.8, so the search has room to matter; at 1.0 the seeds
# barely leave the 0.5 majority-class floor. 3000 images keep an epoch at ~5 s on one core.
DEFAULT_NUM_IMAGES: int = 3000
DEFAULT_CONTRAST: float = 1.6
MIN_PER_CLASS = 6
SPLITS = ("train", "val", "test")

# Reference sensor noise in grey levels; anomaly amplitudes below are multiples of it.
NOISE_SIGMA = 5.0
_CELL_COLS, _CELL_ROWS = 6, 10
# Anomaly amplitude ranges in noise sigmas at contrast 1 (negative = cooler). The low ends are
# deliberately close to the normal-module nuisances so that some samples are borderline.
_AMPLITUDE: dict[str, tuple[float, float]] = {
    "Cell": (2.5, 6.0),
    "Cell-Multi": (2.0, 5.0),
    "Cracking": (3.0, 6.0),
    "Diode": (1.5, 3.5),
    "Diode-Multi": (1.5, 3.5),
    "Hot-Spot": (8.0, 16.0),
    "Hot-Spot-Multi": (7.0, 14.0),
    "Offline-Module": (3.0, 7.0),
    "Shadowing": (2.0, 5.0),
    "Soiling": (2.5, 5.0),
    "Vegetation": (2.5, 5.0),
}

_HEIGHT, _WIDTH = IMAGE_SHAPE
# Pixel left/top edges, shared by every render; read-only so no render can corrupt the next.
_ROW_EDGE = np.arange(_HEIGHT, dtype=float)[:, None]
_COL_EDGE = np.arange(_WIDTH, dtype=float)[None, :]
_ROW_EDGE.flags.writeable = False
_COL_EDGE.flags.writeable = False


@dataclass(frozen=True)
class _Module:
    """Where the module lies in the crop; u, v run 0..1 across it at pixel centres."""

    left: float
    top: float
    width: float
    height: float
    cover: np.ndarray
    u: np.ndarray
    v: np.ndarray

    def box(self, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
        """Coverage of a rectangle given in module coordinates."""
        return _box(
            self.left + u0 * self.width,
            self.left + u1 * self.width,
            self.top + v0 * self.height,
            self.top + v1 * self.height,
        )

    def point(self, rng: np.random.Generator, pad: float = 0.1) -> tuple[float, float]:
        """A random (x, y) pixel position inside the module, away from its frame."""
        x = self.left + rng.uniform(pad, 1 - pad) * self.width
        y = self.top + rng.uniform(pad, 1 - pad) * self.height
        return x, y


def _box(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Exact area coverage of each pixel by a rectangle, so sub-pixel jitter shows up smoothly."""
    cover_x = np.clip(np.minimum(_COL_EDGE + 1, x1) - np.maximum(_COL_EDGE, x0), 0, 1)
    cover_y = np.clip(np.minimum(_ROW_EDGE + 1, y1) - np.maximum(_ROW_EDGE, y0), 0, 1)
    return cover_y * cover_x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form never overflows, unlike 1 / (1 + exp(-x)) for very negative x.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _blob(x: float, y: float, sigma: float) -> np.ndarray:
    return np.exp(-((_COL_EDGE + 0.5 - x) ** 2 + (_ROW_EDGE + 0.5 - y) ** 2) / (2 * sigma**2))


def _smooth_noise(
    rng: np.random.Generator, m: _Module, lattice_shape: tuple[int, int]
) -> np.ndarray:
    """Bilinearly upsampled random lattice in [-1, 1]: a cheap stand-in for Perlin noise."""
    rows, cols = lattice_shape
    lattice = rng.uniform(-1.0, 1.0, lattice_shape)
    gy = np.clip(m.v, 0, 1) * (rows - 1)
    gx = np.clip(m.u, 0, 1) * (cols - 1)
    y0 = np.minimum(gy.astype(int), rows - 2)
    x0 = np.minimum(gx.astype(int), cols - 2)
    fy, fx = gy - y0, gx - x0
    top = lattice[y0, x0] * (1 - fx) + lattice[y0, x0 + 1] * fx
    bottom = lattice[y0 + 1, x0] * (1 - fx) + lattice[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _place_module(rng: np.random.Generator) -> _Module:
    # Real crops come from a detector's boxes, so the module is rarely perfectly centred and a
    # sliver of background (0-2 px) shows on some sides.
    left, right, top, bottom = rng.uniform(0.0, 2.0, 4)
    width, height = _WIDTH - left - right, _HEIGHT - top - bottom
    u = np.broadcast_to((_COL_EDGE + 0.5 - left) / width, IMAGE_SHAPE)
    v = np.broadcast_to((_ROW_EDGE + 0.5 - top) / height, IMAGE_SHAPE)
    cover = _box(left, _WIDTH - right, top, _HEIGHT - bottom)
    return _Module(left, top, width, height, cover, u, v)


def _grid_lines(m: _Module) -> np.ndarray:
    """1 on the gaps between cells, fading to 0 one pixel away."""
    across = m.u * _CELL_COLS
    down = m.v * _CELL_ROWS
    dist_x = np.abs(across - np.rint(across)) * (m.width / _CELL_COLS)
    dist_y = np.abs(down - np.rint(down)) * (m.height / _CELL_ROWS)
    return np.clip(1.0 - np.minimum(dist_x, dist_y), 0.0, 1.0)


def _normal_scene(m: _Module, rng: np.random.Generator) -> np.ndarray:
    """A healthy module on its background, in grey levels, before optics and sensor."""
    # The offset stands in for ambient temperature and palette range; it is kept within a few
    # noise sigmas so Offline-Module (a uniformly warmer module) stays learnable at all.
    background = 110.0 + NOISE_SIGMA * rng.uniform(-5.0, 5.0)
    module_delta = NOISE_SIGMA * rng.uniform(2.0, 6.0)
    # Cells are never identical (binning, soldering), which is what makes one hot cell subtle.
    cell_spread = rng.normal(0.0, 0.35, (_CELL_ROWS, _CELL_COLS))
    rows = np.clip((m.v * _CELL_ROWS).astype(int), 0, _CELL_ROWS - 1)
    cols = np.clip((m.u * _CELL_COLS).astype(int), 0, _CELL_COLS - 1)
    grid_depth, frame_depth = rng.uniform(0.8, 1.5), rng.uniform(0.5, 1.5)
    body = module_delta + NOISE_SIGMA * (cell_spread[rows, cols] - grid_depth * _grid_lines(m))
    # The aluminium frame has low emissivity, so it reads cooler than the glass.
    frame = m.cover - m.box(0.04, 0.96, 0.025, 0.975)
    scene = background + m.cover * body - NOISE_SIGMA * frame_depth * frame
    return scene + _gradient(rng)


def _gradient(rng: np.random.Generator) -> np.ndarray:
    # Viewing angle, sky reflection and wind give a smooth tilt of up to a few sigmas.
    angle = rng.uniform(0.0, 2 * math.pi)
    span = rng.uniform(0.0, 4.0) * NOISE_SIGMA
    along = (_COL_EDGE - _WIDTH / 2) * math.cos(angle) + (_ROW_EDGE - _HEIGHT / 2) * math.sin(angle)
    return span * along / _HEIGHT


def _blur(image: np.ndarray, weight: float) -> np.ndarray:
    """Separable 3-tap blur [w, 1-2w, w]: the optics of a low-resolution drone camera."""
    padded = np.pad(image, 1, mode="edge")
    rows = weight * (padded[:-2] + padded[2:]) + (1 - 2 * weight) * padded[1:-1]
    return weight * (rows[:, :-2] + rows[:, 2:]) + (1 - 2 * weight) * rows[:, 1:-1]


def _expose(scene: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Optics blur, sensor noise (about NOISE_SIGMA per pixel in all) and 8-bit output."""
    sigma = NOISE_SIGMA * rng.uniform(0.75, 1.25)
    # Crops are resampled from larger frames, so most of the noise arrives spatially
    # correlated; adding it before the blur imitates that, the rest is per-pixel read noise.
    blurred = _blur(scene + rng.normal(0.0, 1.4 * sigma, IMAGE_SHAPE), rng.uniform(0.12, 0.28))
    noise = rng.normal(0.0, 0.6 * sigma, IMAGE_SHAPE)
    # Microbolometers have per-row and per-column offsets that flat-field correction misses.
    row_offsets = rng.normal(0.0, 0.25 * sigma, (_HEIGHT, 1))
    stripes = row_offsets + rng.normal(0.0, 0.25 * sigma, (1, _WIDTH))
    return np.clip(np.rint(blurred + noise + stripes), 0, 255).astype(np.uint8)


def _amp(name: str, rng: np.random.Generator) -> float:
    return float(rng.uniform(*_AMPLITUDE[name]))


def _cell(m: _Module, row: int, col: int) -> np.ndarray:
    return m.box(col / _CELL_COLS, (col + 1) / _CELL_COLS, row / _CELL_ROWS, (row + 1) / _CELL_ROWS)


def _no_anomaly(m: _Module, rng: np.random.Generator) -> np.ndarray:
    return np.zeros(IMAGE_SHAPE)


def _hot_cell(m: _Module, rng: np.random.Generator) -> np.ndarray:
    index = int(rng.integers(_CELL_ROWS * _CELL_COLS))
    return _amp("Cell", rng) * _cell(m, *divmod(index, _CELL_COLS))


def _hot_cells(m: _Module, rng: np.random.Generator) -> np.ndarray:
    count = int(rng.integers(2, 6))
    picks = rng.choice(_CELL_ROWS * _CELL_COLS, size=count, replace=False)
    field = np.zeros(IMAGE_SHAPE)
    for index in picks:
        field += _amp("Cell-Multi", rng) * _cell(m, *divmod(int(index), _CELL_COLS))
    return field


def _crack(m: _Module, rng: np.random.Generator) -> np.ndarray:
    """A wandering one-pixel line: cracked cell parts heat up along the break."""
    field = np.zeros(IMAGE_SHAPE)
    x, y = m.point(rng, pad=0.15)
    heading = rng.uniform(0.0, 2 * math.pi)
    amplitude = _amp("Cracking", rng)
    for _ in range(int(rng.integers(8, 20))):
        heading += rng.normal(0.0, 0.45)
        x, y = x + math.cos(heading), y + math.sin(heading)
        if not (m.left < x < m.left + m.width and m.top < y < m.top + m.height):
            break
        field[int(y), int(x)] = amplitude
    return field


def _substrings(m: _Module, rng: np.random.Generator, name: str, count: int) -> np.ndarray:
    # A 6x10 module has three bypass diodes, each guarding two full-height cell columns; an
    # active diode dumps that substring's power as heat.
    amplitude = _amp(name, rng)
    field = np.zeros(IMAGE_SHAPE)
    for third in rng.choice(3, size=count, replace=False):
        field += amplitude * rng.uniform(0.85, 1.15) * m.box(third / 3, (third + 1) / 3, 0, 1)
    return field


def _diode(m: _Module, rng: np.random.Generator) -> np.ndarray:
    return _substrings(m, rng, "Diode", 1)


def _diodes(m: _Module, rng: np.random.Generator) -> np.ndarray:
    return _substrings(m, rng, "Diode-Multi", 2)


def _hot_spot(m: _Module, rng: np.random.Generator) -> np.ndarray:
    # Smaller than a cell (cells are ~4 px): a point defect, not a whole hot cell.
    return _amp("Hot-Spot", rng) * _blob(*m.point(rng), rng.uniform(0.5, 0.9))


def _hot_spots(m: _Module, rng: np.random.Generator) -> np.ndarray:
    field = np.zeros(IMAGE_SHAPE)
    for _ in range(int(rng.integers(2, 5))):
        field = np.maximum(
            field, _amp("Hot-Spot-Multi", rng) * _blob(*m.point(rng), rng.uniform(0.5, 0.9))
        )
    return field


def _offline(m: _Module, rng: np.random.Generator) -> np.ndarray:
    # An open-circuit module turns all absorbed light into heat, evenly over every cell.
    return np.full(IMAGE_SHAPE, _amp("Offline-Module", rng))


def _shadow(m: _Module, rng: np.random.Generator) -> np.ndarray:
    """A soft-edged cool half-plane: a band from one edge or a diagonal corner."""
    if rng.random() < 0.6:
        angle = rng.integers(4) * math.pi / 2
    else:
        angle = (rng.integers(4) + 0.5) * math.pi / 2 + rng.normal(0.0, 0.2)
    depth = (m.u - 0.5) * m.width * math.cos(angle) + (m.v - 0.5) * m.height * math.sin(angle)
    threshold = np.quantile(depth[m.cover > 0.5], 1.0 - rng.uniform(0.15, 0.5))
    return -_amp("Shadowing", rng) * _sigmoid((depth - threshold) / rng.uniform(0.4, 1.2))


def _soiling(m: _Module, rng: np.random.Generator) -> np.ndarray:
    # Rain drains dirt to the lower frame, so patches thin out with distance from the bottom.
    threshold = rng.uniform(-0.4, 0.1)
    patches = np.clip(_smooth_noise(rng, m, (10, 6)) - threshold, 0, None) / (1 - threshold)
    near_bottom = np.exp(-(1 - m.v) / rng.uniform(0.15, 0.35))
    rim = np.exp(-np.clip(1 - m.v, 0, None) * m.height / 1.5)
    return _amp("Soiling", rng) * (patches * near_bottom + 0.6 * rim)


def _vegetation(m: _Module, rng: np.random.Generator) -> np.ndarray:
    """Foliage grows in from one edge with a ragged front and leafy warm/cool texture."""
    edge = rng.choice(3, p=(0.6, 0.2, 0.2))
    depth, along = ((1 - m.v, m.u), (m.u, m.v), (1 - m.u, m.v))[edge]
    knots = rng.uniform(0.1, 0.55, 6)
    front = np.interp(along, np.linspace(0, 1, 6), knots) + 0.08 * _smooth_noise(rng, m, (14, 9))
    mask = _sigmoid((front - depth) / 0.04)
    # Leaves shade the cells (cooler) but sunlit leaves are warm; shading wins on average.
    texture = rng.uniform(-0.6, 0.2) + _smooth_noise(rng, m, (13, 8))
    return _amp("Vegetation", rng) * mask * texture


_ANOMALIES: dict[str, Callable[[_Module, np.random.Generator], np.ndarray]] = {
    "No-Anomaly": _no_anomaly,
    "Cell": _hot_cell,
    "Cell-Multi": _hot_cells,
    "Cracking": _crack,
    "Diode": _diode,
    "Diode-Multi": _diodes,
    "Hot-Spot": _hot_spot,
    "Hot-Spot-Multi": _hot_spots,
    "Offline-Module": _offline,
    "Shadowing": _shadow,
    "Soiling": _soiling,
    "Vegetation": _vegetation,
}


def _check_contrast(contrast: float) -> None:
    if not (math.isfinite(contrast) and contrast >= 0):
        raise InputError(f"contrast must be a finite number >= 0, got {contrast!r}")


def render(
    class_name: str, rng: np.random.Generator, contrast: float = DEFAULT_CONTRAST
) -> np.ndarray:
    """One uint8 (40, 24) thermal crop of a module of the given class.

    The random draws do not depend on ``contrast``, so the same generator state rendered at two
    contrasts gives the same module with a stronger or weaker anomaly.
    """
    if class_name not in _ANOMALIES:
        raise InputError(f"unknown class {class_name!r}; expected one of {', '.join(CLASSES)}")
    _check_contrast(contrast)
    module = _place_module(rng)
    scene = _normal_scene(module, rng)
    anomaly = _ANOMALIES[class_name](module, rng)
    scene = scene + contrast * NOISE_SIGMA * module.cover * anomaly
    return _expose(scene, rng)


def _class_sizes(num_images: int) -> np.ndarray:
    """Images per class (in CLASSES order): real proportions, floored at MIN_PER_CLASS."""
    floor_total = MIN_PER_CLASS * len(CLASSES)
    if num_images < floor_total:
        raise InputError(f"num_images must be >= {floor_total} (6 per class), got {num_images}")
    real = np.array([CLASS_COUNTS[name] for name in CLASSES], dtype=float)
    exact = num_images * real / real.sum()
    sizes = np.maximum(np.floor(exact).astype(np.int64), MIN_PER_CLASS)
    # Largest remainders absorb the rounding shortfall; the floor's excess comes out of the
    # biggest classes, which can spare it without changing their share noticeably.
    for index in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if sizes.sum() >= num_images:
            break
        sizes[index] += 1
    while sizes.sum() > num_images:
        sizes[int(np.argmax(sizes))] -= 1
    return sizes


def generate(
    num_images: int = DEFAULT_NUM_IMAGES, seed: int = 0, contrast: float = DEFAULT_CONTRAST
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 40, 24) and labels int64 (N,) indexing CLASSES, shuffled, from one seed."""
    _check_contrast(contrast)
    sizes = _class_sizes(int(num_images))
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(CLASSES), dtype=np.int64), sizes))
    images = np.empty((labels.size, *IMAGE_SHAPE), dtype=np.uint8)
    # Each image is a few dozen tiny array operations; batching them across images would save
    # little (4000 images take about a second) and would tangle the per-class shapes.
    for i, label in enumerate(labels):
        images[i] = render(CLASSES[label], rng, contrast)
    return images, labels


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


def split_indices(
    labels: np.ndarray, seed: int, fractions: Sequence[float] = (0.70, 0.15, 0.15)
) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices (sorted int64), the same for the same labels and seed."""
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


def _write_tree(root: pathlib.Path, images: np.ndarray, labels: np.ndarray, seed: int) -> None:
    for split, indices in split_indices(labels, seed).items():
        for name in CLASSES:
            # Empty class folders still matter: ImageFolder numbers classes by folder listing.
            (root / split / name).mkdir(parents=True)
        for index in indices:
            name = CLASSES[labels[index]]
            Image.fromarray(images[index]).save(root / split / name / f"{name}_{index:05d}.png")


def write_imagefolder(
    out_dir: str | os.PathLike[str],
    num_images: int = DEFAULT_NUM_IMAGES,
    seed: int = 0,
    contrast: float = DEFAULT_CONTRAST,
) -> pathlib.Path:
    """Write a train/val/test ImageFolder tree of 8-bit grey PNGs; return the resolved root.

    The tree is written into a hidden sibling and renamed into place in one step, so out_dir
    is either absent or complete, never half-written.
    """
    images, labels = generate(num_images, seed, contrast)
    return write_tree_atomically(out_dir, lambda root: _write_tree(root, images, labels, seed))


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a synthetic InfraredSolarModules ImageFolder tree."
    )
    parser.add_argument("out_dir", help="directory to create; must not exist or be empty")
    parser.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contrast", type=float, default=DEFAULT_CONTRAST)
    args = parser.parse_args(argv)
    try:
        root = write_imagefolder(args.out_dir, args.num_images, args.seed, args.contrast)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
