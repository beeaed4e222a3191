"""Tests for decoding ImageFolder trees into shared uint8 arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiontune.data import imagefolder
from visiontune.data.imagefolder import (
    MAX_IMAGE_SIDE,
    decode_image,
    load_imagefolder,
    stratified_split,
)
from visiontune.errors import InputError

SIZE = (24, 40)  # height, width
# Imbalanced like the real thermal sets: one big class down to one of three images.
CLASS_SIZES = (600, 120, 45, 20, 7, 3)


def _gray(value: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    return np.full(size, value, dtype=np.uint8)


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _write_class(folder: Path, values: list[int]) -> None:
    for i, value in enumerate(values):
        _save(folder / f"{i:03d}.png", _gray(value))


def _write_split_tree(root: Path, counts: dict[str, dict[str, int]]) -> None:
    """Each split's pixels carry a split-specific value, so the tests can tell them apart."""
    for value, (split, classes) in zip((50, 150, 250), counts.items(), strict=True):
        for name, count in classes.items():
            _write_class(root / split / name, [value] * count)


def _write_flat_tree(root: Path, per_class: int = 20) -> None:
    """Every image has a unique value, so a split is identified by its pixel values."""
    for c, name in enumerate(("ant", "bee")):
        _write_class(root / name, [c * 100 + i for i in range(per_class)])


def _values(images: np.ndarray) -> list[int]:
    return sorted(int(v) for v in images[:, 0, 0, 0])


def _imbalanced_labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.permutation(np.repeat(np.arange(len(CLASS_SIZES)), CLASS_SIZES))


