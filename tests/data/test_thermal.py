"""Tests for the thermal rendering primitives both synthetic generators share."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest

from visiontune.data import thermal
from visiontune.data.thermal import NOISE_SIGMA, ModuleFace
from visiontune.errors import InputError

HEIGHT, WIDTH = 40, 24  # pixels: 4 px per cell on a portrait 6 x 10-cell module


@dataclass(frozen=True)
class _Face(ModuleFace):
    """A module filling the whole grid, covering sub-rectangles with hard pixel-centre edges."""

    def rect(self, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
        inside = (u0 <= self.u) & (self.u < u1) & (v0 <= self.v) & (self.v < v1)
        return inside.astype(float)


def _face(height: int = HEIGHT, width: int = WIDTH) -> _Face:
    v, u = np.mgrid[0:height, 0:width] + 0.5
    return _Face(
        u=u / width, v=v / height, cover=np.ones((height, width)), width=width, height=height
    )


def test_portrait_face_has_ten_rows_of_six_cells_and_landscape_the_transpose() -> None:
    assert _face(40, 24).cells() == (10, 6)
    assert _face(24, 40).cells() == (6, 10)


def test_base_face_does_not_guess_how_a_rectangle_covers_pixels() -> None:
    face = _face()
    plain = ModuleFace(u=face.u, v=face.v, cover=face.cover, width=WIDTH, height=HEIGHT)
    with pytest.raises(NotImplementedError, match="ModuleFace"):
        plain.rect(0, 1, 0, 1)


@pytest.mark.parametrize("contrast", [-0.5, float("nan"), float("inf")])
def test_contrast_must_be_finite_and_not_negative(contrast: float) -> None:
    with pytest.raises(InputError, match="contrast"):
        thermal.check_contrast(contrast)


def test_zero_contrast_is_allowed() -> None:
    thermal.check_contrast(0.0)


def test_amplitude_stays_within_its_bounds() -> None:
    rng = np.random.default_rng(0)
    values = [thermal.amplitude(rng, (2.5, 6.0)) for _ in range(200)]
    assert all(isinstance(value, float) and 2.5 <= value < 6.0 for value in values)


def test_sigmoid_is_one_half_at_zero_and_saturates_without_overflow() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = thermal.sigmoid(np.array([-1e4, 0.0, 1e4]))
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0])


def test_spot_peaks_at_one_and_falls_to_exp_minus_half_at_one_sigma() -> None:
    values = thermal.spot(np.array([0.0, 0.8, 0.0]), np.array([0.0, 0.0, -0.8]), sigma=0.8)
    np.testing.assert_allclose(values, [1.0, np.exp(-0.5), np.exp(-0.5)])


def test_smooth_noise_passes_through_its_lattice_at_the_nodes() -> None:
    rows, cols = 5, 4
    v, u = np.meshgrid(np.linspace(0, 1, rows), np.linspace(0, 1, cols), indexing="ij")
    lattice = np.random.default_rng(3).uniform(-1.0, 1.0, (rows, cols))
    noise = thermal.smooth_noise(np.random.default_rng(3), u, v, (rows, cols))
    np.testing.assert_allclose(noise, lattice, atol=1e-12)


def test_smooth_noise_is_bounded_and_smooth_between_nodes() -> None:
    face = _face()
    noise = thermal.smooth_noise(np.random.default_rng(0), face.u, face.v, (3, 3))
    assert noise.shape == (HEIGHT, WIDTH)
    assert noise.min() >= -1.0 and noise.max() <= 1.0
    # Two lattice intervals over 40 px: a step between neighbours is at most 2 / 20.
    assert np.abs(np.diff(noise, axis=0)).max() <= 0.1 + 1e-9


def test_grid_lines_fade_from_the_cell_edges_over_one_over_falloff_pixels() -> None:
    # Cells are 4 px; pixel centres sit 0.5 px from the nearest cell edge (rows and columns
    # 0 and 3 of each cell) or 1.5 px from it (the 2 x 2 px inside of each cell).
    lines = thermal.grid_lines(_face(), falloff=1.0)
    np.testing.assert_allclose(lines[[0, 3, 4, 39], :], 0.5)
    np.testing.assert_allclose(lines[:, [0, 3, 4, 23]], 0.5)
    np.testing.assert_allclose(lines[1:3, 1:3], 0.0)
    np.testing.assert_allclose(thermal.grid_lines(_face(), falloff=2.0), 0.0)


def test_a_larger_falloff_narrows_the_grid_lines() -> None:
    face = _face()
    # Shifted a quarter pixel: column 0's centres sit 0.25 px from a vertical cell edge.
    shifted = _Face(u=face.u - 0.25 / WIDTH, v=face.v, cover=face.cover, width=WIDTH, height=HEIGHT)
    assert thermal.grid_lines(shifted, falloff=1.0)[1, 0] == pytest.approx(0.75)
    assert thermal.grid_lines(shifted, falloff=2.0)[1, 0] == pytest.approx(0.5)


def test_cell_pattern_is_cooler_on_the_gaps_than_inside_the_cells() -> None:
    face = _face()
    lines = thermal.grid_lines(face, falloff=1.0)
    pattern = np.mean(
        [
            thermal.cell_pattern(face, np.random.default_rng(s), 0.3, (0.8, 1.5), 1.0)
            for s in range(20)
        ],
        axis=0,
    )
    assert pattern[lines > 0].mean() < pattern[lines == 0].mean() - 0.3 * NOISE_SIGMA


def test_cells_tile_the_module_once_row_by_row() -> None:
    face = _face()
    cells = np.stack([thermal.cell(face, index) for index in range(60)])
    np.testing.assert_array_equal(cells.sum(axis=0), 1.0)
    assert cells[0, 0, 0] == 1.0 and cells[5, 0, WIDTH - 1] == 1.0 and cells[6, 4, 0] == 1.0


def test_no_anomaly_is_zero_everywhere() -> None:
    field = thermal.no_anomaly(_face(), np.random.default_rng(0))
    assert field.shape == (HEIGHT, WIDTH) and not field.any()


@pytest.mark.parametrize("seed", range(5))
def test_hot_cells_heat_two_to_most_whole_cells_within_bounds(seed: int) -> None:
    face = _face()
    field = thermal.hot_cells(face, np.random.default_rng(seed), (3.0, 8.0), most=5)
    per_cell = np.array([np.ptp(field[thermal.cell(face, i) == 1]) for i in range(60)])
    assert not per_cell.any()  # each cell is heated evenly, or not at all
    levels = np.array([field[thermal.cell(face, i) == 1][0] for i in range(60)])
    hot = levels[levels > 0]
    assert 2 <= hot.size <= 5
    assert ((hot >= 3.0) & (hot < 8.0)).all()


def test_offline_heats_the_whole_module_evenly() -> None:
    field = thermal.offline(_face(), np.random.default_rng(0), (2.5, 5.0))
    assert field.shape == (HEIGHT, WIDTH)
    assert np.ptp(field) == 0.0 and 2.5 <= field[0, 0] < 5.0


def test_dirt_patches_are_fractions_and_gather_at_the_bottom() -> None:
    face = _face()
    patches, near_bottom = thermal.dirt(face, np.random.default_rng(0), (10, 6))
    assert patches.min() >= 0.0 and patches.max() <= 1.0
    assert (np.diff(near_bottom[:, 0]) > 0).all()
    assert near_bottom[-1, 0] > 0.8 and near_bottom[0, 0] < 0.01


def test_blur_keeps_a_flat_image_and_spreads_a_point_by_its_weight() -> None:
    np.testing.assert_allclose(thermal.blur(np.full((5, 5), 7.0), 0.2), 7.0)
    point = np.zeros((5, 5))
    point[2, 2] = 1.0
    blurred = thermal.blur(point, 0.2)
    assert blurred.sum() == pytest.approx(1.0)
    assert blurred[2, 2] == pytest.approx(0.6**2)
    assert blurred[2, 1] == pytest.approx(0.6 * 0.2)


def test_expose_adds_about_one_noise_sigma_to_a_flat_scene() -> None:
    rng = np.random.default_rng(0)
    images = np.stack([thermal.expose(np.full((HEIGHT, WIDTH), 128.0), rng) for _ in range(50)])
    assert images.dtype == np.uint8 and images.shape == (50, HEIGHT, WIDTH)
    assert abs(images.mean() - 128.0) < 0.5
    assert 0.6 * NOISE_SIGMA < images.std() < 1.4 * NOISE_SIGMA


def test_expose_clips_to_the_eight_bit_range() -> None:
    rng = np.random.default_rng(0)
    assert (thermal.expose(np.full((8, 8), 400.0), rng) == 255).all()
    assert (thermal.expose(np.full((8, 8), -100.0), rng) == 0).all()


def test_expose_is_a_pure_function_of_the_generator_state() -> None:
    scene = np.linspace(0, 255, HEIGHT * WIDTH).reshape(HEIGHT, WIDTH)
    first = thermal.expose(scene, np.random.default_rng(9))
    again = thermal.expose(scene, np.random.default_rng(9))
    other = thermal.expose(scene, np.random.default_rng(10))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
