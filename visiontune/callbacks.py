"""Driver-side Tune callbacks: live TensorBoard scalars + HParams, and a trial status ledger.

TensorBoard: one run per trial (the trial directory), scalars written and flushed on every result so
`tensorboard --logdir STORAGE/NAME` shows curves while trials run. The HParams plugin's experiment
summary (every hyperparameter with its domain, every metric) sits in the experiment root; each
trial writes its session start (complete config) when it starts and its session end (status) when
it finishes, early-stopped and errored trials included. Ray's own TensorBoardX logger is disabled by
the sweep because it writes HParams only at trial end and only for the sampled parameters.

A diverged trial (its last result carries `contract.DIVERGED`, see trainables/tune_edge.py) ends
normally in Ray's eyes; here it is an errored trial: no scalars from that result (it measured
nothing), a FAILURE session end, ERROR with the reason in the ledger.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2
from ray.tune import Callback
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2 as hp_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter

from visiontune.layout import (
    DATASET_FILE,
    STATUS_FILE,
    SUMMARY_FILE,
    TEST_FILE,
    current_experiment_dir,
)
from visiontune.spec import Distribution
from visiontune.trainables.contract import diverged_reason


def trial_dir(trial: Any, experiment_dir: Path) -> Path:
    """Where the driver writes a trial's TensorBoard events: the trial's directory in the
    experiment dir (for a URI storage, in the driver's mirror that is uploaded to it), so that
    `tensorboard --logdir EXPERIMENT_DIR` shows every trial live."""
    return experiment_dir / Path(trial.path).name


def _hparam_value(value: Any) -> struct_pb2.Value:
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value)
    if isinstance(value, int | float):
        return struct_pb2.Value(number_value=float(value))
    return struct_pb2.Value(string_value=value if isinstance(value, str) else json.dumps(value))


def _data_type(value: Any) -> int:
    if isinstance(value, bool):
        return hp_pb2.DATA_TYPE_BOOL
    if isinstance(value, int | float):
        return hp_pb2.DATA_TYPE_FLOAT64
    return hp_pb2.DATA_TYPE_STRING


def _plugin_summary(tag: str, **plugin_data: Any) -> Summary:
    """Wrap HParams plugin data the way TensorBoard's hparams plugin reads it back."""
    content = plugin_data_pb2.HParamsPluginData(
        version=hp_metadata.PLUGIN_DATA_VERSION, **plugin_data
    )
    metadata = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(
            plugin_name=hp_metadata.PLUGIN_NAME, content=content.SerializeToString()
        )
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata)])


def session_start_summary(config: Mapping[str, Any], group_name: str) -> Summary:
    info = plugin_data_pb2.SessionStartInfo(group_name=group_name, start_time_secs=time.time())
    for name, value in config.items():
        info.hparams[name].CopyFrom(_hparam_value(value))
    return _plugin_summary(hp_metadata.SESSION_START_INFO_TAG, session_start_info=info)


def session_end_summary(status: int) -> Summary:
    info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    return _plugin_summary(hp_metadata.SESSION_END_INFO_TAG, session_end_info=info)


def experiment_summary(
    fixed: Mapping[str, Any], search: Mapping[str, Distribution], metrics: Sequence[str]
) -> Any:
    """The HParams experiment proto: domains for searched parameters, fixed ones as single values."""
    infos = []
    for name, dist in search.items():
        if dist.kind == "choice":
            info = hp_pb2.HParamInfo(name=name, type=_data_type(dist.values[0]))
            info.domain_discrete.values.extend(_hparam_value(v) for v in dist.values)
        else:
            info = hp_pb2.HParamInfo(name=name, type=hp_pb2.DATA_TYPE_FLOAT64)
            info.domain_interval.min_value = float(dist.low)
            info.domain_interval.max_value = float(dist.high)
        infos.append(info)
    for name, value in fixed.items():
        info = hp_pb2.HParamInfo(name=name, type=_data_type(value))
        info.domain_discrete.values.append(_hparam_value(value))
        infos.append(info)
    metric_infos = [
        hp_pb2.MetricInfo(name=hp_pb2.MetricName(tag=name)) for name in metrics if name != "epoch"
    ]
    experiment = hp_pb2.Experiment(
        hparam_infos=infos, metric_infos=metric_infos, time_created_secs=time.time()
    )
    return _plugin_summary(hp_metadata.EXPERIMENT_TAG, experiment=experiment)


