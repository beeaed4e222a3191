"""Assemble and run a Ray Tune sweep from a validated SweepSpec (the Ray edge of the project).

Flow: the spec and the dataset are validated and decoded before anything is written; then the
experiment directory STORAGE/NAME gets the resolved spec, the Optuna study (SQLite) and Ray's trial
directories; after the sweep the best trial's best checkpoint and the seed configurations'
checkpoints are evaluated on the test split, and a summary is written for `visiontune report`.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from visiontune.errors import InputError, SweepInterrupted
from visiontune.layout import (
    DATASET_FILE,
    EXPERIMENT_DIR_ENV,
    SPEC_FILE,
    STATUS_FILE,
    STUDY_FILE,
    SUMMARY_FILE,
    TEST_FILE,
)
from visiontune.spec import SweepSpec
from visiontune.storage import Experiment, fresh_mirror

TRIAL_ID_ATTR = "tune_trial_id"  # Optuna user attribute: the Tune trial a study trial became
LOST_ATTR = (
    "lost_on_resume"  # set on study trials a resumed sweep failed: "lost" or "never started"
)


def keep_ray_on_loopback() -> None:
    """Must run before `import ray`: a local Ray then binds every node to 127.0.0.1."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _scheduler(spec: SweepSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

    if spec.scheduler["type"] == "fifo":
        return FIFOScheduler()

    class SeedProtectingASHA(ASHAScheduler):
        """ASHA that records seed trials in its rungs but never stops them: the seed
        configurations are the reference rows of the report and must train their full budget."""

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if spec.seed_name(trial.config) is not None and decision == TrialScheduler.STOP:
                return TrialScheduler.CONTINUE
            return decision

    return SeedProtectingASHA(
        time_attr="training_iteration",
        metric=spec.metric,
        mode=spec.mode,
        max_t=spec.epochs,
        grace_period=spec.scheduler["grace_period"],
        reduction_factor=spec.scheduler["reduction_factor"],
    )


def _searcher(spec: SweepSpec, study_path: Path, study_name: str) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    budget = spec.epochs

    class PruneAwareOptunaSearch(OptunaSearch):
        """Tells Optuna that a trial ASHA stopped early was PRUNED (Ray records it as COMPLETE with
        its partial score, which TPE would then model as a final score)."""

        def suggest(self, trial_id: str) -> dict | None:
            config = super().suggest(trial_id)
            if trial_id in self._ot_trials:  # maps the study's trial to the Tune trial (and ledger)
                self._ot_trials[trial_id].set_user_attr(TRIAL_ID_ATTR, trial_id)
            return config

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            stopped_early = (
                not error
                and result is not None
                and result.get("training_iteration", budget) < budget
                and trial_id not in self._completed_trials
            )
            if not stopped_early:
                return super().on_trial_complete(trial_id, result, error)
            self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)

    seed = spec.searcher["seed"]
    if spec.searcher["type"] == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=spec.searcher["n_startup_trials"]
        )
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_path}")
    return PruneAwareOptunaSearch(
        space={name: dist.to_optuna() for name, dist in spec.search.items()},
        metric=spec.metric,
        mode=spec.mode,
        points_to_evaluate=[dict(point) for point in spec.seeds.values()] or None,
        sampler=sampler,
        study_name=study_name,
        storage=storage,
    )


