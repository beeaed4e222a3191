"""The tuned model in hand (visiontune/load.py, each task's `load_model`): `load_best` loads the
checkpoint the report's "tuned best" row was tested from, ready to predict, with its input
preparation and class names; the report keeps that checkpoint in report/best_checkpoint/; and a
tuned best retrained with `visiontune train` reproduces the sweep's numbers bit for bit.

Fast tests read a copy of the checked-in experiment (tests/fixtures/experiment, whose
checkpoints are not checked in: the tests put stand-ins where Ray keeps them). The `ray` tests
read the shared finished classifier sweep (conftest.py `sweep`); the detector tests train a
checkpoint with `visiontune train --out` (a detector sweep costs minutes more) and load it the
way `load_best` does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import REPO, classifier_test_accuracy, copy_fixture, visiontune
from tiny_data import write_detection_dataset

from visiontune.analysis.report import write_report
from visiontune.analysis.results import load_experiment
from visiontune.cli import main
from visiontune.data.imagefolder import decode_image, load_imagefolder
from visiontune.errors import InputError
from visiontune.load import (
    REPORT_CHECKPOINT,
    best_checkpoint_dir,
    keep_best_checkpoint,
    load_best,
    load_checkpoint,
)
from visiontune.provenance import data_fingerprint
from visiontune.trainables.classifier import Normalize, Preprocess, to_input
from visiontune.trainables.faster_rcnn.engine import compute_map
from visiontune.trainables.yolo.offline import offline_ultralytics

FIXTURE_BEST = ("40bf8aaf", "checkpoint_000002")  # the fixture's tuned best: trial, epoch 3's dir


def _stand_in_checkpoint(exp: Path) -> Path:
    """Where Ray keeps the fixture's tuned-best checkpoint, with stand-in bytes."""
    trial, name = FIXTURE_BEST
    directory = exp / f"trial_{trial}" / name
    directory.mkdir()
    (directory / "checkpoint.pt").write_bytes(b"weights of epoch 3")
    return directory


# --- finding and keeping the checkpoint ------------------------------------------------------