def _input_error(root: Path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        load_imagefolder(root, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- layouts -------------------------------------------------------------------------------


def test_split_layout_loads_each_split_from_its_folder(tmp_path: Path) -> None:
    counts = {
        "train": {"cat": 3, "dog": 2},
        "val": {"cat": 1, "dog": 1},
        "test": {"cat": 1, "dog": 2},
    }
    _write_split_tree(tmp_path, counts)
    data = load_imagefolder(tmp_path)
    assert data.classes == ("cat", "dog")
    assert data.summary()["counts"] == {"train": 5, "val": 2, "test": 3}
    for split, value in (("train", 50), ("val", 150), ("test", 250)):
        assert np.all(data.splits[split].images == value)
        assert data.splits[split].labels.dtype == np.int64
    assert data.splits["train"].labels.tolist() == [0, 0, 0, 1, 1]
    assert data.splits["test"].labels.tolist() == [0, 1, 1]


def test_flat_layout_is_split_70_15_15_within_each_class(tmp_path: Path) -> None:
    _write_flat_tree(tmp_path, per_class=20)
    data = load_imagefolder(tmp_path)
    assert data.classes == ("ant", "bee")
    for split, per_class in (("train", 14), ("val", 3), ("test", 3)):
        assert np.bincount(data.splits[split].labels).tolist() == [per_class, per_class]
    every = sum((_values(split.images) for split in data.splits.values()), [])
    assert sorted(every) == list(range(20)) + list(range(100, 120))  # each image exactly once


def test_flat_split_is_deterministic_for_a_seed_and_differs_across_seeds(tmp_path: Path) -> None:
    _write_flat_tree(tmp_path)
    first = load_imagefolder(tmp_path, split_seed=0)
    again = load_imagefolder(tmp_path, split_seed=0)
    other = load_imagefolder(tmp_path, split_seed=1)
    for split in ("train", "val", "test"):
        assert np.array_equal(first.splits[split].images, again.splits[split].images)
        assert np.array_equal(first.splits[split].labels, again.splits[split].labels)
    assert _values(first.splits["val"].images) != _values(other.splits["val"].images)


def test_flat_layout_puts_a_three_image_class_in_every_split(tmp_path: Path) -> None:
    _write_class(tmp_path / "ant", [10, 20, 30])
    _write_class(tmp_path / "bee", [50 + i for i in range(20)])
    data = load_imagefolder(tmp_path)
    for split in data.splits.values():
        assert np.count_nonzero(split.labels == 0) == 1


# --- stratified_split ----------------------------------------------------------------------


def test_split_is_disjoint_and_covers_every_index() -> None:
    labels = _imbalanced_labels()
    splits = stratified_split(labels, seed=0)
    assert set(splits) == {"train", "val", "test"}
    joined = np.concatenate(list(splits.values()))
    assert joined.size == labels.size
    np.testing.assert_array_equal(np.sort(joined), np.arange(labels.size))


def test_split_is_stratified_about_70_15_15() -> None:
    labels = _imbalanced_labels()
    splits = stratified_split(labels, seed=0)
    for label in range(len(CLASS_SIZES)):
        total = np.count_nonzero(labels == label)
        for name, fraction in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
            share = np.count_nonzero(labels[splits[name]] == label)
            assert share >= 1
            assert abs(share - fraction * total) <= 1.5


def test_split_is_deterministic_for_a_seed_and_differs_across_seeds() -> None:
    labels = _imbalanced_labels()
    first, again, other = (stratified_split(labels, seed=s) for s in (5, 5, 6))
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["train"], other["train"])


def test_split_puts_a_three_image_class_in_every_split() -> None:
    labels = np.array([0] * 3 + [1] * 40)
    splits = stratified_split(labels, seed=0)
    for indices in splits.values():
        assert np.count_nonzero(labels[indices] == 0) == 1


def test_split_keeps_one_and_two_image_classes_in_train() -> None:
    labels = np.array([0, 1, 1] + [2] * 40)
    splits = stratified_split(labels, seed=0)
    assert np.count_nonzero(labels[splits["train"]] == 0) == 1
    assert np.count_nonzero(labels[splits["train"]] == 1) == 2


def test_split_rejects_fractions_that_do_not_sum_to_one() -> None:
    with pytest.raises(InputError, match="fractions"):
        stratified_split(np.zeros(10, dtype=np.int64), seed=0, fractions=(0.7, 0.2, 0.2))


# --- decoding ------------------------------------------------------------------------------


def test_grayscale_images_stay_one_channel(tmp_path: Path) -> None:
    _write_flat_tree(tmp_path, per_class=4)
    data = load_imagefolder(tmp_path)
    assert data.channels == 1
    assert data.splits["train"].images.shape[1:] == (1, *SIZE)
    assert data.splits["train"].images.dtype == np.uint8


def test_one_colour_image_makes_every_image_rgb(tmp_path: Path) -> None:
    _write_class(tmp_path / "ant", [10, 20, 30, 40])
    _write_class(tmp_path / "bee", [50, 60, 70])
    colour = np.zeros((*SIZE, 3), dtype=np.uint8)
    colour[..., 0] = 255
    _save(tmp_path / "bee" / "red.png", colour)
    data = load_imagefolder(tmp_path)
    assert data.channels == 3
    images = np.concatenate([split.images for split in data.splits.values()])
    assert images.shape == (8, 3, *SIZE)
    red = [img for img in images if img[0, 0, 0] == 255]
    assert len(red) == 1 and np.all(red[0][1:] == 0)
    gray = [img for img in images if img[0, 0, 0] != 255]
    assert all(np.array_equal(img[0], img[1]) and np.array_equal(img[0], img[2]) for img in gray)


def test_mixed_sizes_are_resized_to_the_most_common_size(tmp_path: Path) -> None:
    _write_class(tmp_path / "ant", [10, 20, 30, 40])
    _write_class(tmp_path / "bee", [50, 60, 70])
    _save(tmp_path / "bee" / "odd.png", _gray(80, size=(30, 30)))
    data = load_imagefolder(tmp_path)
    assert data.image_size == SIZE
    images = np.concatenate([split.images for split in data.splits.values()])
    assert images.shape[2:] == SIZE
    assert 80 in images[:, 0, 0, 0]  # the odd one was resized, not dropped


def test_explicit_image_size_resizes_every_image(tmp_path: Path) -> None:
    _write_flat_tree(tmp_path, per_class=4)
    data = load_imagefolder(tmp_path, image_size=(16, 20))
    assert data.image_size == (16, 20)
    assert all(split.images.shape[2:] == (16, 20) for split in data.splits.values())


def test_mean_and_std_are_computed_on_train_only(tmp_path: Path) -> None:
    _write_split_tree(
        tmp_path,
        {"train": {"cat": 2, "dog": 2}, "val": {"cat": 1, "dog": 1}, "test": {"cat": 1, "dog": 1}},
    )
    (tmp_path / "train" / "dog" / "000.png").unlink()
    _save(tmp_path / "train" / "dog" / "000.png", _gray(150))  # train pixels: 50, 50, 150, 50
    data = load_imagefolder(tmp_path)
    pixels = np.array([50, 50, 150, 50]) / 255.0
    assert data.mean == pytest.approx((pixels.mean(),), rel=1e-5)
    assert data.std == pytest.approx((pixels.std(),), rel=1e-5)


def test_sixteen_bit_grayscale_png_keeps_its_high_byte(tmp_path: Path) -> None:
    ramp = (np.arange(SIZE[0] * SIZE[1]).reshape(SIZE) * 65).astype(np.uint16)
    for name in ("ant", "bee"):
        for i in range(4):  # four per class, so val and test get one each
            _save(tmp_path / name / f"{i}.png", ramp)
    assert Image.open(tmp_path / "ant" / "0.png").mode == "I;16"
    data = load_imagefolder(tmp_path)
    images = np.concatenate([split.images for split in data.splits.values()])
    assert images.dtype == np.uint8 and images.shape[1] == 1
    np.testing.assert_array_equal(images[0, 0], (ramp >> 8).astype(np.uint8))


def test_big_endian_sixteen_bit_tiff_keeps_its_high_byte(tmp_path: Path) -> None:
    ramp = (np.arange(SIZE[0] * SIZE[1]).reshape(SIZE) * 65).astype(np.uint16)
    for name in ("ant", "bee"):
        for i in range(4):
            _save(tmp_path / name / f"{i}.tif", ramp.astype(">u2"))
    assert Image.open(tmp_path / "ant" / "0.tif").mode == "I;16B"
    data = load_imagefolder(tmp_path)
    images = np.concatenate([split.images for split in data.splits.values()])
    np.testing.assert_array_equal(images[0, 0], (ramp >> 8).astype(np.uint8))


def test_non_image_and_hidden_entries_are_ignored(tmp_path: Path) -> None:
    _write_flat_tree(tmp_path, per_class=4)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "ant" / ".hidden.png").write_bytes(b"not a png either")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01")
    _write_class(tmp_path / ".ipynb_checkpoints", [1, 2])
    data = load_imagefolder(tmp_path)
    assert data.classes == ("ant", "bee")
    assert sum(len(split.labels) for split in data.splits.values()) == 8


