"""Thermal rendering shared by the synthetic generators: module faces, anomalies and the sensor.

Both generators draw the same physics: :mod:`visiontune.data.ir_solar` renders one module per
crop for the classifier, :mod:`visiontune.data.pv_arrays` whole arrays with boxes for the
detectors. Each keeps its own layout, class table and amplitude ranges; what a module face looks
like (cells, cooler gaps, per-cell spread), the anomaly shapes they share, and the camera
(correlated noise, optics blur, row/column stripes, 8-bit output) live here, once.

How to use it
-------------
A generator describes each module as a :class:`ModuleFace` subclass (its pixels' ``u``, ``v``
coordinates across the module, its coverage, its size and how it covers a sub-rectangle), builds
a scene in grey levels with these functions, and turns the scene into an image with
:func:`expose`. Every function draws from the ``rng`` it is given in a fixed order, so a
generator's output is a pure function of its seed; changing the order of draws here changes
every generated dataset (bump ``visiontune.data.GENERATOR_VERSION`` if that is ever intended).

Why the defaults
----------------
* ``NOISE_SIGMA = 5.0`` grey levels is the reference sensor noise; every amplitude in the
  generators is a multiple of it, so contrast reads as signal-to-noise.
* ``CELLS_SHORT, CELLS_LONG = 6, 10``: the common 60-cell module, with three bypass diodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from visiontune.errors import InputError

# Reference sensor noise in grey levels; anomaly amplitudes are multiples of it.
NOISE_SIGMA = 5.0
# A 60-cell module: 6 cells across its short side, 10 along its long side.
CELLS_SHORT, CELLS_LONG = 6, 10


@dataclass(frozen=True)
class ModuleFace:
    """One module as the renderer sees it, on some pixel grid.

    ``u`` runs 0..1 across the module's width and ``v`` 0..1 down its height at each pixel centre
    (the module's own axes); ``cover`` is how much of each pixel the module covers; ``width`` and
    ``height`` are its size in pixels. Subclasses say how a sub-rectangle covers the pixels.
    """

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
            return CELLS_LONG, CELLS_SHORT
        return CELLS_SHORT, CELLS_LONG

    def rect(self, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
        """Coverage of each pixel by a rectangle given in module coordinates."""
        raise NotImplementedError(f"{type(self).__name__} does not define rect()")


def check_contrast(contrast: float) -> None:
    if not (math.isfinite(contrast) and contrast >= 0):
        raise InputError(f"contrast must be a finite number >= 0, got {contrast!r}")


def amplitude(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """One anomaly amplitude in noise sigmas, uniform within ``bounds``."""
    return float(rng.uniform(*bounds))


def sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form never overflows, unlike 1 / (1 + exp(-x)) for very negative x.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def spot(dx: np.ndarray, dy: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian of peak 1 at distance (dx, dy) in pixels from its centre."""
    return np.exp(-(dx**2 + dy**2) / (2 * sigma**2))


def smooth_noise(
    rng: np.random.Generator, u: np.ndarray, v: np.ndarray, lattice_shape: tuple[int, int]
) -> np.ndarray:
    """Bilinearly upsampled random lattice in [-1, 1] over u, v in [0, 1]: a cheap Perlin noise."""
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


def grid_lines(m: ModuleFace, falloff: float) -> np.ndarray:
    """1 on the gaps between cells, fading to 0 at 1 / falloff pixels away."""
    rows, cols = m.cells()
    across, down = m.u * cols, m.v * rows
    dist_x = np.abs(across - np.rint(across)) * (m.width / cols)
    dist_y = np.abs(down - np.rint(down)) * (m.height / rows)
    return np.clip(1.0 - falloff * np.minimum(dist_x, dist_y), 0.0, 1.0)


def cell_pattern(
    m: ModuleFace,
    rng: np.random.Generator,
    spread: float,
    grid_depth: tuple[float, float],
    falloff: float,
) -> np.ndarray:
    """A healthy face's texture in grey levels: per-cell spread, minus cooler gaps between cells.

    Cells are never identical (binning, soldering), which is what makes one hot cell subtle;
    ``spread`` is their standard deviation and ``grid_depth`` the range of the gaps' depth, both
    in noise sigmas.
    """
    rows, cols = m.cells()
    cell_spread = rng.normal(0.0, spread, (rows, cols))
    r = np.clip((m.v * rows).astype(int), 0, rows - 1)
    c = np.clip((m.u * cols).astype(int), 0, cols - 1)
    depth = rng.uniform(*grid_depth)
    return NOISE_SIGMA * (cell_spread[r, c] - depth * grid_lines(m, falloff))


def cell(m: ModuleFace, index: int) -> np.ndarray:
    """Coverage of cell ``index``, counted row by row from the top left."""
    rows, cols = m.cells()
    row, col = divmod(index, cols)
    return m.rect(col / cols, (col + 1) / cols, row / rows, (row + 1) / rows)


def no_anomaly(m: ModuleFace, rng: np.random.Generator) -> np.ndarray:
    return np.zeros_like(m.u)


def hot_cells(
    m: ModuleFace, rng: np.random.Generator, bounds: tuple[float, float], most: int
) -> np.ndarray:
    """Two to ``most`` distinct hot cells, each with its own amplitude."""
    rows, cols = m.cells()
    picks = rng.choice(rows * cols, size=int(rng.integers(2, most + 1)), replace=False)
    return sum(amplitude(rng, bounds) * cell(m, int(index)) for index in picks)


def offline(m: ModuleFace, rng: np.random.Generator, bounds: tuple[float, float]) -> np.ndarray:
    # An open-circuit module turns all absorbed light into heat, evenly over every cell.
    return np.full_like(m.u, amplitude(rng, bounds))


def dirt(
    m: ModuleFace, rng: np.random.Generator, lattice_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Soiling as (patches in [0, 1], weight that fades up from the bottom frame).

    Rain drains dirt to the lower frame, so patches thin out with distance from the bottom;
    callers multiply the two with their amplitude (and may add a rim of their own).
    """
    threshold = rng.uniform(-0.4, 0.1)
    noise = smooth_noise(rng, m.u, m.v, lattice_shape)
    patches = np.clip(noise - threshold, 0, None) / (1 - threshold)
    near_bottom = np.exp(-(1 - m.v) / rng.uniform(0.15, 0.35))
    return patches, near_bottom


def blur(image: np.ndarray, weight: float) -> np.ndarray:
    """Separable 3-tap blur [w, 1-2w, w]: the optics of a low-resolution drone camera."""
    padded = np.pad(image, 1, mode="edge")
    rows = weight * (padded[:-2] + padded[2:]) + (1 - 2 * weight) * padded[1:-1]
    return weight * (rows[:, :-2] + rows[:, 2:]) + (1 - 2 * weight) * rows[:, 1:-1]


def expose(scene: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Optics blur, sensor noise (about NOISE_SIGMA per pixel in all) and 8-bit output."""
    sigma = NOISE_SIGMA * rng.uniform(0.75, 1.25)
    # Crops are resampled from larger frames, so most of the noise arrives spatially
    # correlated; adding it before the blur imitates that, the rest is per-pixel read noise.
    blurred = blur(scene + rng.normal(0.0, 1.4 * sigma, scene.shape), rng.uniform(0.12, 0.28))
    noise = rng.normal(0.0, 0.6 * sigma, scene.shape)
    # Microbolometers have per-row and per-column offsets that flat-field correction misses.
    row_offsets = rng.normal(0.0, 0.25 * sigma, (scene.shape[0], 1))
    stripes = row_offsets + rng.normal(0.0, 0.25 * sigma, (1, scene.shape[1]))
    return np.clip(np.rint(blurred + noise + stripes), 0, 255).astype(np.uint8)
