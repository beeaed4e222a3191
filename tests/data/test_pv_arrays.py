"""Tests for the synthetic thermal PV-array detection generator."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from visiontune.data.pv_arrays import (
    DEFAULT_NUM_IMAGES,
    IMAGE_SIZE,
    NAMES,
    generate,
    render,
    write_yolo,
)
from visiontune.data.thermal import NOISE_SIGMA
from visiontune.errors import InputError

SMALL = {"train": 4, "val": 2, "test": 2}
Sample = tuple[np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def default_set() -> tuple[dict[str, list[Sample]], float]:
    # CPU time, not wall time: a busy test machine must not flake.
    start = time.process_time()
    splits = generate()
    return splits, time.process_time() - start


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_yolo(tmp_path_factory.mktemp("pv") / "ds", SMALL, seed=1)


def _pixel_boxes(boxes: np.ndarray, size: int) -> np.ndarray:
    cx, cy, w, h = (boxes.astype(float) * size).T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _edge_contrast(samples: list[Sample], grow: float, depth: int = 2) -> float:
    """Mean of (strip just inside a box edge) - (strip just outside it) over every edge whose
    outside strip is clear ground: largest when the edges sit exactly on the module outline."""
    diffs = []
    for image, boxes, _ in samples:
        img, size = image.astype(float), image.shape[0]
        px = _pixel_boxes(boxes, size) + np.array([-grow, -grow, grow, grow])
        occupied = np.zeros(img.shape, dtype=bool)
        for x0, y0, x1, y1 in px:
            occupied[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = 1
        for x0, y0, x1, y1 in np.rint(px).astype(int):
            cols, rows = slice(x0 + depth, x1 - depth), slice(y0 + depth, y1 - depth)
            pairs = [
                ((slice(y0 + 1, y0 + 1 + depth), cols), (slice(y0 - 1 - depth, y0 - 1), cols)),
                ((slice(y1 - 1 - depth, y1 - 1), cols), (slice(y1 + 1, y1 + 1 + depth), cols)),
                ((rows, slice(x0 + 1, x0 + 1 + depth)), (rows, slice(x0 - 1 - depth, x0 - 1))),
                ((rows, slice(x1 - 1 - depth, x1 - 1)), (rows, slice(x1 + 1, x1 + 1 + depth))),
            ]
            for inside, outside in pairs:
                bounds = [s.start for s in outside] + [size - s.stop for s in outside]
                if min(bounds) < 0 or occupied[outside].any():
                    continue
                diffs.append(img[inside].mean() - img[outside].mean())
    return float(np.mean(diffs))


def test_same_seed_gives_identical_images_boxes_and_labels() -> None:
    first = render(np.random.default_rng(7))
    again = render(np.random.default_rng(7))
    other = render(np.random.default_rng(8))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_validation_images_do_not_depend_on_the_training_count() -> None:
    few = generate({"train": 2, "val": 2, "test": 1}, seed=3)
    many = generate({"train": 5, "val": 2, "test": 1}, seed=3)
    for a, b in zip(few["val"], many["val"], strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("size", [64, IMAGE_SIZE, 256])
def test_render_returns_uint8_image_with_float32_boxes_and_int64_labels(size: int) -> None:
    image, boxes, labels = render(np.random.default_rng(0), size=size)
    assert image.shape == (size, size) and image.dtype == np.uint8
    assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4)
    assert labels.dtype == np.int64 and 6 <= len(labels) <= 24  # 2-4 rows of 3-6 modules
    assert set(labels.tolist()) <= set(range(len(NAMES)))


@pytest.mark.parametrize("size", [100, 32, 129])
def test_size_that_is_not_a_multiple_of_32_from_64_is_refused(size: int) -> None:
    with pytest.raises(InputError, match=str(size)):
        render(np.random.default_rng(0), size=size)


def test_contrast_changes_anomalies_but_not_the_scene_layout() -> None:
    weak = render(np.random.default_rng(5), contrast=0.0)
    strong = render(np.random.default_rng(5), contrast=3.0)
    np.testing.assert_array_equal(weak[1], strong[1])
    np.testing.assert_array_equal(weak[2], strong[2])
    assert not np.array_equal(weak[0], strong[0])


def test_default_set_renders_in_under_three_seconds(default_set) -> None:
    splits, seconds = default_set
    assert {name: len(samples) for name, samples in splits.items()} == DEFAULT_NUM_IMAGES
    assert seconds < 3.0


def test_no_anomaly_is_the_majority_and_every_class_is_in_train(default_set) -> None:
    splits, _ = default_set
    labels = np.concatenate([labels for _, _, labels in splits["train"]])
    shares = np.bincount(labels, minlength=len(NAMES)) / labels.size
    assert 0.55 <= shares[0] <= 0.75
    assert shares[0] == shares.max()
    assert (shares[1:] >= 0.03).all(), dict(zip(NAMES, shares.round(3), strict=True))


def test_boxes_lie_inside_the_image_and_barely_overlap(default_set) -> None:
    splits, _ = default_set
    for image, boxes, _ in splits["train"]:
        px = _pixel_boxes(boxes, image.shape[0])
        assert (px >= 0).all() and (px <= image.shape[0]).all()
        # Modules never overlap, but the upright boxes of a slightly rotated row may share a
        # sliver; it must stay far below any NMS threshold.
        w = np.minimum(px[:, None, 2], px[None, :, 2]) - np.maximum(px[:, None, 0], px[None, :, 0])
        h = np.minimum(px[:, None, 3], px[None, :, 3]) - np.maximum(px[:, None, 1], px[None, :, 1])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        area = (px[:, 2] - px[:, 0]) * (px[:, 3] - px[:, 1])
        iou = inter / (area[:, None] + area[None, :] - inter)
        np.fill_diagonal(iou, 0)
        assert iou.max() < 0.05


def test_modules_in_boxes_are_warmer_than_the_ground(default_set) -> None:
    splits, _ = default_set
    for image, boxes, _ in splits["train"]:
        inside = np.zeros(image.shape, dtype=bool)
        for x0, y0, x1, y1 in np.rint(_pixel_boxes(boxes, image.shape[0])).astype(int):
            inside[y0:y1, x0:x1] = True
        assert image[inside].mean() - image[~inside].mean() > NOISE_SIGMA


def test_box_edges_sit_on_the_module_outline(default_set) -> None:
    splits, _ = default_set
    samples = splits["train"][:32]
    exact = _edge_contrast(samples, grow=0.0)
    assert exact > 3 * NOISE_SIGMA
    # Boxes 2 px too large or too small lose most of the step: the check can fail.
    assert exact > _edge_contrast(samples, grow=2.0) + NOISE_SIGMA
    assert exact > _edge_contrast(samples, grow=-2.0) + NOISE_SIGMA


def test_write_yolo_lays_out_images_labels_and_a_relative_data_yaml(written: Path) -> None:
    assert written.is_absolute()
    data = yaml.safe_load((written / "data.yaml").read_text())
    assert data == {
        "path": ".",
        "train": "images/train",
        "val": "images/val",
        "test": "images/test",
        "names": dict(enumerate(NAMES)),
    }
    for split, count in SMALL.items():
        stems = [f"{split}_{i:05d}" for i in range(count)]
        assert sorted(p.name for p in (written / "images" / split).iterdir()) == [
            f"{s}.png" for s in stems
        ]
        assert sorted(p.name for p in (written / "labels" / split).iterdir()) == [
            f"{s}.txt" for s in stems
        ]
        with Image.open(written / "images" / split / f"{stems[0]}.png") as img:
            assert img.mode == "L" and img.size == (IMAGE_SIZE, IMAGE_SIZE)


def test_label_files_hold_what_generate_returns(written: Path) -> None:
    splits = generate(SMALL, seed=1)
    for split, samples in splits.items():
        for index, (image, boxes, labels) in enumerate(samples):
            stem = f"{split}_{index:05d}"
            with Image.open(written / "images" / split / f"{stem}.png") as img:
                np.testing.assert_array_equal(np.asarray(img), image)
            rows = [line.split() for line in (written / "labels" / split / f"{stem}.txt").open()]
            assert [int(row[0]) for row in rows] == labels.tolist()
            np.testing.assert_allclose(np.array(rows, float)[:, 1:], boxes, atol=5e-7)


def test_label_lines_are_class_and_four_six_decimal_numbers(written: Path) -> None:
    number = r"(0\.\d{6}|1\.000000)"
    line = re.compile(rf"^[0-{len(NAMES) - 1}] {number} {number} {number} {number}$")
    lines = [
        text for f in (written / "labels").rglob("*.txt") for text in f.read_text().splitlines()
    ]
    assert lines and all(line.match(text) for text in lines)


@pytest.mark.slow  # starts ultralytics in a subprocess
def test_ultralytics_accepts_every_written_image_and_label(written: Path, tmp_path: Path) -> None:
    # A subprocess: importing ultralytics changes thread settings for the whole interpreter.
    script = textwrap.dedent(
        """
        import glob, sys
        from ultralytics.data.utils import img2label_paths, verify_image_label
        images = sorted(glob.glob(sys.argv[1] + "/images/*/*.png"))
        for image, label in zip(images, img2label_paths(images)):
            result = verify_image_label((image, label, "", False, int(sys.argv[2]), 0, 0, False))
            found, corrupt, message = result[6], result[8], result[9]
            if found != 1 or corrupt or message:
                sys.exit(f"{image}: found={found} corrupt={corrupt} {message}")
        print(len(images))
        """
    )
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
    env["YOLO_CONFIG_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", script, str(written), str(len(NAMES))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == str(sum(SMALL.values()))


def test_write_yolo_refuses_a_non_empty_directory_and_leaves_it_alone(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(InputError) as caught:
        write_yolo(target, SMALL)
    assert str(target) in str(caught.value) and "\n" not in str(caught.value)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no staging left behind


def test_write_yolo_fills_an_existing_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    root = write_yolo(tmp_path / "empty", {"train": 1, "val": 1, "test": 1})
    assert (root / "data.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


@pytest.mark.parametrize(
    "counts", [{"train": 0, "val": 1, "test": 1}, {"train": 2, "valid": 1}, {"train": 1.5}]
)
def test_bad_image_counts_are_input_errors(counts: dict, tmp_path: Path) -> None:
    with pytest.raises(InputError):
        write_yolo(tmp_path / "ds", counts)
    assert not (tmp_path / "ds").exists()