def cluster_slots(spec: SweepSpec) -> int:
    """Trials that fit at once; fails fast when the per-trial request fits no node."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    slots = 0
    for node in nodes:
        res = node.get("Resources", {})
        per_node = math.floor(res.get("CPU", 0) / spec.cpus_per_trial + 1e-9)
        if spec.gpus_per_trial:
            per_node = min(per_node, math.floor(res.get("GPU", 0) / spec.gpus_per_trial + 1e-9))
        slots += per_node
    if slots == 0:
        have = [
            {k: v for k, v in n.get("Resources", {}).items() if k in ("CPU", "GPU")} for n in nodes
        ]
        raise InputError(
            f"resources: a trial asks for cpu={spec.cpus_per_trial} gpu={spec.gpus_per_trial} "
            f"but no node has that much (nodes: {have}); lower --cpus-per-trial/--gpus-per-trial"
        )
    return slots


def wrapped_trainable(spec: SweepSpec, task: ModuleType, data: Any) -> Any:
    """The task's `run` with the shared dataset and the per-trial resources (also what a resumed
    sweep must be given again)."""
    from ray import tune

    return tune.with_resources(
        tune.with_parameters(task.run, data=data),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial},
    )


def restore_tuner(spec: SweepSpec, task: ModuleType, data: Any, experiment: Experiment) -> Any:
    """Continue an interrupted sweep: finished trials stay as they are, unfinished ones resume
    from their last checkpoints, the searcher (and its Optuna study) from its saved state."""
    from ray import tune

    path, fs = experiment.ray_experiment_path, experiment.filesystem
    if not tune.Tuner.can_restore(path, storage_filesystem=fs):
        raise InputError(f"{experiment.location}: no Ray Tune state to resume from")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    return tune.Tuner.restore(
        path,
        trainable=wrapped_trainable(spec, task, data),
        resume_unfinished=True,
        resume_errored=False,
        restart_errored=False,
        storage_filesystem=fs,
    )


def build_tuner(
    spec: SweepSpec, task: ModuleType, data: Any, experiment: Experiment, slots: int
) -> Any:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from visiontune.callbacks import MirrorUploadCallback, TensorBoardCallback, TrialStatusCallback

    exp_dir = experiment.local

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # our TensorBoard logger replaces Ray's
    # A checkpoint every epoch with num_to_keep=1 forces a (cheap) experiment snapshot each time.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    trainable = wrapped_trainable(spec, task, data)
    callbacks = [
        CSVLoggerCallback(),
        JsonLoggerCallback(),
        TensorBoardCallback(exp_dir, spec.fixed, spec.search, task.METRICS),
        TrialStatusCallback(exp_dir, spec.epochs),
    ]
    if experiment.uri:
        callbacks.append(MirrorUploadCallback(experiment))
    run_config = tune.RunConfig(
        name=experiment.name,
        storage_path=experiment.ray_storage_path,
        storage_filesystem=experiment.filesystem,
        callbacks=callbacks,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1,  # the best by the metric; Ray also always keeps the latest (for restore)
            checkpoint_score_attribute=spec.metric,
            checkpoint_score_order=spec.mode,
        ),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
    )
    tune_config = tune.TuneConfig(
        search_alg=_searcher(spec, exp_dir / STUDY_FILE, experiment.name),
        scheduler=_scheduler(spec),
        num_samples=spec.num_samples,
        max_concurrent_trials=spec.max_concurrent or slots,
        reuse_actors=True,
        trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
    )
    return tune.Tuner(
        trainable, param_space=dict(spec.fixed), tune_config=tune_config, run_config=run_config
    )


def better(a: float, b: float | None, mode: str, ties: bool = False) -> bool:
    """Whether score `a` beats `b` under `mode` (with `ties`, an equal score wins too)."""
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return True
    if ties and a == b:
        return True
    return a > b if mode == "max" else a < b


def _best_checkpoint(result: Any, metric: str, mode: str) -> tuple[Any, dict] | None:
    """The trial's best kept checkpoint, the later epoch on ties (as analysis.best_epoch)."""
    best = None
    kept = sorted(
        result.best_checkpoints or [], key=lambda item: item[1].get("training_iteration", 0)
    )
    for checkpoint, metrics in kept:
        value = metrics.get(metric)
        if value is not None and (best is None or better(value, best[1][metric], mode, ties=True)):
            best = (checkpoint, metrics)
    return best


def test_evaluations(spec: SweepSpec, results: Any) -> list[dict[str, Any]]:
    """Which checkpoints the test table needs: each seed configuration's and the tuned best's."""
    picks: list[tuple[str, Any]] = []
    best_value, best_result = None, None
    for result in results:
        if result.error is not None:
            continue
        found = _best_checkpoint(result, spec.metric, spec.mode)
        if found is None:
            continue
        name = spec.seed_name(result.config)
        if name is not None:
            picks.append((name, result))
        if best_value is None or better(found[1][spec.metric], best_value, spec.mode):
            best_value, best_result = found[1][spec.metric], result
    if best_result is not None:
        picks.append(("tuned best", best_result))
    return [
        {"role": role, "result": result, "pick": _best_checkpoint(result, spec.metric, spec.mode)}
        for role, result in picks
    ]