# --- bad input -----------------------------------------------------------------------------


def test_missing_data_directory_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert str(missing.resolve()) in _input_error(missing)


def test_empty_class_folder_names_it(tmp_path: Path) -> None:
    _write_flat_tree(tmp_path, per_class=4)
    (tmp_path / "cow").mkdir()
    assert str((tmp_path / "cow").resolve()) in _input_error(tmp_path)


def test_class_folder_with_only_non_images_counts_as_empty(tmp_path: Path) -> None:
    _write_flat_tree(tmp_path, per_class=4)
    (tmp_path / "cow").mkdir()
    (tmp_path / "cow" / "notes.txt").write_text("todo")
    assert str((tmp_path / "cow").resolve()) in _input_error(tmp_path)


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    _write_flat_tree(tmp_path, per_class=4)
    broken = tmp_path / "bee" / "broken.png"
    broken.write_text("this is text, not a PNG")
    assert str(broken.resolve()) in _input_error(tmp_path)


def test_unreadable_image_names_the_file_after_ultralytics_patched_pil(tmp_path: Path) -> None:
    from visiontune.trainables.yolo.offline import offline_ultralytics

    offline_ultralytics()  # as in a process that trained YOLO before decoding data
    broken = tmp_path / "broken.png"
    broken.write_text("this is text, not a PNG")
    with pytest.raises(InputError, match="broken.png: cannot read image"):
        decode_image(broken)


def test_truncated_image_names_the_file(tmp_path: Path) -> None:
    _write_flat_tree(tmp_path, per_class=4)
    whole = _save(tmp_path / "bee" / "cut.png", np.arange(960, dtype=np.uint8).reshape(SIZE))
    whole.write_bytes(whole.read_bytes()[:60])
    assert str(whole.resolve()) in _input_error(tmp_path)


