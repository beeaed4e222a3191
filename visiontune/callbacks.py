"""Driver-side Tune callbacks: live TensorBoard scalars + HParams, and a trial status ledger.

TensorBoard: one run per trial (the trial directory), scalars written and flushed on every result so
`tensorboard --logdir STORAGE/NAME` shows curves while trials run. The HParams plugin's experiment
summary (every hyperparameter with its domain, every metric) sits in the experiment root; each
trial writes its session start (complete config) when it starts and its session end (status) when
it finishes, early-stopped and errored trials included. Ray's own TensorBoardX logger is disabled by
the sweep because it writes HParams only at trial end and only for the sampled parameters.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2
from ray.tune import Callback
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2 as hp_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter

from visiontune.layout import STATUS_FILE
from visiontune.spec import Distribution


def trial_dir(trial: Any) -> Path:
    """Where a trial's files live: straight in storage when it is a local path (so TensorBoard
    sees them live), else the driver's staging copy that Ray syncs to storage."""
    fs = trial.storage.storage_filesystem
    if type(fs).__name__ == "LocalFileSystem":
        return Path(trial.path)
    return Path(trial.local_path)


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


class TensorBoardCallback(Callback):
    def __init__(
        self,
        experiment_dir: str | Path,
        fixed: Mapping[str, Any],
        search: Mapping[str, Distribution],
        metrics: Sequence[str],
    ) -> None:
        self.experiment_dir = Path(experiment_dir)
        self.summary = experiment_summary(fixed, search, metrics)
        self.metrics = tuple(metrics)
        self.writers: dict[str, SummaryWriter] = {}
        self.started: set[str] = set()

    def setup(self, **info: Any) -> None:
        with SummaryWriter(log_dir=str(self.experiment_dir)) as writer:
            writer.file_writer.add_summary(self.summary)

    def _writer(self, trial: Any) -> SummaryWriter:
        if trial.trial_id not in self.writers:
            self.writers[trial.trial_id] = SummaryWriter(log_dir=str(trial_dir(trial)))
        return self.writers[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.started:
            return  # restored after a failure: the session is already open
        self.started.add(trial.trial_id)
        writer = self._writer(trial)
        writer.file_writer.add_summary(session_start_summary(trial.config, trial.trial_id))
        writer.flush()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
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
        self._end(trial, hp_pb2.STATUS_SUCCESS)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, hp_pb2.STATUS_FAILURE)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


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
        self.status = json.loads(self.path.read_text()) if self.path.exists() else {}

    def _update(self, trial: Any, **fields: Any) -> None:
        entry = self.status.setdefault(trial.trial_id, {"dir": trial_dir(trial).name})
        entry.update(fields, updated=time.time())
        text = json.dumps(self.status, indent=1, sort_keys=True)
        # A resumed sweep's driver staging dir starts as a copy of the experiment dir, which Ray
        # uploads back at the end: keep that copy current too, or it would revert the ledger.
        staging = Path(trial.local_experiment_path) / STATUS_FILE
        for path in {self.path, staging}:
            if path.parent.is_dir():
                tmp = path.with_suffix(".tmp")
                tmp.write_text(text)
                os.replace(tmp, path)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trial, status="RUNNING")

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self._update(trial, epochs=int(result.get("training_iteration", 0)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = int(self.status.get(trial.trial_id, {}).get("epochs", 0))
        self._update(trial, status="TERMINATED" if done >= self.epochs else "STOPPED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error_file = trial.error_file  # Ray writes the trial's traceback there before this call
        error = Path(error_file).read_text() if error_file and Path(error_file).exists() else ""
        lines = [line.strip() for line in error.splitlines() if line.strip()]
        self._update(trial, status="ERROR", error=lines[-1] if lines else "unknown error")
