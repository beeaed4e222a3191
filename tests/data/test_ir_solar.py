"""Tests for the synthetic InfraredSolarModules generator."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from visiontune.data import ir_solar
from visiontune.data.imagefolder import stratified_split
from visiontune.data.ir_solar import (
    AMPLITUDE,
    CLASS_COUNTS,
    CLASSES,
    DEFAULT_NUM_IMAGES,
    IMAGE_SHAPE,
    generate,
    render,
    write_imagefolder,
)
from visiontune.data.thermal import NOISE_SIGMA
from visiontune.errors import InputError

# Physical checks run at a fixed contrast so that recalibrating DEFAULT_CONTRAST cannot break
# them; they compare class means with a z-score, so a missing effect fails but noise does not.
CHECK_CONTRAST = 1.0
SAMPLES_PER_CLASS = 150
MIN_Z = 3.0

Feature = Callable[[np.ndarray], np.ndarray]


@pytest.fixture(scope="module")
def default_dataset() -> tuple[np.ndarray, np.ndarray, float]:
    # CPU time, not wall time: the budget is one core, and a busy test machine must not flake.
    start = time.process_time()
    images, labels = generate()
    return images, labels, time.process_time() - start


@functools.cache
def _samples(class_name: str, contrast: float = CHECK_CONTRAST) -> np.ndarray:
    rng = np.random.default_rng(1234)
    return np.stack([render(class_name, rng, contrast) for _ in range(SAMPLES_PER_CLASS)]).astype(
        float
    )


def _box3(images: np.ndarray) -> np.ndarray:
    """3x3 mean per image, to average away per-pixel noise."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
    height, width = images.shape[1:]
    shifted = [padded[:, i : i + height, j : j + width] for i in range(3) for j in range(3)]
    return sum(shifted) / 9.0


def _interior(images: np.ndarray) -> np.ndarray:
    """Drop the frame and the background margin."""
    return images[:, 3:-3, 3:-3]


def _median(images: np.ndarray) -> np.ndarray:
    return np.median(images, axis=(1, 2))


def _thirds(images: np.ndarray) -> np.ndarray:
    """Mean of each vertical third (one bypass-diode substring), sorted low to high."""
    columns = [images[:, 4:-4, lo : lo + 6].mean(axis=(1, 2)) for lo in (3, 9, 15)]
    return np.sort(np.stack(columns, axis=1), axis=1)


def _z(feature: Feature, higher: str, lower: str) -> float:
    a, b = feature(_samples(higher)), feature(_samples(lower))
    return float((a.mean() - b.mean()) / np.sqrt(a.var() / a.size + b.var() / b.size))


def _interior_mean(x: np.ndarray) -> np.ndarray:
    return _interior(x).mean(axis=(1, 2))


def _peak_over_median(x: np.ndarray) -> np.ndarray:
    return x.max(axis=(1, 2)) - _median(x)


def _smoothed_peak_over_median(x: np.ndarray) -> np.ndarray:
    return _box3(x).max(axis=(1, 2)) - _median(x)


def _very_hot_pixels(x: np.ndarray) -> np.ndarray:
    return (x > _median(x)[:, None, None] + 4 * NOISE_SIGMA).sum(axis=(1, 2))


