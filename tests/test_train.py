"""`visiontune train` (visiontune/cli.py: cmd_train) run in-process as the console script runs it:
bad input is one line and exit 2 before anything trains or is written; a diverging
configuration is one line and exit 1 with `--out` untouched; only measured numbers are printed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from support import CLASSIFIER_SPACE

from visiontune.cli import main
from visiontune.data.imagefolder import MAX_IMAGE_SIDE

COUNTS = {"train": 8, "val": 4, "test": 4}  # images per class and split


def _write_tree(root: Path, counts: dict[str, int] = COUNTS) -> Path:
    """Dark vs bright 12x16 grey images in DIR/{train,val,test}/<class>/ (a split of 0 images
    is an empty folder)."""
    rng = np.random.default_rng(0)
    for split, count in counts.items():
        (root / split).mkdir(parents=True)
        for name, level in (("dark", 60), ("bright", 190)):
            for index in range(count):
                pixels = level + rng.integers(-20, 20, size=(12, 16))
                path = root / split / name / f"{index}.png"
                path.parent.mkdir(exist_ok=True)
                Image.fromarray(pixels.astype(np.uint8)).save(path)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tree(tmp_path_factory.mktemp("data") / "tiny")


def _train(*args: object) -> int:
    return main(["train", str(CLASSIFIER_SPACE), "--set", "width=4", *map(str, args)])


def _one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("visiontune: "), err
    return err.strip()


# --- bad input: one line, exit 2, nothing trained or written ---------------------------------


def test_out_that_is_an_existing_file_is_refused_before_training(tree, tmp_path, capsys):
    out = tmp_path / "metrics.txt"
    out.write_text("mine")
    assert _train("--data", tree, "--out", out) == 2
    assert f"{out}: --out is a file" in _one_line_error(capsys)
    assert out.read_text() == "mine"


def test_out_below_a_file_is_refused_before_training(tree, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    assert _train("--data", tree, "--out", blocker / "run" / "one") == 2
    assert f"{blocker} is a file" in _one_line_error(capsys)


@pytest.mark.parametrize(
    "content",
    [b"\x00\x01\xff\xfe binary", bytes(range(256)), b"- a\n- list\n", b"just text"],
    ids=["binary", "all-bytes", "yaml-list", "yaml-scalar"],
)
def test_a_config_file_that_is_not_a_yaml_mapping_is_one_line(tree, tmp_path, capsys, content):
    config = tmp_path / "best_config.yaml"
    config.write_bytes(content)
    assert _train("--data", tree, "--config", config) == 2
    assert str(config) in _one_line_error(capsys)


def test_data_that_is_a_file_is_named_as_not_an_imagefolder(tree, tmp_path, capsys):
    data = tmp_path / "data.yaml"
    data.write_text("train: images/train\n")
    assert _train("--data", data) == 2
    assert f"{data}: is a file; an ImageFolder dataset is a directory" in _one_line_error(capsys)


def test_data_directory_without_class_folders_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no images here")
    assert _train("--data", tmp_path) == 2
    assert f"{tmp_path}: found 0 class folder(s)" in _one_line_error(capsys)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_an_empty_split_folder_is_refused_naming_it(tmp_path, capsys, split):
    root = _write_tree(tmp_path / "data", {**COUNTS, split: 0})
    out = tmp_path / "out"
    assert _train("--data", root, "--out", out) == 2
    assert f"{root / split}: the {split} split folder has no class folders with images" in (
        _one_line_error(capsys)
    )
    assert not out.exists()


@pytest.mark.parametrize("size", [[100000, 100000], [MAX_IMAGE_SIDE + 1, 8]])
def test_an_absurd_image_size_is_refused_before_anything_is_decoded(tree, tmp_path, capsys, size):
    raw = yaml.safe_load(CLASSIFIER_SPACE.read_text())
    raw["data"] = {"source": str(tree), "image_size": size}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(raw))
    assert main(["train", str(space)]) == 2
    assert f"image_size {size} is larger than {MAX_IMAGE_SIDE} px per side" in (
        _one_line_error(capsys)
    )


def test_a_command_line_value_is_blamed_on_its_flag_not_the_file(capsys):
    assert _train("--max-epochs", 0) == 2
    assert _one_line_error(capsys) == "visiontune: error: --max-epochs: must be >= 1, got 0"


# --- training outcomes ---------------------------------------------------------------------


@pytest.mark.slow  # trains the classifier
def test_scientific_notation_in_set_trains(tree, tmp_path, capsys):
    out = tmp_path / "out"
    assert _train("--data", tree, "--max-epochs", 1, "--set", "lr=1e-3", "--out", out) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert [line.split()[-2] for line in captured.out.splitlines()[1:2]] == ["0.001"]  # lr
    assert json.loads((out / "metrics.json").read_text())["history"][0]["lr"] == 1e-3


@pytest.mark.slow  # trains the classifier
def test_a_diverging_configuration_is_one_line_with_the_epoch_and_leaves_out_untouched(
    tree, tmp_path, capsys
):
    out = tmp_path / "out"
    code = _train("--data", tree, "--max-epochs", 2, "--set", "lr=1e10", "--out", out)
    assert code == 1
    err = _one_line_error(capsys)
    assert err.startswith("visiontune: training diverged at epoch 1: ")
    assert "loss became nan" in err and f"nothing written to {out}" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no staging folder left either


@pytest.mark.slow  # trains the classifier
def test_training_writes_out_in_one_step_with_the_measured_test_numbers(tree, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()  # an empty directory may be given
    assert _train("--data", tree, "--max-epochs", 1, "--out", out) == 0
    lines = capsys.readouterr().out.splitlines()
    test_line = next(line for line in lines if line.startswith("test_loss="))
    metrics = json.loads((out / "metrics.json").read_text())
    assert test_line == f"test_loss={metrics['test_loss']:.4f} test_acc={metrics['test_acc']:.4f}"
    assert metrics["test_loss"] > 0 and len(metrics["history"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
