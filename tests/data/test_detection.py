"""Tests for reading YOLO detection datasets (load_yolo) and the box helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from visiontune.data import pv_arrays
from visiontune.data.detection import load_yolo, to_xyxy_abs
from visiontune.data.yolo_tree import YOLO_YAML_CACHE, node_local_yolo_yaml
from visiontune.errors import InputError

COUNTS = {"train": 5, "val": 3, "test": 2}
SEED = 2


@pytest.fixture(autouse=True)
def _private_tempdir(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    # load_yolo writes its absolute data.yaml under tempfile.gettempdir(); keep it out of /tmp.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("systemp")))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pv_arrays.write_yolo(tmp_path_factory.mktemp("pv") / "ds", COUNTS, seed=SEED)


@pytest.fixture
def dataset(pristine: Path, tmp_path: Path) -> Path:
    """A private copy that a test may break."""
    return Path(shutil.copytree(pristine, tmp_path / "ds"))


def _edit_yaml(root: Path, **changes) -> None:
    data = yaml.safe_load((root / "data.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _six_decimals(boxes: np.ndarray) -> np.ndarray:
    return np.array([[float(f"{v:.6f}") for v in box] for box in boxes.tolist()], np.float32)


def test_load_yolo_round_trips_images_boxes_and_labels(pristine: Path) -> None:
    ds = load_yolo(pristine / "data.yaml")
    generated = pv_arrays.generate(COUNTS, seed=SEED)
    assert ds.names == pv_arrays.NAMES
    assert ds.source == str(pristine / "data.yaml")
    assert ds.channels == 1 and ds.image_size == (128, 128)
    for split, samples in generated.items():
        loaded = ds.splits[split]
        assert len(loaded) == len(samples)
        assert loaded.files == [
            str(pristine / "images" / split / f"{split}_{i:05d}.png") for i in range(len(samples))
        ]
        for i, (image, boxes, labels) in enumerate(samples):
            np.testing.assert_array_equal(loaded.images[i], image)
            assert loaded.boxes[i].dtype == np.float32 and loaded.labels[i].dtype == np.int64
            np.testing.assert_array_equal(loaded.boxes[i], _six_decimals(boxes))
            np.testing.assert_array_equal(loaded.labels[i], labels)


def test_yolo_yaml_is_an_absolute_copy_outside_the_dataset(pristine: Path) -> None:
    before = sorted(pristine.rglob("*"))
    ds = load_yolo(pristine / "data.yaml")
    assert sorted(pristine.rglob("*")) == before
    assert ds.yolo_yaml.parent.parent == Path(tempfile.gettempdir()) / YOLO_YAML_CACHE
    copy = yaml.safe_load(ds.yolo_yaml.read_text())
    assert copy["path"] == str(pristine)
    assert {s: copy[s] for s in ("train", "val", "test")} == {
        s: str(pristine / "images" / s) for s in ("train", "val", "test")
    }
    assert copy["names"] == dict(enumerate(pv_arrays.NAMES))
    assert load_yolo(pristine / "data.yaml").yolo_yaml == ds.yolo_yaml  # keyed by the yaml path


@pytest.mark.slow  # starts ultralytics in a subprocess
def test_ultralytics_reads_yolo_yaml_from_another_working_directory(
    pristine: Path, tmp_path: Path
) -> None:
    yolo_yaml = load_yolo(pristine / "data.yaml").yolo_yaml
    script = textwrap.dedent(
        """
        import sys
        from ultralytics.data.utils import check_det_dataset
        data = check_det_dataset(sys.argv[1], autodownload=False)
        print(data["path"], data["train"], data["nc"])
        """
    )
    config = tmp_path / "config"
    font = Path(__import__("matplotlib").get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    (config / "Ultralytics").mkdir(parents=True)
    shutil.copy(font, config / "Ultralytics" / "Arial.ttf")  # skips an offline font lookup
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
    env["YOLO_CONFIG_DIR"] = str(config)
    done = subprocess.run(
        [sys.executable, "-c", script, str(yolo_yaml)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == [str(pristine), str(pristine / "images" / "train"), "5"]


def test_names_may_be_a_list(dataset: Path) -> None:
    _edit_yaml(dataset, names=list(pv_arrays.NAMES))
    assert load_yolo(dataset / "data.yaml").names == pv_arrays.NAMES


def test_names_dict_is_ordered_by_index(dataset: Path) -> None:
    _edit_yaml(dataset, names={4: "e", 2: "c", 0: "a", 1: "b", 3: "d"})
    assert load_yolo(dataset / "data.yaml").names == ("a", "b", "c", "d", "e")


def test_relative_path_resolves_against_the_yaml_folder_not_the_cwd(
    dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    _edit_yaml(dataset, path="../ds")
    (dataset / "data.yaml").rename(configs / "pv.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ds = load_yolo(Path("..") / "configs" / "pv.yaml")
    assert ds.source == str(configs / "pv.yaml")
    assert ds.splits["val"].files[0] == str(dataset / "images" / "val" / "val_00000.png")
    assert yaml.safe_load(ds.yolo_yaml.read_text())["path"] == str(dataset)


def test_missing_path_means_the_yaml_folder(dataset: Path) -> None:
    _edit_yaml(dataset, path=None)
    ds = load_yolo(dataset / "data.yaml")
    assert len(ds.splits["train"]) == COUNTS["train"]


def test_a_folder_with_a_data_yaml_may_be_named_instead(dataset: Path) -> None:
    assert load_yolo(dataset).source == str(dataset / "data.yaml")


def test_image_without_label_file_is_a_background_image(dataset: Path) -> None:
    (dataset / "labels" / "train" / "train_00001.txt").unlink()
    (dataset / "labels" / "train" / "train_00002.txt").write_text("\n")
    split = load_yolo(dataset / "data.yaml").splits["train"]
    for index in (1, 2):
        assert split.boxes[index].shape == (0, 4) and split.boxes[index].dtype == np.float32
        assert split.labels[index].shape == (0,) and split.labels[index].dtype == np.int64
    assert len(split.boxes[0]) > 0


def test_labels_beside_images_are_read_without_an_images_folder(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        (tmp_path / "pics" / split).mkdir(parents=True)
        Image.fromarray(np.full((32, 64), 9, np.uint8)).save(tmp_path / "pics" / split / "a.png")
        (tmp_path / "pics" / split / "a.txt").write_text("1 0.5 0.5 0.25 0.5\n")
    (tmp_path / "data.yaml").write_text(
        "train: pics/train\nval: pics/val\ntest: pics/test\nnames: [x, y]\n"
    )
    split = load_yolo(tmp_path / "data.yaml").splits["test"]
    np.testing.assert_array_equal(split.boxes[0], np.array([[0.5, 0.5, 0.25, 0.5]], np.float32))
    np.testing.assert_array_equal(split.labels[0], [1])


def test_a_colour_image_makes_every_image_rgb(dataset: Path) -> None:
    gray = np.asarray(Image.open(dataset / "images" / "val" / "val_00000.png"))
    Image.fromarray(np.stack([gray, gray // 2, gray // 3], axis=2)).save(
        dataset / "images" / "val" / "val_00000.png"
    )
    ds = load_yolo(dataset / "data.yaml")
    assert ds.channels == 3
    assert all(img.shape == (128, 128, 3) for s in ds.splits.values() for img in s.images)
    np.testing.assert_array_equal(ds.splits["val"].images[0][:, :, 1], gray // 2)
    train0 = ds.splits["train"].images[0]
    np.testing.assert_array_equal(train0[:, :, 0], train0[:, :, 2])


def test_sixteen_bit_images_keep_their_high_byte(dataset: Path) -> None:
    path = dataset / "images" / "test" / "test_00000.png"
    gray = np.asarray(Image.open(path))
    Image.fromarray(gray.astype(np.uint16) * 256 + 77).save(path)
    assert Image.open(path).mode == "I;16"
    np.testing.assert_array_equal(load_yolo(dataset / "data.yaml").splits["test"].images[0], gray)


LABEL = Path("labels") / "train" / "train_00000.txt"


def _write_label(line: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / LABEL
        path.write_text(path.read_text() + line + "\n")

    return apply


def _line_of_bad_label(root: Path) -> str:
    return f"{root / LABEL}:{len((root / LABEL).read_text().splitlines())}"


BAD_LABELS = {
    "four numbers": ("0 0.5 0.5 0.1", "malformed label line '0 0.5 0.5 0.1'"),
    "six numbers": ("0 0.5 0.5 0.1 0.1 0.3", "malformed label line"),
    "a word": ("0 0.5 wide 0.1 0.1", "malformed label line '0 0.5 wide 0.1 0.1'"),
    "fractional class": ("1.5 0.5 0.5 0.1 0.1", "class '1.5' is not an integer"),
    "class too large": ("5 0.5 0.5 0.1 0.1", "class 5 is out of range 0..4"),
    "negative class": ("-1 0.5 0.5 0.1 0.1", "class -1 is out of range 0..4"),
    "cx above one": ("0 1.2 0.5 0.1 0.1", "cx 1.2 is outside [0, 1]"),
    "negative cy": ("0 0.5 -0.01 0.1 0.1", "cy -0.01 is outside [0, 1]"),
    "nan height": ("0 0.5 0.5 0.1 nan", "h nan is outside [0, 1]"),
    "zero width": ("0 0.5 0.5 0 0.1", "box w 0 and h 0.1 must both be > 0"),
}


@pytest.mark.parametrize("line, expected", BAD_LABELS.values(), ids=BAD_LABELS.keys())
def test_bad_label_line_names_file_line_and_value(dataset: Path, line: str, expected: str) -> None:
    _write_label(line)(dataset)
    with pytest.raises(InputError) as caught:
        load_yolo(dataset / "data.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(_line_of_bad_label(dataset) + ":")
    assert expected in message


def _garble_image(root: Path) -> None:
    (root / "images" / "val" / "val_00001.png").write_bytes(b"not a png at all")


def _orphan_label(root: Path) -> None:
    (root / "labels" / "test" / "test_00099.txt").write_text("0 0.5 0.5 0.1 0.1\n")


def _empty_split(root: Path, split: str = "val") -> None:
    for image in (root / "images" / split).iterdir():
        image.unlink()
    (root / "images" / split / "notes.md").write_text("no pictures")


BAD_DATASETS: dict[str, tuple[Callable[[Path], object], Callable[[Path], list[str]]]] = {
    "data.yaml missing": (
        lambda r: (r / "data.yaml").unlink(),
        lambda r: [f"{r}: is a folder without a data.yaml"],
    ),
    "malformed yaml": (
        lambda r: (r / "data.yaml").write_text("train: images/train\nnames: [a, b\n"),
        lambda r: [f"{r / 'data.yaml'}:", "malformed YAML"],
    ),
    "not text": (
        lambda r: (r / "data.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe"),
        lambda r: [f"{r / 'data.yaml'}: cannot read data.yaml"],
    ),
    "not a mapping": (
        lambda r: (r / "data.yaml").write_text("- train\n- val\n"),
        lambda r: [f"{r / 'data.yaml'}: expected a mapping", "got list"],
    ),
    **{
        f"missing {key}": (
            lambda r, key=key: _edit_yaml(r, **{key: None}),
            lambda r, key=key: [f"{r / 'data.yaml'}: missing key '{key}'"],
        )
        for key in ("train", "val", "test", "names")
    },
    "names keys with a hole": (
        lambda r: _edit_yaml(r, names={0: "a", 2: "c"}),
        lambda r: [f"{r / 'data.yaml'}:", "keys must be the indices 0..1, got [0, 2]"],
    ),
    "nc mismatch": (
        lambda r: _edit_yaml(r, nc=3),
        lambda r: [f"{r / 'data.yaml'}:", "'nc: 3' does not match the 5 names"],
    ),
    "split folder missing": (
        lambda r: shutil.rmtree(r / "images" / "test"),
        lambda r: [f"{r / 'data.yaml'}: 'test' folder {r / 'images' / 'test'} does not exist"],
    ),
    **{
        f"{split} folder without images": (
            lambda r, split=split: _empty_split(r, split),
            lambda r, split=split: [f"{r / 'images' / split}: no images", f"'{split}'"],
        )
        for split in ("train", "val", "test")
    },
    "test split the dataset folder itself": (
        lambda r: _edit_yaml(r, test=""),
        lambda r: [f"{r / 'data.yaml'}: 'test' must be one folder of images, got ''"],
    ),
    "names a huge value": (
        lambda r: _edit_yaml(r, names="x" * 5000),
        lambda r: [f"{r / 'data.yaml'}: 'names' must be", "..."],
    ),
    "unreadable image": (
        _garble_image,
        lambda r: [f"{r / 'images' / 'val' / 'val_00001.png'}: cannot read image"],
    ),
    "label without image": (
        _orphan_label,
        lambda r: [f"{r / 'labels' / 'test' / 'test_00099.txt'}: label file has no matching image"],
    ),
}


@pytest.mark.parametrize("edit, expected", BAD_DATASETS.values(), ids=BAD_DATASETS.keys())
def test_bad_dataset_is_a_one_line_input_error_naming_the_file(
    dataset: Path, edit: Callable[[Path], object], expected: Callable[[Path], list[str]]
) -> None:
    edit(dataset)
    with pytest.raises(InputError) as caught:
        load_yolo(dataset / "data.yaml" if (dataset / "data.yaml").exists() else dataset)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    for part in expected(dataset):
        assert part in message, message


def test_a_data_yaml_that_does_not_exist_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"{tmp_path / 'nope.yaml'}: data.yaml does not exist"):
        load_yolo(tmp_path / "nope.yaml")


def test_to_xyxy_abs_scales_centre_boxes_to_pixel_corners() -> None:
    boxes = np.array([[0.5, 0.5, 0.5, 0.25], [0.1, 0.9, 0.2, 0.2]], np.float32)
    xyxy = to_xyxy_abs(boxes, height=100, width=200)
    assert xyxy.dtype == np.float32
    np.testing.assert_allclose(xyxy, [[50, 37.5, 150, 62.5], [0, 80, 40, 100]], atol=1e-4)


def test_to_xyxy_abs_keeps_an_empty_image_empty() -> None:
    xyxy = to_xyxy_abs(np.zeros((0, 4), np.float32), height=64, width=64)
    assert xyxy.shape == (0, 4) and xyxy.dtype == np.float32


def test_a_node_without_the_files_writes_the_same_dataset_from_memory(dataset: Path) -> None:
    """A worker node of a multi-node sweep gets the decoded dataset but not the driver's files:
    its own YOLO tree, written from memory, loads back to the same images, boxes and labels."""
    ds = load_yolo(dataset / "data.yaml")
    shutil.rmtree(dataset)  # as seen from another node: neither the files nor the yaml copy
    Path(ds.yolo_yaml).unlink()
    local = node_local_yolo_yaml(ds)
    assert local.is_absolute() and local.parent.name.startswith("tree-")
    again = load_yolo(local)
    assert again.names == ds.names
    for split in ("train", "val", "test"):
        for a, b in zip(ds.splits[split].images, again.splits[split].images, strict=True):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(ds.splits[split].boxes, again.splits[split].boxes, strict=True):
            np.testing.assert_array_equal(a, b)  # already at 6 decimals: written exactly
        for a, b in zip(ds.splits[split].labels, again.splits[split].labels, strict=True):
            np.testing.assert_array_equal(a, b)
    assert node_local_yolo_yaml(ds) == local  # the next trial on the node reuses it
