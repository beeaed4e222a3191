"""visiontune/callbacks.py driven directly, without Ray: the callbacks get the calls Tune's
controller makes, with small stand-ins for Tune's trial objects (only the attributes the callbacks
read). The TensorBoard files are read back with TensorBoard's own readers; the ledger as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import CLASSIFIER_SPACE, hparams_plugin_values
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

from visiontune.callbacks import TensorBoardCallback, TrialStatusCallback
from visiontune.layout import EXPERIMENT_DIR_ENV, STATUS_FILE
from visiontune.spec import load_spec
from visiontune.trainables.contract import divergence_result

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch")  # the classifier's
EPOCHS = 3


@dataclass
class SavedResult:
    """Stands in for Ray's record of the result a checkpoint was saved with."""

    metrics: dict[str, Any]


@dataclass
class FakeTrial:
    """What the callbacks read of a `ray.tune.experiment.Trial`."""

    trial_id: str
    path: str  # the trial's directory in Ray's storage (a URI storage's path for a cloud one)
    local_experiment_path: str  # the driver's staging copy of the experiment dir
    config: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None
    last_result: dict[str, Any] | None = None
    latest_checkpoint_result: SavedResult | None = None


@pytest.fixture(autouse=True)
def _no_driver_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXPERIMENT_DIR_ENV, raising=False)


@pytest.fixture
def exp(tmp_path: Path) -> Path:
    path = tmp_path / "storage" / "exp"
    path.mkdir(parents=True)
    return path


def _trial(exp: Path, trial_id: str = "abc123", **fields: Any) -> FakeTrial:
    return FakeTrial(trial_id, str(exp / f"trial_{trial_id}"), str(exp), **fields)


def _result(epoch: int, **metrics: float) -> dict[str, Any]:
    values = {"train_loss": 2.0 / epoch, "train_acc": 0.1 * epoch, "val_loss": 2.5 / epoch}
    values |= {"val_acc": 0.05 * epoch, "lr": 1e-3, "epoch": epoch}
    return {
        **values,
        **metrics,
        "training_iteration": epoch,
        "trial_id": "abc123",
        "done": False,
        "time_this_iter_s": 0.5,
    }


# --- TensorBoard ----------------------------------------------------------------------------


def _tensorboard(exp: Path) -> TensorBoardCallback:
    spec = load_spec(CLASSIFIER_SPACE)
    callback = TensorBoardCallback(exp, spec.fixed, spec.search, METRICS)
    callback.setup()
    return callback


def _accumulator(path: Path) -> EventAccumulator:
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _plugin_values(path: Path, tag: str) -> list[bytes]:
    return hparams_plugin_values(path, tag)


def _train(callback: Any, trial: FakeTrial, epochs: int) -> None:
    callback.on_trial_start(0, [], trial)
    for epoch in range(1, epochs + 1):
        callback.on_trial_result(epoch, [], trial, _result(epoch))


REASON = "FloatingPointError: train_loss became nan (diverged; try a lower lr)"


def _diverge(callback: Any, trial: FakeTrial, epochs_done: int) -> None:
    """What Ray does with a trial whose training diverged after `epochs_done` epochs: the last
    result run_trial reports (trainables/tune_edge.py), then the trial's normal end."""
    error = FloatingPointError(REASON.split(": ", 1)[1])
    last = {**divergence_result(METRICS, error), "training_iteration": epochs_done + 1}
    callback.on_trial_result(epochs_done + 1, [], trial, last)
    trial.last_result = last
    callback.on_trial_complete(epochs_done + 1, [], trial)


def test_every_result_is_a_scalar_at_its_epoch_in_the_trials_directory(exp):
    callback, trial = _tensorboard(exp), _trial(exp)
    _train(callback, trial, EPOCHS)
    callback.on_trial_complete(EPOCHS, [], trial)
    acc = _accumulator(exp / "trial_abc123")
    for tag in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_this_iter_s"):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3], tag
        expected = [_result(epoch)[tag] for epoch in (1, 2, 3)]
        assert [e.value for e in events] == pytest.approx(expected), tag
    assert not {"done", "trial_id", "training_iteration"} & set(acc.Tags()["scalars"])


def test_scalars_can_be_read_while_the_trial_runs(exp):
    callback, trial = _tensorboard(exp), _trial(exp)
    _train(callback, trial, 2)  # no on_trial_complete: the writer is still open
    assert [e.step for e in _accumulator(exp / "trial_abc123").Scalars("val_acc")] == [1, 2]
    callback.on_experiment_end([])


def test_a_trial_in_remote_storage_logs_into_the_drivers_experiment_dir(exp):
    callback = _tensorboard(exp)
    trial = FakeTrial("abc123", "bucket/runs/exp/trial_abc123", str(exp))
    _train(callback, trial, 1)
    callback.on_trial_complete(1, [], trial)
    assert [e.step for e in _accumulator(exp / "trial_abc123").Scalars("val_acc")] == [1]


