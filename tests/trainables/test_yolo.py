"""Tests for the YOLOv5 trainable: real ultralytics training on a tiny YOLO-layout dataset written
here (bright boxes on a dark noisy ground, 64 px), offline, on the CPU; one test loses a trial's
worker in a real local Ray Tune. What every task must do is tested in test_contract.py."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from support import no_network
from tiny_data import DETECTION_COUNTS, NAMES, SIZE, write_detection_dataset

from visiontune.data.detection import DetectionDataset
from visiontune.params import config_dict
from visiontune.trainables.tune_edge import run_trial
from visiontune.trainables.yolo import METRICS, OPTIMIZERS, Config
from visiontune.trainables.yolo.engine import WEIGHTS_FILE, prepare_resume, train, train_args
from visiontune.trainables.yolo.evaluate import evaluate_checkpoint
from visiontune.trainables.yolo.offline import AMP_CHECK_WEIGHTS, amp_setting, offline_ultralytics

TINY = dict(imgsz=SIZE, batch=8, epochs=2, close_mosaic=0)
COUNTS = DETECTION_COUNTS


# --- a tiny dataset ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> DetectionDataset:
    return write_detection_dataset(tmp_path_factory.mktemp("tiny-yolo"))


# --- no network ----------------------------------------------------------------------------


# --- one real training run, shared ----------------------------------------------------------


@dataclass
class Run:
    reports: list[dict[str, float]] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)  # copy of last.pt after each report
    weights_paths: list[Path] = field(default_factory=list)  # where ultralytics wrote it
    network: list[str] = field(default_factory=list)


def _train(
    config: Config, data: DetectionDataset, out: Path, resume_from: Path | None = None
) -> Run:
    result = Run()
    threads = torch.get_num_threads()

    def on_epoch(metrics: dict[str, float], last: Path) -> None:
        result.reports.append(metrics)
        result.weights_paths.append(last)
        keep = out / "reported" / f"epoch{metrics['epoch']}" / WEIGHTS_FILE
        keep.parent.mkdir(parents=True)
        shutil.copyfile(last, keep)
        result.checkpoints.append(keep.parent)

    try:
        with no_network() as attempts:
            train(config, data, out / "scratch", on_epoch, threads=1, resume_from=resume_from)
    finally:
        torch.set_num_threads(threads)
    result.network = attempts
    return result


@pytest.fixture(scope="module")
def straight(data: DetectionDataset, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _train(Config(**TINY), data, tmp_path_factory.mktemp("straight"))


@pytest.fixture(scope="module")
def evaluation(straight: Run, data: DetectionDataset) -> dict[str, Any]:
    with no_network() as attempts:
        result = evaluate_checkpoint(straight.checkpoints[-1], data, "test")
    assert attempts == []
    return result


# --- train_args ----------------------------------------------------------------------------


def test_train_args_are_absolute_offline_and_consistent(
    data: DetectionDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config(batch=6, optimizer="AdamW", hsv_v=0.3, mosaic=0.5)
    args = train_args(config, data, "relative/trial", "cpu")
    assert args["data"] == str(data.yolo_yaml) and Path(args["data"]).is_absolute()
    assert args["project"] == str(tmp_path / "relative" / "trial")
    assert Path(args["name"]).name == args["name"] and args["exist_ok"] is True
    assert args["nbs"] == args["batch"] == 6
    assert args["optimizer"] in OPTIMIZERS and args["optimizer"] != "auto"
    assert args["hsv_h"] == 0.0 and args["hsv_s"] == 0.0
    assert args["amp"] is False and args["pretrained"] is False and args["plots"] is False
    assert args["val"] is True and args["save"] is True
    fields = {k: v for k, v in config_dict(config).items() if k not in ("model", "amp")}
    assert {k: args[k] for k in fields} == fields  # every hyperparameter reaches ultralytics as set


def test_amp_is_only_requested_on_a_gpu_and_never_needs_a_download(tmp_path: Path) -> None:
    native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    weights = tmp_path / "weights"
    weights.mkdir()
    assert amp_setting(True, "cpu", weights) is False
    assert amp_setting(False, "0", weights) is False
    # without native bfloat16, float16 only once check_amp's weights are there to load offline
    assert amp_setting(True, "0", weights) == ("bf16" if native_bf16 else False)
    (weights / AMP_CHECK_WEIGHTS).write_bytes(b"")
    assert amp_setting(True, "0", weights) == ("bf16" if native_bf16 else True)
    assert amp_setting(True, "cpu", weights) is False


def test_train_args_ask_for_amp_only_where_ultralytics_will_not_download(
    data: DetectionDataset, tmp_path: Path
) -> None:
    offline_ultralytics()  # before ultralytics is first imported
    from ultralytics.utils import WEIGHTS_DIR  # where check_amp looks for its model

    native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    offline_fp16 = (WEIGHTS_DIR / AMP_CHECK_WEIGHTS).is_file()
    with no_network() as attempts:
        assert train_args(Config(), data, tmp_path, "cpu")["amp"] is False
        assert train_args(Config(amp=False), data, tmp_path, "0")["amp"] is False
        gpu = train_args(Config(), data, tmp_path, "0")["amp"]
    assert gpu == ("bf16" if native_bf16 else offline_fp16)
    assert attempts == []


def test_train_args_reject_a_data_yaml_with_a_relative_path(
    data: DetectionDataset, tmp_path: Path
) -> None:
    meta = yaml.safe_load(Path(data.yolo_yaml).read_text())
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({**meta, "path": "."}))
    relative = DetectionDataset(NAMES, data.splits, "tiny", tmp_path / "data.yaml")
    with pytest.raises(ValueError, match="must be absolute"):
        train_args(Config(), relative, tmp_path)


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("model", "yolov8n.yaml"),
        ("optimizer", "auto"),
        ("imgsz", 100),
        ("batch", 0),
        ("epochs", 0),
        ("lr0", 0.0),
        ("lrf", 1.5),
        ("momentum", 1.0),
        ("weight_decay", -1e-4),
        ("warmup_epochs", -1.0),
        ("hsv_v", 1.2),
        ("degrees", 200.0),
        ("translate", -0.1),
        ("scale", 1.0),
        ("shear", 90.0),
        ("fliplr", 2.0),
        ("mosaic", -0.5),
        ("mixup", 1.5),
        ("close_mosaic", -1),
        ("workers", -1),
    ],
)
def test_config_rejects_invalid_value_naming_the_field(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        Config(**{name: value})


def test_defaults_are_ultralytics_hyperparameters_at_the_seed_size() -> None:
    seed = dict(
        model="yolov5n.yaml",
        imgsz=416,
        batch=16,
        optimizer="SGD",
        lr0=0.01,
        lrf=0.01,
        momentum=0.937,
        weight_decay=5e-4,
        warmup_epochs=3.0,
        hsv_v=0.4,
        degrees=0.0,
        translate=0.1,
        scale=0.5,
        shear=0.0,
        fliplr=0.5,
        mosaic=1.0,
        mixup=0.0,
    )
    defaults = config_dict(Config())
    assert {key: defaults[key] for key in seed} == seed


# --- training ------------------------------------------------------------------------------


@pytest.mark.slow  # trains YOLO with ultralytics
def test_training_and_validation_attempt_no_network_connection(
    straight: Run, evaluation: dict
) -> None:
    assert straight.reports  # the guarded block really trained
    assert straight.network == []


@pytest.mark.slow  # trains YOLO with ultralytics
def test_one_report_per_epoch_after_validation_with_every_metric(straight: Run) -> None:
    assert [r["epoch"] for r in straight.reports] == [1, 2]
    for report in straight.reports:
        assert set(METRICS) <= set(report)
        assert all(math.isfinite(report[key]) for key in METRICS)
        for key in ("precision", "recall", "map50", "map"):
            assert 0.0 <= report[key] <= 1.0, key
        assert report["map"] <= report["map50"]
        assert report["images_per_s"] > 0
    assert straight.reports[1]["box_loss"] != straight.reports[0]["box_loss"]


@pytest.mark.slow  # trains YOLO with ultralytics
def test_each_report_carries_that_epochs_resumable_checkpoint(straight: Run) -> None:
    for number, directory in enumerate(straight.checkpoints, start=1):
        state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=False)
        assert state["epoch"] == number - 1  # ultralytics counts epochs from 0
        assert state["optimizer"] is not None and state["ema"] is not None
        assert state["train_args"]["nbs"] == TINY["batch"]


@pytest.mark.slow  # trains YOLO with ultralytics
def test_resume_from_an_epoch_checkpoint_continues_at_the_next_epoch(
    straight: Run, data: DetectionDataset, tmp_path: Path
) -> None:
    config = Config(**TINY)
    out = tmp_path / "elsewhere"  # another trial directory than the one that wrote it
    resume_from = prepare_resume(
        straight.checkpoints[0] / WEIGHTS_FILE, config, data, str(out / "scratch")
    )
    assert resume_from is not None and out in resume_from.parents
    resumed = _train(config, data, out, resume_from)
    assert resumed.network == []
    assert [r["epoch"] for r in resumed.reports] == [2]
    # the warmup and LR schedule continue where epoch 1 left them
    assert resumed.reports[0]["lr"] == pytest.approx(straight.reports[1]["lr"], rel=1e-12)
    assert all(out in path.parents for path in resumed.weights_paths)
    state = torch.load(
        resumed.checkpoints[0] / WEIGHTS_FILE, map_location="cpu", weights_only=False
    )
    assert state["epoch"] == 1
    assert Path(state["train_args"]["save_dir"]).is_relative_to(out)


@pytest.mark.slow  # trains YOLO with ultralytics
def test_resume_sets_amp_for_the_resuming_device_not_the_one_that_wrote_it(
    straight: Run, data: DetectionDataset, tmp_path: Path
) -> None:
    state = torch.load(
        straight.checkpoints[0] / WEIGHTS_FILE, map_location="cpu", weights_only=False
    )
    state["train_args"]["amp"] = True  # written on a GPU with float16
    torch.save(state, tmp_path / WEIGHTS_FILE)
    resume_from = prepare_resume(
        tmp_path / WEIGHTS_FILE, Config(**TINY), data, str(tmp_path / "scratch"), "cpu"
    )
    assert resume_from is not None
    resumed = torch.load(resume_from, map_location="cpu", weights_only=False)
    assert resumed["train_args"]["amp"] is False  # ultralytics would keep a checkpoint's amp


@pytest.mark.slow  # trains YOLO with ultralytics
def test_resume_from_the_final_epoch_has_nothing_to_do(
    straight: Run, data: DetectionDataset, tmp_path: Path
) -> None:
    final = straight.checkpoints[-1] / WEIGHTS_FILE
    assert prepare_resume(final, Config(**TINY), data, str(tmp_path)) is None


@pytest.mark.slow  # trains YOLO with ultralytics
def test_evaluate_checkpoint_reports_the_split_and_every_class(evaluation: dict) -> None:
    overall = {f"test_{key}" for key in ("precision", "recall", "map50", "map")}
    assert set(evaluation) == overall | {"per_class"}
    assert all(0.0 <= evaluation[key] <= 1.0 for key in overall)
    assert list(evaluation["per_class"]) == list(NAMES)
    for name in ("hot", "warm"):
        entry = evaluation["per_class"][name]
        assert all(0.0 <= entry[key] <= 1.0 for key in ("precision", "recall", "map50", "map"))
        assert entry["instances"] == COUNTS["test"]  # one box of each of these per test image
    rare = evaluation["per_class"]["rare"]
    assert rare == {"precision": None, "recall": None, "map50": None, "map": None, "instances": 0}


@pytest.mark.slow  # trains YOLO with ultralytics
def test_evaluate_checkpoint_rejects_an_unknown_split(
    straight: Run, data: DetectionDataset
) -> None:
    with pytest.raises(ValueError, match="split"):
        evaluate_checkpoint(straight.checkpoints[-1], data, "holdout")


# --- through Ray Tune ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _kill_after_first_checkpoint():
    """A Tune callback that kills the trial's worker once its first checkpoint is stored, as a
    lost node would, and records every result and recovery."""
    import ray
    from ray import tune

    class KillOnce(tune.Callback):
        def __init__(self) -> None:
            self.results: list[dict[str, Any]] = []
            self.recovered = 0
            self.killed = False

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.results.append(dict(result))

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
            if not self.killed:
                self.killed = True
                ray.kill(trial.temporary_state.ray_actor, no_restart=True)

        def on_trial_recover(self, iteration, trials, trial, **info) -> None:
            self.recovered += 1

    return KillOnce()


def _fit(data: DetectionDataset, storage: Path, name: str, callbacks=(), max_failures=0):
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(run_trial, task="yolo", data=data), {"cpu": 1}),
        param_space=dict(TINY),
        tune_config=tune.TuneConfig(num_samples=1, reuse_actors=False),
        run_config=tune.RunConfig(
            storage_path=str(storage),
            name=name,
            callbacks=list(callbacks),
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
    )
    results = tuner.fit()
    assert results.errors == []
    return results[0]


@pytest.mark.ray
def test_trial_restored_after_losing_its_worker_continues_at_the_next_epoch(
    ray_session: None, straight: Run, data: DetectionDataset, tmp_path: Path
) -> None:
    killer = _kill_after_first_checkpoint()
    result = _fit(data, tmp_path, "restored", callbacks=[killer], max_failures=1)
    assert killer.killed and killer.recovered == 1
    assert [(r["training_iteration"], r["epoch"]) for r in killer.results] == [(1, 1), (2, 2)]
    first, second = killer.results
    assert first["pid"] != second["pid"]  # epoch 2 ran in the replacement worker
    # the LR schedule continued where the uninterrupted run was at epoch 2
    assert second["lr"] == pytest.approx(straight.reports[1]["lr"], rel=1e-12)
    assert result.metrics["epoch"] == 2
