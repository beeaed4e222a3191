"""The trainable contract (trainables/contract.py), tested once for every task: the same tests
run over the classifier, Faster R-CNN and YOLO on tiny data they all learn from, on the CPU.
What is specific to one task stays in that task's test file."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_data import classification_dataset, write_detection_dataset

from visiontune.errors import InputError
from visiontune.trainables import TASKS, load_task
from visiontune.trainables.contract import Trainable, TrainContext
from visiontune.trainables.session import SessionTask

# Small, fast settings per task; every task trains EPOCHS epochs in these tests.
EPOCHS = 2
TINY: dict[str, dict[str, Any]] = {
    "classifier": {"width": 4, "batch_size": 8, "lr": 1e-2},
    "faster_rcnn": {
        "box_batch_size_per_image": 32,
        "rpn_batch_size_per_image": 64,
        "rpn_post_nms_top_n_test": 50,
        "warmup_epochs": 0.0,
        "lr": 0.01,
        "batch_size": 4,
    },
    "yolo": {"imgsz": 64, "batch": 8, "close_mosaic": 0},
}
DIVERGING = {"classifier": {"lr": 1e10}, "faster_rcnn": {"lr": 1e8}}  # lr that blows the loss up


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return {
        "imagefolder": classification_dataset(),
        "yolo": write_detection_dataset(tmp_path_factory.mktemp("tiny-detection")),
    }


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny convolutions run fastest on one thread, and spin-waiting threads crawl on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Trained:
    """What one call of `task.train` handed over: each epoch's metrics and a kept copy of each
    epoch's checkpoint directory."""

    metrics: list[dict[str, float]] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)


def _train(task: Trainable, config: Any, data: Any, out: Path, restore: Path | None = None):
    trained = Trained()
    out.mkdir(parents=True)

    def on_epoch(metrics: dict[str, float], directory: Path) -> None:
        assert directory.is_dir() and any(directory.iterdir())
        keep = out / f"epoch{metrics['epoch']}"
        shutil.copytree(directory, keep)
        trained.metrics.append(dict(metrics))
        trained.checkpoints.append(keep)

    workdir = out / "work"
    workdir.mkdir()
    task.train(config, data, TrainContext("cpu", workdir, on_epoch, restore))
    return trained


def _config(task: Trainable, **values: Any) -> Any:
    return task.build_config({**TINY[task.name], "epochs": EPOCHS, **values}, "test")


@pytest.fixture(scope="module", params=sorted(TASKS))
def task(request: pytest.FixtureRequest) -> Trainable:
    return load_task(request.param)


@pytest.fixture(scope="module")
def data(task: Trainable, datasets: dict[str, Any]) -> Any:
    return datasets[task.DATA_FORMAT]


@pytest.fixture(scope="module")
def straight(task: Trainable, data: Any, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    out = tmp_path_factory.mktemp(f"{task.name}-straight") / "run"
    return _train(task, _config(task), data, out)


# --- the declaration -----------------------------------------------------------------------


def test_every_registered_task_satisfies_the_protocol_under_its_own_name(task: Trainable) -> None:
    assert isinstance(task, Trainable)
    assert task.name in TASKS and load_task(task.name) is task
    assert "epoch" in task.METRICS and len(set(task.METRICS)) == len(task.METRICS)
    assert task.DATA_FORMAT in ("imagefolder", "yolo")


def test_defaults_build_a_frozen_config_of_the_tasks_type(task: Trainable) -> None:
    config = task.build_config({}, "test")
    assert isinstance(config, task.Config)
    assert config.epochs >= 1
    with pytest.raises((AttributeError, TypeError, ValueError)):
        config.epochs = 3  # frozen: a trial's settings cannot drift while it trains


def test_an_unknown_parameter_is_one_line_naming_where_and_the_key(task: Trainable) -> None:
    with pytest.raises(InputError) as error:
        task.build_config({"no_such_knob": 1}, "my.yaml: fixed")
    message = str(error.value)
    assert message.startswith("my.yaml: fixed") and "no_such_knob" in message
    assert "\n" not in message


def test_an_impossible_value_is_refused_naming_the_key(task: Trainable) -> None:
    with pytest.raises(InputError, match="epochs"):
        task.build_config({"epochs": 0}, "test")


def test_unknown_task_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown task 'detr' \(known: classifier, "):
        load_task("detr")


# --- training ------------------------------------------------------------------------------


@pytest.mark.slow  # trains every task for real
def test_each_epoch_hands_over_every_metric_and_its_checkpoint(
    task: Trainable, straight: Trained
) -> None:
    assert [m["epoch"] for m in straight.metrics] == list(range(1, EPOCHS + 1))
    for metrics in straight.metrics:
        assert set(task.METRICS) <= set(metrics)
        assert all(math.isfinite(metrics[key]) for key in task.METRICS), metrics
    assert len(straight.checkpoints) == EPOCHS


@pytest.mark.slow  # trains every task for real
def test_restoring_an_epoch_checkpoint_continues_at_the_next_epoch(
    task: Trainable, data: Any, straight: Trained, tmp_path: Path
) -> None:
    torch.manual_seed(1234)  # whatever ran in between must not matter
    resumed = _train(task, _config(task), data, tmp_path / "resumed", straight.checkpoints[0])
    assert [m["epoch"] for m in resumed.metrics] == list(range(2, EPOCHS + 1))
    if isinstance(task, SessionTask):  # a complete checkpoint (RNG included): the same numbers
        expected = {k: straight.metrics[1][k] for k in task.METRICS}
        assert {k: resumed.metrics[0][k] for k in task.METRICS} == expected


@pytest.mark.slow  # trains every task for real
def test_restoring_the_final_checkpoint_trains_nothing(
    task: Trainable, data: Any, straight: Trained, tmp_path: Path
) -> None:
    resumed = _train(task, _config(task), data, tmp_path / "again", straight.checkpoints[-1])
    assert resumed.metrics == []


@pytest.mark.slow  # trains every task for real
@pytest.mark.parametrize("task_name", sorted(DIVERGING))
def test_a_loss_that_becomes_nan_or_inf_raises_floating_point_error(
    task_name: str, datasets: dict[str, Any], tmp_path: Path
) -> None:
    task = load_task(task_name)
    config = _config(task, **DIVERGING[task_name], epochs=3)
    with pytest.raises(FloatingPointError, match=r"nan|inf"):
        _train(task, config, datasets[task.DATA_FORMAT], tmp_path / "run")


# --- evaluation ----------------------------------------------------------------------------


@pytest.mark.slow  # trains every task for real
def test_evaluate_checkpoint_gives_split_prefixed_numbers_that_are_json_ready(
    task: Trainable, data: Any, straight: Trained, on_the_cpu: None
) -> None:
    result = task.evaluate_checkpoint(straight.checkpoints[-1], data, "test")
    numbers = {k: v for k, v in result.items() if k != "per_class"}
    assert numbers and all(k.startswith("test_") for k in numbers)
    assert all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in numbers.values())
    # each is a validation metric the trials report (val_acc -> test_acc, map -> test_map)
    for key in numbers:
        name = key.removeprefix("test_")
        assert name in task.METRICS or f"val_{name}" in task.METRICS, key


@pytest.mark.slow  # trains every task for real
def test_evaluating_the_same_checkpoint_twice_gives_the_same_numbers(
    task: Trainable, data: Any, straight: Trained, on_the_cpu: None
) -> None:
    first = task.evaluate_checkpoint(straight.checkpoints[0], data, "val")
    assert task.evaluate_checkpoint(straight.checkpoints[0], data, "val") == first
