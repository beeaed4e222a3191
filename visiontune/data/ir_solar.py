"""Synthetic infrared (thermal) solar-module images in the style of "InfraredSolarModules".

The public InfraredSolarModules dataset holds 20,000 single-channel 8-bit thermal crops of one
photovoltaic module each, 24 px wide by 40 px tall, in 12 classes (one normal, eleven anomaly
kinds). This module renders look-alikes so a sweep can be built and tested without the real data
and so difficulty can be dialled with one knob. The module face, the shared anomaly shapes and
the sensor come from :mod:`visiontune.data.thermal`; the crop layout, the class table and the
ImageFolder writer are here.

Run it
------
Write the embedded ImageFolder tree (``OUT/{train,val,test}/<class>/<class>_<index>.png``)::

    visiontune data make ir-solar-modules --out OUT [--seed 0]

or from Python: ``write_imagefolder("OUT", num_images=3000, seed=0, contrast=1.6)``;
``generate()`` returns arrays without touching disk.

Why the defaults
----------------
* ``DEFAULT_NUM_IMAGES = 3000``: 15% of the real dataset. It keeps the real class imbalance
  (half No-Anomaly, a few dozen of the rarest classes) while an epoch of the classifier takes
  about 5 s on one core; every class is floored at ``MIN_PER_CLASS`` so each split sees each
  class.
* ``DEFAULT_CONTRAST = 1.6``: anomaly amplitudes are written in units of the sensor noise
  sigma (``AMPLITUDE``) and were chosen by eye on a contact sheet at contrast 1.0 so most
  anomalies are visible but the weak end of every range sits near the noise, the global offset
  and the cell-to-cell spread. Contrast multiplies all of them, so lowering it pulls every class
  towards a plain module and towards each other; at 0 they are indistinguishable. 1.6 was then
  calibrated with the real classifier sweep (search_spaces/classifier.yaml, 8 epochs on a CPU):
  the seed configurations (lr 1e-4, heavy augmentation) end near 0.55-0.6 validation accuracy
  while well-tuned trials pass 0.8, so the search has room to matter; at 1.0 the seeds barely
  leave the 0.5 majority-class floor.
* Everything is a pure function of the seed: the same seed gives byte-identical images, labels
  and splits, which a hyperparameter search needs to compare trials fairly.
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from visiontune.data import thermal
from visiontune.data.files import write_tree_atomically
from visiontune.data.imagefolder import stratified_split
from visiontune.data.thermal import NOISE_SIGMA
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
# Why these two: see "Why the defaults" in the module docstring.
DEFAULT_NUM_IMAGES: int = 3000
DEFAULT_CONTRAST: float = 1.6
MIN_PER_CLASS = 6

# Anomaly amplitude ranges in noise sigmas at contrast 1 (negative = cooler). The low ends are
# deliberately close to the normal-module nuisances so that some samples are borderline.
AMPLITUDE: dict[str, tuple[float, float]] = {
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
class _Crop(thermal.ModuleFace):
    """The module filling a crop, its top-left corner at (left, top) px; always portrait."""

    left: float
    top: float

    def rect(self, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
        """Exact area coverage of a rectangle given in module coordinates."""
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


def _place_module(rng: np.random.Generator) -> _Crop:
    # Real crops come from a detector's boxes, so the module is rarely perfectly centred and a
    # sliver of background (0-2 px) shows on some sides.
    left, right, top, bottom = rng.uniform(0.0, 2.0, 4)
    width, height = _WIDTH - left - right, _HEIGHT - top - bottom
    u = np.broadcast_to((_COL_EDGE + 0.5 - left) / width, IMAGE_SHAPE)
    v = np.broadcast_to((_ROW_EDGE + 0.5 - top) / height, IMAGE_SHAPE)
    cover = _box(left, _WIDTH - right, top, _HEIGHT - bottom)
    return _Crop(u=u, v=v, cover=cover, width=width, height=height, left=left, top=top)


def _normal_scene(m: _Crop, rng: np.random.Generator) -> np.ndarray:
    """A healthy module on its background, in grey levels, before optics and sensor."""
    # The offset stands in for ambient temperature and palette range; it is kept within a few
    # noise sigmas so Offline-Module (a uniformly warmer module) stays learnable at all.
    background = 110.0 + NOISE_SIGMA * rng.uniform(-5.0, 5.0)
    module_delta = NOISE_SIGMA * rng.uniform(2.0, 6.0)
    body = module_delta + thermal.cell_pattern(
        m, rng, spread=0.35, grid_depth=(0.8, 1.5), falloff=1.0
    )
    # The aluminium frame has low emissivity, so it reads cooler than the glass.
    frame_depth = rng.uniform(0.5, 1.5)
    frame = m.cover - m.rect(0.04, 0.96, 0.025, 0.975)
    scene = background + m.cover * body - NOISE_SIGMA * frame_depth * frame
    return scene + _gradient(rng)


def _gradient(rng: np.random.Generator) -> np.ndarray:
    # Viewing angle, sky reflection and wind give a smooth tilt of up to a few sigmas.
    angle = rng.uniform(0.0, 2 * math.pi)
    span = rng.uniform(0.0, 4.0) * NOISE_SIGMA
    along = (_COL_EDGE - _WIDTH / 2) * math.cos(angle) + (_ROW_EDGE - _HEIGHT / 2) * math.sin(angle)
    return span * along / _HEIGHT


def _hot_cell(m: _Crop, rng: np.random.Generator) -> np.ndarray:
    index = int(rng.integers(thermal.CELLS_SHORT * thermal.CELLS_LONG))
    return thermal.amplitude(rng, AMPLITUDE["Cell"]) * thermal.cell(m, index)


def _crack(m: _Crop, rng: np.random.Generator) -> np.ndarray:
    """A wandering one-pixel line: cracked cell parts heat up along the break."""
    field = np.zeros(IMAGE_SHAPE)
    x, y = m.point(rng, pad=0.15)
    heading = rng.uniform(0.0, 2 * math.pi)
    strength = thermal.amplitude(rng, AMPLITUDE["Cracking"])
    for _ in range(int(rng.integers(8, 20))):
        heading += rng.normal(0.0, 0.45)
        x, y = x + math.cos(heading), y + math.sin(heading)
        if not (m.left < x < m.left + m.width and m.top < y < m.top + m.height):
            break
        field[int(y), int(x)] = strength
    return field


def _substrings(m: _Crop, rng: np.random.Generator, name: str, count: int) -> np.ndarray:
    # A 6x10 module has three bypass diodes, each guarding two full-height cell columns; an
    # active diode dumps that substring's power as heat.
    strength = thermal.amplitude(rng, AMPLITUDE[name])
    field = np.zeros(IMAGE_SHAPE)
    for third in rng.choice(3, size=count, replace=False):
        field += strength * rng.uniform(0.85, 1.15) * m.rect(third / 3, (third + 1) / 3, 0, 1)
    return field


def _diode(m: _Crop, rng: np.random.Generator) -> np.ndarray:
    return _substrings(m, rng, "Diode", 1)


def _diodes(m: _Crop, rng: np.random.Generator) -> np.ndarray:
    return _substrings(m, rng, "Diode-Multi", 2)


def _point_defect(m: _Crop, rng: np.random.Generator) -> np.ndarray:
    # Smaller than a cell (cells are ~4 px): a point defect, not a whole hot cell.
    x, y = m.point(rng)
    return thermal.spot(_COL_EDGE + 0.5 - x, _ROW_EDGE + 0.5 - y, rng.uniform(0.5, 0.9))


def _hot_spot(m: _Crop, rng: np.random.Generator) -> np.ndarray:
    return thermal.amplitude(rng, AMPLITUDE["Hot-Spot"]) * _point_defect(m, rng)


def _hot_spots(m: _Crop, rng: np.random.Generator) -> np.ndarray:
    field = np.zeros(IMAGE_SHAPE)
    for _ in range(int(rng.integers(2, 5))):
        field = np.maximum(
            field, thermal.amplitude(rng, AMPLITUDE["Hot-Spot-Multi"]) * _point_defect(m, rng)
        )
    return field


def _shadow(m: _Crop, rng: np.random.Generator) -> np.ndarray:
    """A soft-edged cool half-plane: a band from one edge or a diagonal corner."""
    if rng.random() < 0.6:
        angle = rng.integers(4) * math.pi / 2
    else:
        angle = (rng.integers(4) + 0.5) * math.pi / 2 + rng.normal(0.0, 0.2)
    depth = (m.u - 0.5) * m.width * math.cos(angle) + (m.v - 0.5) * m.height * math.sin(angle)
    threshold = np.quantile(depth[m.cover > 0.5], 1.0 - rng.uniform(0.15, 0.5))
    strength = thermal.amplitude(rng, AMPLITUDE["Shadowing"])
    return -strength * thermal.sigmoid((depth - threshold) / rng.uniform(0.4, 1.2))


def _soiling(m: _Crop, rng: np.random.Generator) -> np.ndarray:
    patches, near_bottom = thermal.dirt(m, rng, (10, 6))
    # Dirt also collects in a thin line along the bottom frame.
    rim = np.exp(-np.clip(1 - m.v, 0, None) * m.height / 1.5)
    return thermal.amplitude(rng, AMPLITUDE["Soiling"]) * (patches * near_bottom + 0.6 * rim)


def _vegetation(m: _Crop, rng: np.random.Generator) -> np.ndarray:
    """Foliage grows in from one edge with a ragged front and leafy warm/cool texture."""
    edge = rng.choice(3, p=(0.6, 0.2, 0.2))
    depth, along = ((1 - m.v, m.u), (m.u, m.v), (1 - m.u, m.v))[edge]
    knots = rng.uniform(0.1, 0.55, 6)
    ragged = 0.08 * thermal.smooth_noise(rng, m.u, m.v, (14, 9))
    front = np.interp(along, np.linspace(0, 1, 6), knots) + ragged
    mask = thermal.sigmoid((front - depth) / 0.04)
    # Leaves shade the cells (cooler) but sunlit leaves are warm; shading wins on average.
    texture = rng.uniform(-0.6, 0.2) + thermal.smooth_noise(rng, m.u, m.v, (13, 8))
    return thermal.amplitude(rng, AMPLITUDE["Vegetation"]) * mask * texture


_ANOMALIES: dict[str, Callable[[_Crop, np.random.Generator], np.ndarray]] = {
    "No-Anomaly": thermal.no_anomaly,
    "Cell": _hot_cell,
    "Cell-Multi": functools.partial(thermal.hot_cells, bounds=AMPLITUDE["Cell-Multi"], most=5),
    "Cracking": _crack,
    "Diode": _diode,
    "Diode-Multi": _diodes,
    "Hot-Spot": _hot_spot,
    "Hot-Spot-Multi": _hot_spots,
    "Offline-Module": functools.partial(thermal.offline, bounds=AMPLITUDE["Offline-Module"]),
    "Shadowing": _shadow,
    "Soiling": _soiling,
    "Vegetation": _vegetation,
}


def render(
    class_name: str, rng: np.random.Generator, contrast: float = DEFAULT_CONTRAST
) -> np.ndarray:
    """One uint8 (40, 24) thermal crop of a module of the given class.

    The random draws do not depend on ``contrast``, so the same generator state rendered at two
    contrasts gives the same module with a stronger or weaker anomaly.
    """
    if class_name not in _ANOMALIES:
        raise InputError(f"unknown class {class_name!r}; expected one of {', '.join(CLASSES)}")
    thermal.check_contrast(contrast)
    module = _place_module(rng)
    scene = _normal_scene(module, rng)
    anomaly = _ANOMALIES[class_name](module, rng)
    scene = scene + contrast * NOISE_SIGMA * module.cover * anomaly
    return thermal.expose(scene, rng)


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
    thermal.check_contrast(contrast)
    sizes = _class_sizes(int(num_images))
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(CLASSES), dtype=np.int64), sizes))
    images = np.empty((labels.size, *IMAGE_SHAPE), dtype=np.uint8)
    # Each image is a few dozen tiny array operations; batching them across images would save
    # little (the default 3000 take about a second) and would tangle the per-class shapes.
    for i, label in enumerate(labels):
        images[i] = render(CLASSES[label], rng, contrast)
    return images, labels


def _write_tree(root: pathlib.Path, images: np.ndarray, labels: np.ndarray, seed: int) -> None:
    for split, indices in stratified_split(labels, seed).items():
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