def evaluate_on_test(spec: SweepSpec, task: ModuleType, data: Any, results: Any) -> list[dict]:
    """Evaluate the chosen checkpoints on the test split as Ray tasks with a trial's resources."""
    import ray

    @ray.remote
    def evaluate(checkpoint: Any, data: Any) -> dict[str, float]:
        with checkpoint.as_directory() as directory:
            return task.evaluate_checkpoint(directory, data, "test")

    remote = evaluate.options(num_cpus=spec.cpus_per_trial, num_gpus=spec.gpus_per_trial)
    data_ref = ray.put(data)
    picks = test_evaluations(spec, results)
    futures = [remote.remote(item["pick"][0], data_ref) for item in picks]
    rows = []
    for item, test in zip(picks, ray.get(futures), strict=True):
        metrics = item["pick"][1]
        row = {
            "role": item["role"],
            "trial_id": metrics.get("trial_id"),
            "epoch": metrics.get("epoch"),
        }
        row.update({k: metrics.get(k) for k in task.METRICS if k not in ("epoch",)})
        row.update(test)
        rows.append(row)
    return rows


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(tmp, path)


def check_address(address: str) -> None:
    """Fail at once (instead of Ray retrying for minutes) when nothing listens at a HOST:PORT or
    ray://HOST:PORT address; `auto` is left to Ray, which fails fast when it finds no cluster."""
    import socket

    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--address: {address!r} is not auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise InputError(
            f"--address: nothing answers at {address} ({exc.strerror or exc})"
        ) from None


def _start_ray(address: str | None, spec: SweepSpec) -> bool:
    """Attach to `address`, or start an embedded local Ray. Returns True if we started it."""
    import ray

    if ray.is_initialized():  # a task on the head: the driver of a ray:// sweep
        return False
    if address:
        try:
            ray.init(address=address, log_to_driver=True)
        except ConnectionError as exc:
            raise InputError(f"--address: no Ray cluster at {address}: {exc}") from None
        return False
    ray.init(address="local", include_dashboard=False, log_to_driver=True)
    return True


def reconcile_trials(exp_dir: Path, name: str, results: Any, epochs: int) -> None:
    """Bring the ledger and the Optuna study in line with what Ray finished, after a resume.

    A driver killed mid-sweep can leave trials the ledger still calls RUNNING: some Ray restored
    and finished without a fresh event, others Ray's experiment state never recorded, so Ray does
    not restore them (it samples replacements). The first get their final state from Ray's
    results; the second are marked LOST in the ledger and FAIL in the study, so neither counts a
    trial that no longer exists."""
    import optuna

    finished = {Path(result.path).name.removeprefix("trial_"): result for result in results}
    ledger_path = exp_dir / STATUS_FILE
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {}
    for trial_id, entry in ledger.items():
        result = finished.get(trial_id)
        if result is None:
            entry["status"] = "LOST"
        elif entry.get("status") in ("RUNNING", "RETRYING"):
            done = int((result.metrics or {}).get("training_iteration", entry.get("epochs", 0)))
            stopped = "TERMINATED" if done >= epochs else "STOPPED"
            entry.update(epochs=done, status="ERROR" if result.error else stopped)
    _write_json(ledger_path, ledger)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{exp_dir / STUDY_FILE}")
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # LOST (started, then forgotten by Ray) or never started (asked for, then the driver died)
        started = trial.user_attrs.get(TRIAL_ID_ATTR) in ledger
        live = optuna.trial.Trial(study, trial._trial_id)
        live.set_user_attr(LOST_ATTR, "lost" if started else "never started")
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def check_shared_storage(experiment: Experiment) -> None:
    """A local storage path must be the same directory on every node (NFS, or one machine):
    Ray's trials on other nodes write their checkpoints there. Each node that can run trials
    looks for a marker the driver wrote, at once, instead of trials failing at their first
    checkpoint."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if experiment.uri:
        return
    here = ray.get_runtime_context().get_node_id()
    others = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here]
    if not others:
        return
    storage = experiment.local.parent
    created = not storage.exists()
    storage.mkdir(parents=True, exist_ok=True)
    token = os.urandom(8).hex()
    marker = storage / f".visiontune-shared-{token}"
    marker.write_text(token)
    try:
        blind = nodes_without(str(marker), token, others, NodeAffinitySchedulingStrategy)
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        if created:
            storage.rmdir()  # refused: leave nothing behind
        raise InputError(
            f"--storage: {storage} is local to this machine, but {len(blind)} other node(s) of "
            f"the cluster cannot see it ({', '.join(n[:8] for n in blind)}); trials there could "
            "not save checkpoints: use a path every node mounts (NFS) or an s3:// / gs:// URI"
        )


def nodes_without(marker: str, token: str, node_ids: list[str], strategy: Any) -> list[str]:
    """The nodes (of `node_ids`) on which `marker` does not hold `token`."""
    import ray

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        try:
            return Path(path).read_text() == token
        except OSError:
            return False

    checks = [
        sees.options(scheduling_strategy=strategy(node_id, soft=False)).remote(marker)
        for node_id in node_ids
    ]
    return [node for node, ok in zip(node_ids, ray.get(checks, timeout=120), strict=True) if not ok]


def saved_trial_states(experiment: Experiment) -> tuple[int, list[str]]:
    """How many trials Ray's saved experiment state holds, and which of them are unfinished.
    The saved state is what `--resume` continues from: after Ctrl-C, Ray saves it before
    stopping the running trials (which it then calls TERMINATED in memory only)."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(
        experiment.ray_experiment_path, storage_filesystem=experiment.filesystem
    )
    unfinished = [t.trial_id for t in analysis.trials if t.status not in ("TERMINATED", "ERROR")]
    return len(analysis.trials), unfinished