def test_experiment_summary_lists_every_parameter_with_its_domain_and_the_metrics(exp):
    _tensorboard(exp)
    [content] = _plugin_values(exp, metadata.EXPERIMENT_TAG)
    experiment = metadata.parse_experiment_plugin_data(content)
    infos = {info.name: info for info in experiment.hparam_infos}
    spec = load_spec(CLASSIFIER_SPACE)
    assert set(infos) == set(spec.search) | set(spec.fixed)
    assert [v.string_value for v in infos["arch"].domain_discrete.values] == ["baseline", "custom"]
    lr = infos["lr"].domain_interval
    assert (lr.min_value, lr.max_value) == (spec.search["lr"].low, spec.search["lr"].high)
    assert [v.number_value for v in infos["epochs"].domain_discrete.values] == [
        spec.fixed["epochs"]
    ]
    assert [m.name.tag for m in experiment.metric_infos] == [m for m in METRICS if m != "epoch"]


def test_session_starts_with_the_complete_config_once_and_ends_with_success(exp):
    callback = _tensorboard(exp)
    config = {"lr": 0.003, "arch": "custom", "epochs": EPOCHS, "horizontal_flip": True}
    trial = _trial(exp, config=config)
    _train(callback, trial, 1)
    callback.on_trial_start(1, [], trial)  # restored after a worker failure: same session
    callback.on_trial_result(2, [], trial, _result(2))
    callback.on_trial_complete(2, [], trial)
    [start] = _plugin_values(exp / "trial_abc123", metadata.SESSION_START_INFO_TAG)
    info = metadata.parse_session_start_info_plugin_data(start)
    assert info.group_name == "abc123"
    assert info.hparams["lr"].number_value == pytest.approx(0.003)
    assert info.hparams["arch"].string_value == "custom"
    assert info.hparams["epochs"].number_value == EPOCHS
    assert info.hparams["horizontal_flip"].bool_value is True
    [end] = _plugin_values(exp / "trial_abc123", metadata.SESSION_END_INFO_TAG)
    assert metadata.parse_session_end_info_plugin_data(end).status == api_pb2.STATUS_SUCCESS


def test_an_errored_trial_ends_its_session_as_a_failure(exp):
    callback, trial = _tensorboard(exp), _trial(exp)
    _train(callback, trial, 1)
    callback.on_trial_error(1, [], trial)
    [end] = _plugin_values(exp / "trial_abc123", metadata.SESSION_END_INFO_TAG)
    assert metadata.parse_session_end_info_plugin_data(end).status == api_pb2.STATUS_FAILURE


def test_a_diverged_trial_ends_its_session_as_a_failure_with_no_scalars_for_its_nans(exp):
    callback, trial = _tensorboard(exp), _trial(exp)
    _train(callback, trial, 2)
    _diverge(callback, trial, 2)
    [end] = _plugin_values(exp / "trial_abc123", metadata.SESSION_END_INFO_TAG)
    assert metadata.parse_session_end_info_plugin_data(end).status == api_pb2.STATUS_FAILURE
    acc = _accumulator(exp / "trial_abc123")
    for tag in ("train_loss", "val_acc", "time_this_iter_s"):
        assert [e.step for e in acc.Scalars(tag)] == [1, 2], tag


def test_a_resumed_driver_writes_into_its_own_experiment_dir(exp, tmp_path, monkeypatch):
    """The callback is unpickled as the first driver made it; the new driver's dir wins."""
    moved = tmp_path / "elsewhere" / "exp"
    moved.mkdir(parents=True)
    monkeypatch.setenv(EXPERIMENT_DIR_ENV, str(moved))
    callback = _tensorboard(exp)
    _train(callback, _trial(moved), 1)
    callback.on_experiment_end([])
    assert _plugin_values(moved, metadata.EXPERIMENT_TAG)
    assert [e.step for e in _accumulator(moved / "trial_abc123").Scalars("val_acc")] == [1]
    assert list(exp.iterdir()) == []


# --- the trial ledger -----------------------------------------------------------------------


def _ledger_callback(exp: Path) -> TrialStatusCallback:
    callback = TrialStatusCallback(exp, EPOCHS)
    callback.setup()
    return callback


def _ledger(exp: Path) -> dict[str, dict]:
    return json.loads((exp / STATUS_FILE).read_text())


def test_a_started_trial_is_running_with_its_directory(exp):
    callback = _ledger_callback(exp)
    callback.on_trial_start(0, [], _trial(exp))
    entry = _ledger(exp)["abc123"]
    assert entry["status"] == "RUNNING" and entry["dir"] == "trial_abc123"


def test_each_result_records_the_epochs_done(exp):
    callback = _ledger_callback(exp)
    _train(callback, _trial(exp), 2)
    assert _ledger(exp)["abc123"]["epochs"] == 2 and _ledger(exp)["abc123"]["status"] == "RUNNING"


def test_a_trial_that_ran_its_budget_is_terminated(exp):
    callback, trial = _ledger_callback(exp), _trial(exp)
    _train(callback, trial, EPOCHS)
    callback.on_trial_complete(EPOCHS, [], trial)
    assert _ledger(exp)["abc123"]["status"] == "TERMINATED"


