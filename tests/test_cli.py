"""Command line: bad input answers with one line on stderr, exit code 2, and nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import CLASSIFIER_SPACE, visiontune

from visiontune.cli import main


def _image_tree(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((40, 24), 10 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _run_bad(capsys, tmp_path: Path, *args: str) -> str:
    storage = tmp_path / "storage"
    code = main(
        [*args, "--storage", str(storage), "--name", "exp"] if args[0] == "tune" else list(args)
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("visiontune: error: ") and "\n" not in err, err
    assert not storage.exists(), "bad input must not create the experiment directory"
    return err


def test_missing_data_directory(capsys, tmp_path):
    err = _run_bad(
        capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), "--data", str(tmp_path / "nope")
    )
    assert f"{tmp_path / 'nope'}: data directory does not exist" in err


def test_empty_class_folder(capsys, tmp_path):
    root = _image_tree(tmp_path / "data", {"Cell": 5, "No-Anomaly": 5})
    (root / "Soiling").mkdir()
    err = _run_bad(capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), "--data", str(root))
    assert f"{root / 'Soiling'}: class folder has no images" in err


def test_unreadable_image_file(capsys, tmp_path):
    root = _image_tree(tmp_path / "data", {"Cell": 5, "No-Anomaly": 5})
    (root / "Cell" / "broken.png").write_bytes(b"this is not a png")
    err = _run_bad(capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), "--data", str(root))
    assert f"{root / 'Cell' / 'broken.png'}: cannot read image" in err


def test_fewer_than_two_classes(capsys, tmp_path):
    root = _image_tree(tmp_path / "data", {"Cell": 8})
    err = _run_bad(capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), "--data", str(root))
    assert "found 1 class folder(s) ['Cell']; need at least 2" in err


def test_unknown_key_in_spec(capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(CLASSIFIER_SPACE.read_text() + "\nlearning_rate: 0.1  # typo\n")
    err = _run_bad(capsys, tmp_path, "tune", str(space))
    assert f"{space}: unknown key 'learning_rate'" in err


def test_malformed_yaml(capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("task: [classifier\n")
    err = _run_bad(capsys, tmp_path, "tune", str(space))
    assert f"{space}: line" in err and "malformed YAML" in err


def test_unknown_parameter_in_set(capsys, tmp_path):
    err = _run_bad(capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), "--set", "dropuot=0.3")
    assert "unknown parameter 'dropuot'" in err


def test_existing_experiment_is_refused_and_left_alone(capsys, tmp_path):
    existing = tmp_path / "storage" / "exp"
    existing.mkdir(parents=True)
    (existing / "keep.txt").write_text("finished results")
    code = main(
        ["tune", str(CLASSIFIER_SPACE), "--storage", str(tmp_path / "storage"), "--name", "exp"]
    )
    assert code == 2
    assert "experiment already exists" in capsys.readouterr().err
    assert (existing / "keep.txt").read_text() == "finished results"
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"]


def test_report_of_a_directory_that_is_no_experiment(capsys, tmp_path):
    code = main(["report", str(tmp_path)])
    assert code == 2
    assert f"{tmp_path}: not a visiontune experiment directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_train_config_with_unknown_parameter(capsys, tmp_path):
    config = tmp_path / "best_config.yaml"
    config.write_text("lr: 0.001\nwarmup: 3\n")
    assert main(["train", str(CLASSIFIER_SPACE), "--config", str(config)]) == 2
    assert f"{config}: unknown parameter 'warmup'" in capsys.readouterr().err


def test_data_make_refuses_a_non_empty_directory(capsys, tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    assert main(["data", "make", "ir-solar-modules", "--out", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_console_script_exits_2_with_one_line(tmp_path):
    proc = visiontune("tune", tmp_path / "missing.yaml", "--storage", tmp_path / "s")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"visiontune: error: {tmp_path / 'missing.yaml'}: file not found"
    assert not (tmp_path / "s").exists()


def test_data_make_writes_the_embedded_set(tmp_path):
    out = tmp_path / "ir"
    assert main(["data", "make", "ir-solar-modules", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test", "train", "val"]
    assert len(list((out / "train").iterdir())) == 12


@pytest.mark.parametrize("command", ["tune", "report", "train", "data"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: visiontune" in capsys.readouterr().out


def _yolo_tree(root: Path, label: str) -> Path:
    for split in ("train", "val", "test"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(root / "images" / split / "a.png")
        (root / "labels" / split / "a.txt").write_text(label)
    names = "names: [No-Anomaly, Shadowing]\n"
    (root / "data.yaml").write_text(
        f"path: .\ntrain: images/train\nval: images/val\ntest: images/test\n{names}"
    )
    return root / "data.yaml"


@pytest.mark.parametrize("space", ["faster_rcnn.yaml", "yolo.yaml"])
def test_detection_label_with_unknown_class_names_file_and_line(capsys, tmp_path, space):
    data = _yolo_tree(tmp_path / "det", "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    err = _run_bad(
        capsys, tmp_path, "tune", str(CLASSIFIER_SPACE.with_name(space)), "--data", str(data)
    )
    assert str(tmp_path / "det" / "labels" / "train" / "a.txt") in err and "7" in err


def test_detection_box_outside_the_image_is_refused(capsys, tmp_path):
    data = _yolo_tree(tmp_path / "det", "0 0.5 0.5 1.4 0.2\n")
    err = _run_bad(
        capsys, tmp_path, "tune", str(CLASSIFIER_SPACE.with_name("yolo.yaml")), "--data", str(data)
    )
    assert "a.txt" in err


def test_detection_spec_value_the_trainable_rejects(capsys, tmp_path):
    err = _run_bad(
        capsys, tmp_path, "tune", str(CLASSIFIER_SPACE.with_name("yolo.yaml")), "--set", "imgsz=100"
    )
    assert "--set imgsz=100" in err


def test_classifier_space_cannot_read_a_detection_dataset(capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        CLASSIFIER_SPACE.read_text().replace("source: ir-solar-modules", "source: pv-arrays")
    )
    err = _run_bad(capsys, tmp_path, "tune", str(space))
    assert "'pv-arrays' is a yolo dataset" in err


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:1", "--address: nothing answers at 127.0.0.1:1"),
        ("ray://127.0.0.1:1", "--address: nothing answers at ray://127.0.0.1:1"),
        ("nonsense", "--address: 'nonsense' is not auto, HOST:PORT or ray://HOST:PORT"),
    ],
)
def test_an_address_without_a_cluster_fails_at_once(capsys, tmp_path, address, message):
    err = _run_bad(capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), "--address", address)
    assert message in err


def test_negative_max_failures(capsys, tmp_path):
    err = _run_bad(capsys, tmp_path, "tune", str(CLASSIFIER_SPACE), "--max-failures", "-1")
    assert "max_failures: must be >= 0, got -1" in err
