"""The sweep: a Ray Tune run of a validated SweepSpec, in parts.

* `compat`: Ray's environment variables and the Optuna storage access (versions checked).
* `cluster`: attach to or start Ray, check the address, count slots, check shared storage;
  `autoscale`: the slots and the fit check over the node types an autoscaler can still add.
* `tuner`: the Tuner (trainable, searcher, scheduler, loggers, checkpoint retention) or its
  restore; `searcher` (visiontune's Optuna ask/tell searcher) and `schedulers` import Ray at
  import time and are loaded only when a Tuner is built.
* `evaluation`: the checkpoints the test table needs, evaluated on the test split.
* `ledger`: trial_status.json and the study reconciled after a resume, the driver runs.
* `preflight`: every file a `--resume` needs, checked before anything changes.
* `bohb`: Ray's TuneBOHB over the study (searcher.type bohb).
* `run`: `run_sweep`, start to end; `driver`: the sweep then its report, here or on the head.

Importing this package does not import Ray: `keep_ray_on_loopback` must run before Ray loads.
"""

from visiontune.sweep.cluster import (
    check_address,
    check_shared_storage,
    cluster_slots,
    nodes_without,
    start_ray,
)
from visiontune.sweep.compat import keep_ray_on_loopback
from visiontune.sweep.evaluation import checkpoints_to_test, evaluate_on_test
from visiontune.sweep.ledger import reconcile_trials, saved_trial_states
from visiontune.sweep.run import run_sweep
from visiontune.sweep.tuner import build_tuner, restore_tuner, wrapped_trainable

__all__ = [
    "build_tuner",
    "check_address",
    "check_shared_storage",
    "checkpoints_to_test",
    "cluster_slots",
    "evaluate_on_test",
    "keep_ray_on_loopback",
    "nodes_without",
    "reconcile_trials",
    "restore_tuner",
    "run_sweep",
    "saved_trial_states",
    "start_ray",
    "wrapped_trainable",
]