def test_the_tuned_best_checkpoint_is_its_trials_checkpoint_of_the_tested_epoch(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    expected = _stand_in_checkpoint(exp)
    (exp / "trial_40bf8aaf" / "checkpoint_000001").mkdir()  # an older epoch's: not the tested one
    assert best_checkpoint_dir(load_experiment(exp)) == expected


def test_the_report_keeps_the_checkpoint_hard_linked_on_the_same_filesystem(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    source = _stand_in_checkpoint(exp) / "checkpoint.pt"
    out = write_report(exp)
    kept = out / REPORT_CHECKPOINT / "checkpoint.pt"
    assert kept.read_bytes() == b"weights of epoch 3"
    assert os.path.samefile(kept, source)  # a link: no second copy of the weights
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_where_hard_links_fail_the_report_copies_the_checkpoint(tmp_path, monkeypatch):
    exp = copy_fixture("experiment", tmp_path)
    source = _stand_in_checkpoint(exp) / "checkpoint.pt"

    def cross_device(*args: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    kept = keep_best_checkpoint(load_experiment(exp), tmp_path / "elsewhere") / "checkpoint.pt"
    assert kept.read_bytes() == source.read_bytes() and not os.path.samefile(kept, source)


def test_a_report_without_the_checkpoint_on_disk_removes_an_older_copy(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    stale = exp / "report" / REPORT_CHECKPOINT
    stale.mkdir(parents=True)
    (stale / "checkpoint.pt").write_bytes(b"another sweep's")
    write_report(exp)
    assert not stale.exists()


# --- load_best refuses what it cannot load ---------------------------------------------------


def test_load_best_of_a_sweep_without_a_tested_tuned_best_is_one_line(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    (exp / "test_results.json").write_text("[]")
    with pytest.raises(InputError, match="no tested tuned best in test_results.json"):
        load_best(exp)


def test_load_best_without_the_checkpoint_names_both_places_it_looked(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    with pytest.raises(
        InputError, match=r"neither in its trial directory nor in .*best_checkpoint"
    ):
        load_best(exp)


def test_load_best_refuses_data_that_is_not_the_data_the_sweep_trained_on(tmp_path):
    exp = copy_fixture("experiment", tmp_path)
    _stand_in_checkpoint(exp)
    summary = json.loads((exp / "sweep.json").read_text())
    recorded = {"data": {"sha256": "0" * 64}}
    (exp / "sweep.json").write_text(json.dumps({**summary, "provenance": recorded}))
    with pytest.raises(InputError, match="not the data the sweep trained on"):
        load_best(exp, data=_imagefolder(tmp_path / "other"))


def test_importing_visiontune_imports_neither_torch_nor_the_loader():
    code = "import sys, visiontune; print(sorted({'torch', 'visiontune.load'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- the classifier's input preparation ------------------------------------------------------


def _imagefolder(root: Path, sizes: tuple[tuple[int, int], ...] = ((12, 16),)) -> object:
    """Dark vs bright grey PNGs in root/{train,val,test}/<class>/, decoded; with several sizes
    the loader resizes all to the most common one."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for name, level in (("dark", 60), ("bright", 190)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(4):
                size = sizes[index % len(sizes)]
                pixels = (level + rng.integers(-20, 20, size=size)).astype(np.uint8)
                from PIL import Image

                Image.fromarray(pixels).save(folder / f"{index}.png")
    return load_imagefolder(root)


def test_preprocessing_a_decoded_file_gives_what_training_and_evaluation_feed_the_model(
    tmp_path,
):
    """Files of another size are resized as the loader resized them; grey stays grey."""
    data = _imagefolder(tmp_path / "data", sizes=((12, 16), (12, 16), (20, 9)))
    normalize = Normalize(data.mean, data.std)
    preprocess = Preprocess(data.image_size, data.channels, normalize)
    files = sorted((tmp_path / "data" / "test").glob("*/*.png"))  # the loader's order
    expected = normalize(to_input(torch.from_numpy(data.splits["test"].images.copy())))
    assert torch.equal(preprocess([decode_image(path) for path in files]), expected)
    assert torch.equal(preprocess(data.splits["test"].images), expected)  # a decoded batch
    assert torch.equal(preprocess(files[0]), expected[:1])  # a path


def test_a_colour_image_for_a_grey_model_becomes_its_luminance(tmp_path):
    data = _imagefolder(tmp_path / "data")
    preprocess = Preprocess(data.image_size, 1, Normalize(data.mean, data.std))
    grey = data.splits["test"].images[0, 0]
    colour = np.repeat(grey[:, :, None], 3, axis=2)
    assert torch.equal(preprocess(colour), preprocess(grey))


def test_pixels_that_are_not_uint8_are_refused_naming_the_dtype(tmp_path):
    data = _imagefolder(tmp_path / "data")
    preprocess = Preprocess(data.image_size, 1, Normalize(data.mean, data.std))
    with pytest.raises(ValueError, match="expected uint8 pixels .* got float32"):
        preprocess(np.zeros((12, 16), dtype=np.float32))


# --- a trained checkpoint, loaded (no Ray) ---------------------------------------------------


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A classifier checkpoint written by `visiontune train --out`, and its data."""
    base = tmp_path_factory.mktemp("classifier")
    data = _imagefolder(base / "data")
    out = base / "out"
    code = main([
        "train", str(REPO / "search_spaces" / "classifier.yaml"), "--data", str(base / "data"),
        "--max-epochs", "2", "--set", "width=4", "--set", "lr=0.01", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    return {"out": out, "data": data, "metrics": json.loads((out / "metrics.json").read_text())}


@pytest.mark.slow  # trains the classifier
def test_a_loaded_classifier_scores_the_test_accuracy_its_evaluation_measured(classifier_run):
    loaded = load_checkpoint(classifier_run["out"], "classifier", classifier_run["data"])
    test = classifier_run["data"].splits["test"]
    assert not loaded.model.training and loaded.classes == ("bright", "dark")
    with torch.no_grad():
        predicted = loaded.model(loaded.preprocess(test.images)).argmax(1).numpy()
    accuracy = float((predicted == test.labels).sum()) / len(test.labels)
    assert accuracy == classifier_run["metrics"]["test_acc"]


@pytest.mark.slow  # trains the classifier
def test_loading_a_model_leaves_the_callers_random_state_alone(classifier_run):
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    load_checkpoint(classifier_run["out"], "classifier", classifier_run["data"])
    assert torch.equal(torch.rand(3), expected)


# --- detectors: a checkpoint of `visiontune train --out`, loaded as load_best loads it --------

DETECTORS = {  # settings a from-scratch detector learns the easy set with (tests/tiny_data.py)
    "faster_rcnn": (6, {
        "box_batch_size_per_image": 32, "rpn_batch_size_per_image": 64,
        "rpn_post_nms_top_n_test": 50, "warmup_epochs": 0.0, "lr": 0.01, "batch_size": 4,
    }),
    "yolo": (20, {"imgsz": 128, "batch": 2, "lr0": 0.02, "lrf": 0.1, "warmup_epochs": 0, "mosaic": 0}),
}  # fmt: skip


@pytest.fixture(scope="module")
def easy_detection(tmp_path_factory: pytest.TempPathFactory) -> object:
    return write_detection_dataset(tmp_path_factory.mktemp("det") / "easy")


def _train_detector(task: str, data: object, out: Path) -> dict:
    epochs, settings = DETECTORS[task]
    pins = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    code = main([
        "train", str(REPO / "search_spaces" / f"{task}.yaml"), "--data", str(data.yolo_yaml),
        "--max-epochs", str(epochs), *pins, "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


def _targets(split: object) -> list[dict[str, torch.Tensor]]:
    """The split's boxes in pixels, labels as class indices."""
    from visiontune.trainables.faster_rcnn.data import to_target

    targets = []
    for image, boxes, labels in zip(split.images, split.boxes, split.labels, strict=True):
        xyxy, classes = to_target(boxes, labels, *image.shape[:2])
        targets.append({"boxes": xyxy, "labels": classes - 1})
    return targets


def _map(predictions: list[dict], targets: list[dict], names: tuple[str, ...]) -> dict:
    """COCO metrics as the Faster R-CNN task computes them (its labels count from 1)."""
    shift = [{**p, "labels": p["labels"] + 1} for p in predictions]
    return compute_map(shift, [{**t, "labels": t["labels"] + 1} for t in targets], names)


@pytest.mark.slow  # trains Faster R-CNN
def test_a_loaded_faster_rcnn_scores_the_map_its_evaluation_measured(easy_detection, tmp_path):
    metrics = _train_detector("faster_rcnn", easy_detection, tmp_path / "out")
    loaded = load_checkpoint(tmp_path / "out", "faster_rcnn", easy_detection)
    test = easy_detection.splits["test"]
    with torch.no_grad():
        predictions = loaded.model(loaded.preprocess(test.images))
    assert loaded.classes == easy_detection.names
    assert metrics["test_map50"] > 0  # it learnt something: the comparison means something
    result = _map(predictions, _targets(test), loaded.classes)
    assert [result["map"], result["map50"], result["ar100"]] == [
        metrics["test_map"], metrics["test_map50"], metrics["test_ar100"],
    ]  # fmt: skip


@pytest.mark.slow  # trains YOLO
def test_a_loaded_yolo_predicts_what_ultralytics_predicts_from_the_files(easy_detection, tmp_path):
    """The same detections, to the bit, as ultralytics' own predictor reading the image files
    (so the input preparation is what ultralytics does with a file), and a mAP@0.5 near its
    validation's: its validator's multi-label NMS and its own AP differ in detail (0.03
    apart when this was written)."""
    offline_ultralytics()  # before ultralytics is imported
    from ultralytics import YOLO

    metrics = _train_detector("yolo", easy_detection, tmp_path / "out")
    assert metrics["test_map50"] > 0.3, metrics  # it learnt: the comparisons mean something
    loaded = load_checkpoint(tmp_path / "out", "yolo", easy_detection)
    assert loaded.classes == easy_detection.names
    loaded.model.conf = 0.001  # validation's threshold: mAP counts low-confidence detections
    test = easy_detection.splits["test"]
    found = loaded.model(loaded.preprocess(test.images))
    reference = YOLO(str(tmp_path / "out" / "last.pt")).predict(
        test.files, imgsz=loaded.model.imgsz, conf=0.001, device="cpu", verbose=False
    )
    for mine, theirs in zip(found, reference, strict=True):
        assert torch.equal(mine["boxes"], theirs.boxes.xyxy)
        assert torch.equal(mine["scores"], theirs.boxes.conf)
        assert torch.equal(mine["labels"], theirs.boxes.cls.long())
    result = _map(
        [{k: v.cpu() for k, v in f.items()} for f in found], _targets(test), loaded.classes
    )
    assert abs(result["map50"] - metrics["test_map50"]) < 0.1, (result, metrics)


# --- a real sweep: retrain its tuned best, load it -------------------------------------------


@pytest.fixture(scope="module")
def reported(sweep: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared finished sweep, reported again with `visiontune report`."""
    exp = Path(shutil.copytree(sweep["dir"], tmp_path_factory.mktemp("copy") / "small"))
    proc = visiontune("report", exp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return exp


def _tuned_best(exp: Path) -> dict:
    rows = json.loads((exp / "test_results.json").read_text())
    return next(row for row in rows if row["role"] == "tuned best")


@pytest.mark.ray
@pytest.mark.slow
def test_retraining_best_config_reproduces_the_tuned_best_epoch_bit_for_bit(
    sweep, reported, tmp_path
):
    out = tmp_path / "again"
    proc = visiontune(
        "train", reported / "spec.yaml", "--config", reported / "report" / "best_config.yaml",
        "--data", sweep["data"], "--out", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    best = _tuned_best(reported)
    retrained = json.loads((out / "metrics.json").read_text())["history"][best["epoch"] - 1]
    assert retrained["epoch"] == best["epoch"]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        assert retrained[key] == best[key], key  # the same float, not approximately


@pytest.mark.ray
@pytest.mark.slow
def test_load_best_predicts_the_test_split_with_the_reports_tuned_best_accuracy(sweep, reported):
    best = load_best(reported)
    tested = _tuned_best(reported)
    assert (best.trial_id, best.epoch, best.task) == (
        tested["trial_id"],
        tested["epoch"],
        "classifier",
    )
    assert os.path.samefile(
        best.checkpoint / "checkpoint.pt", reported / "report" / REPORT_CHECKPOINT / "checkpoint.pt"
    )
    assert classifier_test_accuracy(best, Path(sweep["data"]) / "test") == tested["test_acc"]


@pytest.mark.ray
@pytest.mark.slow
def test_the_sweep_recorded_the_fingerprint_of_the_data_it_trained_on(sweep):
    from visiontune.data import load_dataset

    summary = json.loads((sweep["dir"] / "sweep.json").read_text())
    data = load_dataset("imagefolder", str(sweep["data"]))
    assert summary["provenance"]["data"]["sha256"] == data_fingerprint(data)["sha256"]
    assert summary["provenance"]["packages"]["torch"] == torch.__version__.split("+")[0]
    report = (sweep["dir"] / "report" / "report.md").read_text()
    assert report[report.rindex("\n## ") :].startswith("\n## Provenance\n")