SessionOf = Callable[[Mapping[str, Any]], tuple[str, Mapping[str, Any]]]
"""A trial config -> (HParams session group, the hparams its session records)."""


class TensorBoardCallback(Callback):
    """Scalars per trial and the HParams plugin's experiment and sessions. Each trial is a
    session in a group of its own (its trial id) recording its whole config, unless `session_of`
    says otherwise: the HParams tab aggregates the sessions of one group into one row (e.g. a
    confirmation's runs of one configuration over its training seeds)."""

    session_of: SessionOf | None = None  # also for instances pickled before it existed (resume)

    def __init__(
        self,
        experiment_dir: str | Path,
        fixed: Mapping[str, Any],
        search: Mapping[str, Distribution],
        metrics: Sequence[str],
        session_of: SessionOf | None = None,
    ) -> None:
        self.experiment_dir = Path(experiment_dir)
        self.summary = experiment_summary(fixed, search, metrics)
        self.session_of = session_of
        self.metrics = tuple(metrics)
        self.writers: dict[str, SummaryWriter] = {}
        self.started: set[str] = set()

    def setup(self, **info: Any) -> None:
        self.experiment_dir = current_experiment_dir(self.experiment_dir)
        with SummaryWriter(log_dir=str(self.experiment_dir)) as writer:
            writer.file_writer.add_summary(self.summary)

    def _writer(self, trial: Any) -> SummaryWriter:
        if trial.trial_id not in self.writers:
            self.writers[trial.trial_id] = SummaryWriter(
                log_dir=str(trial_dir(trial, self.experiment_dir))
            )
        return self.writers[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.started:
            return  # restored after a failure: the session is already open
        self.started.add(trial.trial_id)
        writer = self._writer(trial)
        group, hparams = (
            self.session_of(trial.config) if self.session_of else (trial.trial_id, trial.config)
        )
        writer.file_writer.add_summary(session_start_summary(hparams, group))
        writer.flush()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if diverged_reason(result):
            return
        writer = self._writer(trial)
        step = int(result.get("training_iteration", 0))
        for key, value in result.items():
            wanted = key in self.metrics or key in ("images_per_s", "time_this_iter_s")
            if wanted and isinstance(value, int | float) and not isinstance(value, bool):
                writer.add_scalar(key, value, global_step=step)
        writer.flush()

    def _end(self, trial: Any, status: int) -> None:
        writer = self._writer(trial)
        writer.file_writer.add_summary(session_end_summary(status))
        writer.close()
        self.writers.pop(trial.trial_id, None)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        failed = diverged_reason(trial.last_result)
        self._end(trial, hp_pb2.STATUS_FAILURE if failed else hp_pb2.STATUS_SUCCESS)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, hp_pb2.STATUS_FAILURE)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


DRIVER_FILES = (STATUS_FILE, SUMMARY_FILE, DATASET_FILE, TEST_FILE)  # written by the driver alone