def test_a_trial_completed_before_its_budget_was_stopped_early(exp):
    callback, trial = _ledger_callback(exp), _trial(exp)
    _train(callback, trial, EPOCHS - 1)
    callback.on_trial_complete(EPOCHS - 1, [], trial)
    entry = _ledger(exp)["abc123"]
    assert entry["status"] == "STOPPED" and entry["epochs"] == EPOCHS - 1


def test_an_errored_trial_keeps_the_last_line_of_its_traceback(exp, tmp_path):
    error_file = tmp_path / "error.txt"
    error_file.write_text(
        'Traceback (most recent call last):\n  File "x.py", line 1, in run\n'
        "    train()\nFloatingPointError: train_loss became nan (diverged; try a lower lr)\n\n"
    )
    callback, trial = _ledger_callback(exp), _trial(exp, error_file=str(error_file))
    _train(callback, trial, 1)
    callback.on_trial_error(1, [], trial)
    entry = _ledger(exp)["abc123"]
    assert entry["status"] == "ERROR"
    assert entry["error"] == "FloatingPointError: train_loss became nan (diverged; try a lower lr)"


def test_a_diverged_trial_is_an_error_with_its_reason_and_the_epochs_it_trained(exp):
    """Ray calls it complete (run_trial returned so that it would not be retried)."""
    callback, trial = _ledger_callback(exp), _trial(exp)
    _train(callback, trial, 2)
    _diverge(callback, trial, 2)
    entry = _ledger(exp)["abc123"]
    assert (entry["status"], entry["error"], entry["epochs"]) == ("ERROR", REASON, 2)
    assert "recoveries" not in entry


def test_an_error_without_a_traceback_file_is_an_unknown_error(exp, tmp_path):
    callback = _ledger_callback(exp)
    trial = _trial(exp, error_file=str(tmp_path / "never-written.txt"))
    callback.on_trial_error(0, [], trial)
    assert _ledger(exp)["abc123"] | {"updated": 0} == {
        "dir": "trial_abc123", "status": "ERROR", "error": "unknown error", "updated": 0,
    }  # fmt: skip


def test_a_retried_trial_records_where_it_failed_and_where_it_resumed(exp):
    callback, trial = _ledger_callback(exp), _trial(exp)
    _train(callback, trial, 2)
    trial.last_result = _result(2)
    trial.latest_checkpoint_result = SavedResult(_result(1))  # epoch 2's checkpoint was lost
    callback.on_trial_recover(2, [], trial)
    entry = _ledger(exp)["abc123"]
    assert entry["status"] == "RETRYING"
    assert entry["recoveries"] == [{"failed_after": 2, "checkpoint_epoch": 1, "resumed_at": None}]
    callback.on_trial_result(3, [], trial, _result(2))  # trains epoch 2 again
    callback.on_trial_result(4, [], trial, _result(3))
    assert _ledger(exp)["abc123"]["recoveries"] == [
        {"failed_after": 2, "checkpoint_epoch": 1, "resumed_at": 2}
    ]
    callback.on_trial_complete(4, [], trial)
    assert _ledger(exp)["abc123"]["status"] == "TERMINATED"


def test_a_trial_retried_without_a_checkpoint_starts_from_epoch_zero(exp):
    callback, trial = _ledger_callback(exp), _trial(exp)
    callback.on_trial_start(0, [], trial)
    trial.last_result = None
    callback.on_trial_recover(0, [], trial)
    [recovery] = _ledger(exp)["abc123"]["recoveries"]
    assert recovery == {"failed_after": 0, "checkpoint_epoch": 0, "resumed_at": None}


def test_a_resumed_driver_keeps_the_ledger_on_disk_and_drops_the_staging_copies(exp, tmp_path):
    """Ray copied the experiment dir's .json files into its staging dir on resume and uploads
    that dir back while trials run: its stale ledger and sweep.json must not be there."""
    (exp / STATUS_FILE).write_text(json.dumps({"old": {"dir": "trial_old", "status": "STOPPED"}}))
    staging = tmp_path / "staging"
    staging.mkdir()
    for name in (STATUS_FILE, "sweep.json", "experiment_state-x.json"):
        (staging / name).write_text("{}")
    callback = _ledger_callback(exp)
    trial = FakeTrial("abc123", str(exp / "trial_abc123"), str(staging))
    callback.on_step_begin(0, [])  # no trial yet: nothing to go by
    callback.on_step_begin(1, [trial])
    callback.on_trial_start(1, [trial], trial)
    assert set(_ledger(exp)) == {"old", "abc123"} and _ledger(exp)["old"]["status"] == "STOPPED"
    assert sorted(p.name for p in staging.iterdir()) == ["experiment_state-x.json"]  # Ray's own
    assert sorted(p.name for p in exp.iterdir()) == [STATUS_FILE], "no temporary file left"


def test_the_staging_dir_is_checked_once_per_driver_run(exp, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    callback = _ledger_callback(exp)
    trial = FakeTrial("abc123", str(exp / "trial_abc123"), str(staging))
    callback.on_step_begin(1, [trial])
    (staging / "sweep.json").write_text("{}")  # from here on the staging dir is Ray's business
    callback.on_step_begin(2, [trial])
    assert (staging / "sweep.json").exists()