def _driver_runs(exp_dir: Path, resume: bool) -> list[dict[str, Any]]:
    """The driver runs of this sweep so far (a resumed sweep has several); an interrupted run's
    end is its last ledger update."""
    previous = _read_json(exp_dir / SUMMARY_FILE).get("runs", []) if resume else []
    ledger = _read_json(exp_dir / STATUS_FILE)
    last_update = max((e.get("updated", 0) for e in ledger.values()), default=None)
    runs = [dict(run) for run in previous]
    for run in runs:
        if run.get("ended") is None:
            run["ended"] = last_update if last_update and last_update > run["started"] else None
            run["interrupted"] = True
    return runs


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_sweep(
    spec: SweepSpec,
    data: Any,
    experiment: Experiment,
    address: str | None = None,
    resume: bool = False,
) -> Path:
    """Run (or, with `resume`, continue) the sweep; returns the local experiment directory
    (for a URI storage, the driver's mirror, uploaded to the storage). `data` is the decoded
    dataset."""
    import ray

    from visiontune.trainables import load_task

    task = load_task(spec.task)
    if experiment.exists() and not resume:
        raise InputError(f"{experiment.location}: experiment already exists; choose another --name")
    started_ray = _start_ray(address, spec)
    exp_dir = experiment.local
    try:
        slots = cluster_slots(spec)
        check_shared_storage(experiment)
        if resume and experiment.uri:
            fresh_mirror(experiment)
            experiment.download()
        if not resume:
            fresh_mirror(experiment)
            exp_dir.mkdir(parents=True)
            (exp_dir / SPEC_FILE).write_text(spec.to_yaml())
            _write_json(exp_dir / DATASET_FILE, data.summary())
        runs = [*_driver_runs(exp_dir, resume), {"started": time.time(), "ended": None}]
        summary = {
            "name": experiment.name,
            "task": spec.task,
            "storage": experiment.location,
            "started": runs[0]["started"],
            "runs": runs,
            "slots": spec.max_concurrent or slots,
            "cpus_per_trial": spec.cpus_per_trial,
            "gpus_per_trial": spec.gpus_per_trial,
            "address": address or "local",
            "ray_version": ray.__version__,
        }
        _write_json(exp_dir / SUMMARY_FILE, summary)  # records the run's start if it is killed
        os.environ[EXPERIMENT_DIR_ENV] = str(exp_dir)  # for the callbacks, restored ones too
        experiment.upload()
        print(f"Experiment {experiment.location}; live curves: tensorboard --logdir {exp_dir} "
              "--host 127.0.0.1", flush=True)  # fmt: skip
        if resume:
            tuner = restore_tuner(spec, task, data, experiment)
        else:
            tuner = build_tuner(spec, task, data, experiment, slots)
        results = tuner.fit()
        runs[-1]["ended"] = time.time()
        started, unfinished = saved_trial_states(experiment)
        if unfinished or started < spec.num_samples:
            runs[-1]["interrupted"] = True
            _write_json(exp_dir / SUMMARY_FILE, summary)
            experiment.upload()
            raise SweepInterrupted(
                f"{len(unfinished)} trial(s) unfinished, {started} of {spec.num_samples} started"
            )
        reconcile_trials(exp_dir, experiment.name, results, spec.epochs)
        test_rows = evaluate_on_test(spec, task, data, results)
        _write_json(exp_dir / TEST_FILE, test_rows)
        summary.update(
            wall_time_s=sum(r["ended"] - r["started"] for r in runs if r["ended"] is not None),
            elapsed_s=runs[-1]["ended"] - runs[0]["started"],
            num_trials=len(results),
            errored=sum(1 for r in results if r.error is not None),
        )
        _write_json(exp_dir / SUMMARY_FILE, summary)
        experiment.upload()
    finally:
        if started_ray:
            ray.shutdown()
    return exp_dir