class TrialStatusCallback(Callback):
    """Keeps STATUS_FILE in the experiment dir: each trial's state, epochs, directory, error.

    Written atomically on every change, so a report can tell early-stopped from finished from
    errored trials even if the driver died mid-sweep.
    """

    def __init__(self, experiment_dir: str | Path, epochs: int) -> None:
        self.path = Path(experiment_dir) / STATUS_FILE
        self.epochs = epochs
        self.status: dict[str, dict[str, Any]] = {}

    def setup(self, **info: Any) -> None:
        # A resumed sweep unpickles this callback as it was when the sweep started: the
        # ledger on disk is the truth about every trial since.
        self.path = current_experiment_dir(self.path.parent) / STATUS_FILE
        self.status = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.staging_checked = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        """Once, before Ray's first upload of this run: drop the driver's files from Ray's
        driver staging dir. A resumed sweep's staging dir starts with a copy of every .json in
        the experiment dir (ray 2.60.0, `_ExperimentCheckpointManager.sync_down_experiment_state`),
        and Ray uploads the whole staging dir back over the experiment dir while trials run
        (a copy, in a background thread): stale copies of the ledger and of sweep.json would
        revert what the driver wrote since."""
        if self.staging_checked or not trials:
            return
        self.staging_checked = True
        staging = Path(trials[0].local_experiment_path)
        if staging.resolve() == self.path.parent.resolve():
            return
        for name in DRIVER_FILES:
            (staging / name).unlink(missing_ok=True)

    def _update(self, trial: Any, **fields: Any) -> None:
        entry = self.status.setdefault(trial.trial_id, {"dir": Path(trial.path).name})
        entry.update(fields, updated=time.time())
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trial, status="RUNNING")

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if diverged_reason(result):
            return  # not an epoch trained: on_trial_complete records the error
        fields: dict[str, Any] = {"epochs": int(result.get("training_iteration", 0))}
        entry = self.status.get(trial.trial_id, {})
        if entry.get("recoveries") and entry["recoveries"][-1].get("resumed_at") is None:
            # the first epoch a retried trial reports: its checkpoint epoch + 1 unless it
            # started over (the epoch comes from the trainable's restored state)
            recoveries = [dict(r) for r in entry["recoveries"]]
            recoveries[-1]["resumed_at"] = result.get("epoch", fields["epochs"])
            fields["recoveries"] = recoveries
        self._update(trial, **fields)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial failed (its worker or node died) and is retried from its last checkpoint."""
        entry = self.status.get(trial.trial_id, {})
        last = trial.last_result or {}
        saved = trial.latest_checkpoint_result  # what Ray restores the trial from
        saved_metrics = saved.metrics if saved is not None else {}
        recovery = {
            "failed_after": last.get("epoch", last.get("training_iteration", 0)),
            "checkpoint_epoch": saved_metrics.get(
                "epoch", saved_metrics.get("training_iteration", 0)
            ),
            "resumed_at": None,
        }
        self._update(trial, status="RETRYING", recoveries=[*entry.get("recoveries", []), recovery])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = diverged_reason(trial.last_result)
        if reason:  # ended by its own report, not retried (trainables/tune_edge.py)
            self._update(trial, status="ERROR", error=reason)
            return
        done = int(self.status.get(trial.trial_id, {}).get("epochs", 0))
        self._update(trial, status="TERMINATED" if done >= self.epochs else "STOPPED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error_file = trial.error_file  # Ray writes the trial's traceback there before this call
        error = Path(error_file).read_text() if error_file and Path(error_file).exists() else ""
        lines = [line.strip() for line in error.splitlines() if line.strip()]
        self._update(trial, status="ERROR", error=lines[-1] if lines else "unknown error")


class MirrorUploadCallback(Callback):
    """For a URI storage: uploads the driver's mirror (study, ledger, TensorBoard events) to
    STORAGE/NAME at most every `period_s` while trials run, and when the sweep ends."""

    def __init__(self, experiment: Any, period_s: float = 60.0) -> None:
        self.experiment = experiment
        self.period_s = period_s
        self.last = 0.0

    def setup(self, **info: Any) -> None:
        local = current_experiment_dir(self.experiment.local)
        self.experiment = dataclasses.replace(self.experiment, local=local)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self.last >= self.period_s:
            self.last = time.monotonic()
            self.experiment.upload()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.experiment.upload()