@pytest.mark.parametrize("classes", [[], ["ant"]])
def test_fewer_than_two_classes_is_an_error(tmp_path: Path, classes: list[str]) -> None:
    for name in classes:
        _write_class(tmp_path / name, [1, 2, 3])
    message = _input_error(tmp_path)
    assert str(tmp_path.resolve()) in message and "at least 2" in message


@pytest.mark.parametrize("present", [("train",), ("train", "val"), ("val", "test")])
def test_partial_split_layout_is_an_error(tmp_path: Path, present: tuple[str, ...]) -> None:
    for split in present:
        _write_class(tmp_path / split / "ant", [1])
        _write_class(tmp_path / split / "bee", [2])
    message = _input_error(tmp_path)
    assert str(tmp_path.resolve()) in message
    missing = [split for split in ("train", "val", "test") if split not in present]
    assert all(split in message for split in missing)


def test_val_class_missing_from_train_names_the_val_folder(tmp_path: Path) -> None:
    counts = {"train": {"ant": 2, "bee": 2}, "val": {"ant": 1, "cow": 1}, "test": {"ant": 1}}
    _write_split_tree(tmp_path, counts)
    message = _input_error(tmp_path)
    assert str((tmp_path / "val").resolve()) in message and "cow" in message


@pytest.mark.parametrize("empty", ["train", "val", "test"])
def test_an_explicit_split_folder_without_images_is_an_error_naming_it(
    tmp_path: Path, empty: str
) -> None:
    """An empty test/ would otherwise be evaluated as test_loss=0, test_acc=0: never measured."""
    counts = {"train": {"ant": 2, "bee": 2}, "val": {"ant": 1, "bee": 1}, "test": {"ant": 1}}
    _write_split_tree(tmp_path, {**counts, empty: {}})
    (tmp_path / empty).mkdir()
    (tmp_path / empty / "README.txt").write_text("to do")
    message = _input_error(tmp_path)
    assert message.startswith(f"{(tmp_path / empty).resolve()}: the {empty} split folder has no")


def test_a_flat_tree_too_small_to_split_is_an_error_not_an_empty_split(tmp_path: Path) -> None:
    for name in ("ant", "bee"):
        _write_class(tmp_path / name, [1, 2])  # 2 images: nothing for val or test
    assert "has no images (a class needs at least 3" in _input_error(tmp_path)


def test_a_file_is_not_an_imagefolder(tmp_path: Path) -> None:
    path = _save(tmp_path / "one.png", _gray(3))
    assert _input_error(path).startswith(f"{path.resolve()}: is a file; an ImageFolder")


@pytest.mark.parametrize("size", [(100_000, 100_000), (MAX_IMAGE_SIDE + 1, 1), (1, 10**9)])
def test_an_image_size_over_the_side_limit_is_refused_before_decoding(
    tmp_path: Path, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_flat_tree(tmp_path, per_class=4)
    monkeypatch.setattr(imagefolder, "decode_image", _never)
    message = _input_error(tmp_path, image_size=size)
    assert message.startswith(f"image_size {list(size)} is larger than {MAX_IMAGE_SIDE} px")


def test_a_dataset_over_a_quarter_of_the_available_memory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_flat_tree(tmp_path, per_class=4)  # 8 images, grey
    needed = 8 * 1 * 100 * 200
    monkeypatch.setattr(imagefolder, "available_memory", lambda: 4 * needed - 1)
    message = _input_error(tmp_path, image_size=(100, 200))
    assert "8 images of 100x200 px (1 channel(s))" in message and "more than 1/4" in message
    monkeypatch.setattr(imagefolder, "available_memory", lambda: 4 * needed)
    assert load_imagefolder(tmp_path, image_size=(100, 200)).image_size == (100, 200)


def test_the_most_common_size_is_held_to_the_same_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_flat_tree(tmp_path, per_class=4)
    monkeypatch.setattr(imagefolder, "MAX_IMAGE_SIDE", SIZE[1] - 1)
    message = _input_error(tmp_path)
    assert message.startswith(f"{tmp_path.resolve()}: the most common image size is larger")


def test_an_image_too_large_for_pil_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = _save(tmp_path / "big.png", _gray(1, (64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64x64 > 2 x 100: a decompression bomb
    with pytest.raises(InputError, match="big.png: cannot read image"):
        decode_image(big)


def _never(path: Path) -> None:
    raise AssertionError(f"decoded {path}")
