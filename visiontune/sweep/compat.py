"""Every place visiontune leans on something Ray or Optuna does not promise: Ray's environment
variables, the one Optuna storage path the searcher needs, the experiment-state mark that a
trial stopped while paused needs, and where a driver finds the autoscaler's node types. Each
entry names the version it was checked on and why it is needed; when Ray or Optuna move, this is
the file to re-check.

Nothing here imports Ray at import time (the loopback variables must be set before Ray is
imported; `reported_cluster_config` imports it when called). The scheduler subclasses in
visiontune.sweep.schedulers, which must import Ray, lean on two private members of Ray's
schedulers; that module's docstring names them, and tests/sweep/test_schedulers.py pins both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# --- Ray environment variables (checked on ray 2.60.0) ---------------------------------------


def keep_ray_on_loopback() -> None:
    """Must run before `import ray`: a local Ray then binds every node to 127.0.0.1.

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (ray 2.60.0): without it, a local Ray binds its GCS and
    raylets to the machine's network address (`_node_ip_address` is ignored); with it,
    `ray.init(address="local")` and `ray.cluster_utils.Cluster` stay on 127.0.0.1.
    RAY_USAGE_STATS_ENABLED=0 (ray 2.60.0): no usage report (the machines have no network).
    `setdefault`: a user who sets either keeps their value."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def use_own_tune_loggers() -> None:
    """Set before a Tuner is built or restored (Tune reads both when `fit` starts).

    TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1 (ray 2.60.0): Tune otherwise adds its CSV, JSON and
    TensorBoardX loggers; the sweep installs CSV and JSON itself and its own TensorBoard
    callback (Ray's writes HParams only when a trial ends, and only the sampled parameters).
    TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S=0 (ray 2.60.0): a checkpoint
    every epoch with num_to_keep=1 forces a (cheap) experiment snapshot each time, which Tune
    would warn about on every epoch."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def allow_slow_trial_exit() -> None:
    """Set in each trial's worker process (trainables/tune_edge.run_trial), where Ray reads it.

    TUNE_FUNCTION_THREAD_TIMEOUT_S (ray 2.60.0, ray/tune/trainable/function_trainable.py
    `reset_config`): when a reused actor takes its next trial (reuse_actors=True), Ray waits
    this long (default 2 s) for the previous trial's training thread to end; if it has not, the
    next trial ERRORs with "Trainable runner reuse requires reset_config() to be implemented and
    return True" before it trained anything, and Ray tells neither the searcher, the scheduler
    nor the callbacks (tune_controller.py `_on_trial_reset`). On a loaded machine the previous
    trial's exit (its last checkpoint, its memory handed back) takes longer than 2 s; a thread
    that ends waits no longer than it needs. `setdefault`: a user's own value is kept."""
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "300")


def hide_checkpoint_lines() -> None:
    """Must run before `import ray` in the driver (the process that prints the workers' output):
    the sweep's console (visiontune.console, without --verbose) drops the line each trial worker
    logs for every checkpoint.

    RAY_DEDUP_LOGS_SKIP_REGEX (ray 2.60.0): read once when Ray is imported
    (ray/_private/ray_constants.py); the driver's LogDeduplicator
    (ray/_private/ray_logging/__init__.py) discards every worker line it matches before printing.
    Ray Train's storage logs "Checkpoint successfully created at: Checkpoint(...)" at INFO in the
    worker on every `tune.report(..., checkpoint=...)` (ray/train/_internal/storage.py), and the
    deduplicator prints the repeats in batches up to 5 s late, after the sweep has ended, so
    routing the driver's streams to the log (visiontune.console) cannot catch them all.
    `setdefault`: a user's own skip pattern is kept."""
    os.environ.setdefault("RAY_DEDUP_LOGS_SKIP_REGEX", r"^Checkpoint successfully created at: ")


# --- Optuna: a running study trial by its number (checked on optuna 5.0.0) -------------------


class StoredTrial:
    """A RUNNING trial of a stored study, reached by its trial number.

    Optuna's public face of a running trial is the `optuna.trial.Trial` that `study.ask()`
    returns; it cannot be pickled with the searcher, and a resumed sweep (a new driver process)
    has no way back to it: `optuna.trial.Trial(study, trial_id)` needs the storage's private
    trial id (`FrozenTrial._trial_id`) and runs the sampler's `before_trial` again. The storage's
    own methods (`get_study_id_from_name`, `get_trial_id_from_study_id_trial_number`,
    `set_trial_intermediate_value`, `set_trial_user_attr`) are public on
    `optuna.storages.BaseStorage`, but documented as "not supposed to be directly accessed by
    library users" (optuna 5.0.0): hence here. They write straight to the RDB backend, which
    `Study`'s cache reads through for unfinished trials, so `study.tell` sees every value.
    """

    def __init__(self, storage: Any, study_name: str, number: int) -> None:
        study_id = storage.get_study_id_from_name(study_name)
        self._storage = storage
        self._id = storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def report(self, step: int, value: float) -> None:
        """The intermediate value at `step` (as `Trial.report`, without its duplicate check)."""
        self._storage.set_trial_intermediate_value(self._id, step, value)

    def set_user_attr(self, key: str, value: Any) -> None:
        self._storage.set_trial_user_attr(self._id, key, value)