def _hot_peaks(x: np.ndarray) -> np.ndarray:
    """Local maxima more than five noise sigmas above the module's median."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    height, width = x.shape[1:]
    around = [
        padded[:, i : i + height, j : j + width]
        for i in range(3)
        for j in range(3)
        if (i, j) != (1, 1)
    ]
    is_peak = x > np.max(around, axis=0)
    return (is_peak & (x > _median(x)[:, None, None] + 5 * NOISE_SIGMA)).sum(axis=(1, 2))


def _cool_dip(x: np.ndarray) -> np.ndarray:
    return _median(_interior(x)) - _interior(_box3(x)).min(axis=(1, 2))


def _bottom_excess(x: np.ndarray) -> np.ndarray:
    return x[:, -8:-2, 3:-3].mean(axis=(1, 2)) - x[:, 12:28, 3:-3].mean(axis=(1, 2))


def _smooth_texture(x: np.ndarray) -> np.ndarray:
    return _interior(_box3(x)).std(axis=(1, 2))


def _warmest_third_excess(x: np.ndarray) -> np.ndarray:
    return _thirds(x)[:, 2] - _thirds(x)[:, 1]


def _middle_third_excess(x: np.ndarray) -> np.ndarray:
    return _thirds(x)[:, 1] - _thirds(x)[:, 0]


def test_classes_are_the_twelve_real_classes_in_imagefolder_order() -> None:
    assert tuple(sorted(CLASS_COUNTS)) == CLASSES
    assert len(CLASSES) == 12
    assert CLASS_COUNTS["No-Anomaly"] == max(CLASS_COUNTS.values())
    assert set(CLASS_COUNTS) == set(AMPLITUDE) | {"No-Anomaly"}


def test_generate_returns_uint8_images_and_int64_labels(default_dataset) -> None:
    images, labels, _ = default_dataset
    assert images.shape == (DEFAULT_NUM_IMAGES, *IMAGE_SHAPE) == (3000, 40, 24)
    assert images.dtype == np.uint8
    assert labels.shape == (DEFAULT_NUM_IMAGES,)
    assert labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < len(CLASSES)


def test_render_returns_one_uint8_crop() -> None:
    image = render("Cell", np.random.default_rng(0))
    assert image.shape == IMAGE_SHAPE
    assert image.dtype == np.uint8


def test_generate_is_deterministic_for_a_seed() -> None:
    first, second = generate(200, seed=3), generate(200, seed=3)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_generate_differs_across_seeds() -> None:
    (images_a, labels_a), (images_b, labels_b) = generate(200, seed=3), generate(200, seed=4)
    assert not np.array_equal(images_a, images_b)
    assert not np.array_equal(labels_a, labels_b)


def test_generate_default_images_takes_under_five_seconds(default_dataset) -> None:
    assert default_dataset[2] < 5.0


def test_no_anomaly_is_the_majority_and_every_class_is_present(default_dataset) -> None:
    counts = np.bincount(default_dataset[1], minlength=len(CLASSES))
    assert CLASSES[int(np.argmax(counts))] == "No-Anomaly"
    assert counts[CLASSES.index("No-Anomaly")] == DEFAULT_NUM_IMAGES // 2
    assert counts.min() >= ir_solar.MIN_PER_CLASS


def test_class_proportions_follow_the_real_counts(default_dataset) -> None:
    counts = np.bincount(default_dataset[1], minlength=len(CLASSES))
    real = np.array([CLASS_COUNTS[name] for name in CLASSES])
    expected = real * DEFAULT_NUM_IMAGES / real.sum()
    assert np.all(np.abs(counts - expected) <= 1)


def test_small_datasets_still_get_six_images_of_every_class() -> None:
    _, labels = generate(100, seed=0)
    counts = np.bincount(labels, minlength=len(CLASSES))
    assert counts.sum() == 100
    assert counts.min() >= 6


def test_generate_rejects_fewer_images_than_the_class_floor() -> None:
    with pytest.raises(InputError, match="num_images"):
        generate(71)


def test_render_rejects_unknown_class_and_negative_contrast() -> None:
    with pytest.raises(InputError, match="Bird-Dropping"):
        render("Bird-Dropping", np.random.default_rng(0))
    with pytest.raises(InputError, match="contrast"):
        render("Cell", np.random.default_rng(0), contrast=-0.5)


def test_write_imagefolder_writes_readable_pngs_in_the_layout(tmp_path) -> None:
    root = write_imagefolder(tmp_path / "ir", num_images=100, seed=2)
    images, labels = generate(100, seed=2)
    assert root == (tmp_path / "ir").resolve()
    assert sorted(p.name for p in root.iterdir()) == ["test", "train", "val"]
    written = 0
    for split in ("train", "val", "test"):
        assert tuple(sorted(p.name for p in (root / split).iterdir())) == CLASSES
        for path in (root / split).glob("*/*"):
            match = re.fullmatch(r"(.+)_(\d{5})\.png", path.name)
            assert match and match[1] == path.parent.name
            index = int(match[2])
            assert CLASSES[labels[index]] == path.parent.name
            with Image.open(path) as image:
                assert image.mode == "L"
                np.testing.assert_array_equal(np.asarray(image), images[index])
            written += 1
    assert written == 100
    assert [p.name for p in tmp_path.iterdir()] == ["ir"]


def test_written_splits_are_the_stratified_split_of_the_labels(tmp_path) -> None:
    root = write_imagefolder(tmp_path / "ir", num_images=100, seed=4)
    _, labels = generate(100, seed=4)
    for split, indices in stratified_split(labels, seed=4).items():
        written = sorted(int(path.stem[-5:]) for path in (root / split).glob("*/*.png"))
        assert written == indices.tolist()


def test_write_imagefolder_fills_an_existing_empty_directory(tmp_path) -> None:
    (tmp_path / "ir").mkdir()
    root = write_imagefolder(tmp_path / "ir", num_images=80)
    assert len(list(root.glob("*/*/*.png"))) == 80


def test_write_imagefolder_refuses_a_non_empty_directory(tmp_path) -> None:
    target = tmp_path / "ir"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match=re.escape(str(target.resolve()))):
        write_imagefolder(target, num_images=80)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["ir"]


def test_write_imagefolder_leaves_nothing_behind_when_writing_crashes(
    tmp_path, monkeypatch
) -> None:
    original_save = Image.Image.save
    calls = []

    def failing_save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 10:
            raise OSError("disk full")
        return original_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_imagefolder(tmp_path / "ir", num_images=80)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("anomaly", "feature"),
    [
        ("Offline-Module", _interior_mean),
        ("Hot-Spot", _peak_over_median),
        ("Hot-Spot-Multi", _peak_over_median),
        ("Cell", _smoothed_peak_over_median),
        ("Cell-Multi", _smoothed_peak_over_median),
        ("Cracking", _smoothed_peak_over_median),
        ("Diode", _warmest_third_excess),
        ("Diode-Multi", _middle_third_excess),
        ("Shadowing", _cool_dip),
        ("Soiling", _bottom_excess),
        ("Vegetation", _smooth_texture),
    ],
)
def test_each_anomaly_shows_its_physical_signature_against_no_anomaly(
    anomaly: str, feature: Feature
) -> None:
    assert _z(feature, anomaly, "No-Anomaly") > MIN_Z


@pytest.mark.parametrize(
    ("more", "fewer", "feature"),
    [
        ("Hot-Spot-Multi", "Hot-Spot", _hot_peaks),
        ("Cell-Multi", "Cell", _very_hot_pixels),
        ("Diode-Multi", "Diode", _middle_third_excess),
        ("Diode", "Diode-Multi", _warmest_third_excess),
    ],
)
def test_sibling_classes_differ_in_the_expected_direction(
    more: str, fewer: str, feature: Feature
) -> None:
    assert _z(feature, more, fewer) > MIN_Z


@pytest.mark.parametrize("anomaly", [name for name in CLASSES if name != "No-Anomaly"])
def test_lower_contrast_moves_each_anomaly_closer_to_a_plain_module(anomaly: str) -> None:
    # The random draws do not depend on contrast, so the same seed at contrast 0 is the same
    # module without its anomaly.
    def render_at(contrast: float) -> np.ndarray:
        rng = np.random.default_rng(99)
        return np.stack([render(anomaly, rng, contrast) for _ in range(20)]).astype(float)

    plain = render_at(0.0)
    weak, strong = (np.abs(render_at(c) - plain).mean() for c in (0.3, 1.0))
    assert 0 < weak < strong


def test_lower_contrast_shrinks_the_hot_spot_gap_to_no_anomaly() -> None:
    def gap(contrast: float) -> float:
        hot = _peak_over_median(_samples("Hot-Spot", contrast)).mean()
        return float(hot - _peak_over_median(_samples("No-Anomaly", contrast)).mean())

    assert gap(0.0) < gap(0.3) < gap(1.0)
    assert abs(gap(0.0)) < 0.25 * gap(1.0)