# --- Ray's saved experiment state: a trial stopped while paused (checked on ray 2.60.0) --------


def save_state_of_removed_trial(tune_controller: Any, trial: Any) -> None:
    """Have Ray write `trial`'s state into its next experiment checkpoint.

    `TuneController.stop_trial` on a PAUSED or PENDING trial (HyperBand stops paused trials
    when it halves a bracket or closes a finished one) tells the scheduler `on_trial_remove`,
    then sets the trial TERMINATED without marking it for the experiment checkpoint
    (`_schedule_trial_stop` returns before `_mark_trial_to_checkpoint` for a trial that has no
    actor, ray 2.60.0). The saved state then kept calling it PAUSED: the finished sweep looked
    interrupted, and `--resume` would have trained the trial again. Marking it from
    `on_trial_remove` is enough: Ray serialises the trial when it writes the checkpoint, after
    the status change. Controllers without the method (tests' stand-ins) are left alone."""
    mark = getattr(tune_controller, "_mark_trial_to_checkpoint", None)
    if mark is not None:
        mark(trial)


# --- Ray's autoscaling config, as a driver can find it (checked on ray 2.60.0) ----------------

# The autoscaler's entry points (ray/_private/services.py `start_monitor`, ray 2.60.0): v1 is
# the default, v2 runs with RAY_enable_autoscaler_v2=1. Both take the same two flags.
MONITOR_SCRIPTS = ("autoscaler/_private/monitor.py", "autoscaler/v2/monitor.py")


def reported_cluster_config() -> Any:
    """The node groups an autoscaler reported to the GCS, or None.

    `ray._private.state.state.get_cluster_config()` (ray 2.60.0, private) reads the
    `autoscaler_pb2.ClusterConfig` (node groups: name, resources, min_count, max_count with -1
    for unlimited) from the GCS internal KV key `__autoscaler_cluster_config` in namespace
    `__autoscaler`; Ray Data reads it there to plan for nodes the autoscaler can add. Only an
    autoscaler that calls `GcsClient.report_cluster_config` writes it: the open-source v1 and
    v2 monitors of ray 2.60.0 do not (no Python caller; a fake-multinode cluster started with
    `--autoscaling-config` leaves it empty), so `autoscaling_config_here` is the fallback.
    Imports Ray: call it only with Ray initialised."""
    import ray._private.state

    return ray._private.state.state.get_cluster_config()


def monitor_config_path(processes: Any, gcs_address: str) -> str | None:
    """The `--autoscaling-config` path of the autoscaler serving `gcs_address`, or None.

    `processes` are (argv, cwd) pairs of the head's processes. `ray start --head
    --autoscaling-config=FILE` hands FILE to nothing but the monitor process it starts
    (`start_monitor`: `monitor.py --gcs-address=HOST:PORT ... --autoscaling-config=FILE`, ray
    2.60.0); the monitor expands `~` and reads the file itself, and `ray up` has already filled
    each node type's `resources` (CPU, GPU) from its instance type when it wrote that file
    (`~/ray_bootstrap_config.yaml`). The GCS address tells apart the monitors of several
    clusters on one machine. A monitor without the flag (a plain `ray start`, an embedded Ray:
    a read-only autoscaler) gives None, and so does KubeRay's autoscaler (its config comes from
    the RayCluster resource)."""
    for argv, cwd in processes:
        if not any(arg.endswith(MONITOR_SCRIPTS) for arg in argv[:3]):
            continue
        flags = dict(arg.split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
        if flags.get("--gcs-address") != gcs_address:
            continue
        path = flags.get("--autoscaling-config")
        if not path:
            return None
        return os.path.join(cwd or "/", os.path.expanduser(path))
    return None


def autoscaling_config_here(gcs_address: str) -> dict | None:
    """The autoscaling config (the cluster YAML as a dict) of the cluster at `gcs_address`,
    read on this machine, which must be the head node; None when it has no autoscaler with a
    config file or the file cannot be read (see `monitor_config_path`). Reads /proc: Ray's
    clusters run on Linux."""
    import yaml

    path = monitor_config_path(_monitor_processes(), gcs_address)
    if path is None:
        return None
    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def _monitor_processes() -> list[tuple[list[str], str]]:
    """(argv, cwd) of this machine's Ray autoscaler processes that this user may read."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if any(arg.endswith(MONITOR_SCRIPTS) for arg in argv[:3]):
                found.append((argv, os.readlink(proc / "cwd")))
        except OSError:  # gone meanwhile, or another user's
            continue
    return found
