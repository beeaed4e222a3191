"""Names of the files visiontune writes in an experiment directory STORAGE/NAME.

The directory is the product: it can be copied, opened in TensorBoard (`tensorboard --logdir`),
read by optuna-dashboard (`sqlite:///STORAGE/NAME/optuna.db`) and reported on anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

SPEC_FILE = "spec.yaml"  # the spec as resolved (YAML + command-line overrides)
DATASET_FILE = "dataset.json"  # classes, channels, image size and split counts of the data used
STUDY_FILE = "optuna.db"  # the Optuna study (SQLite)
STATUS_FILE = "trial_status.json"  # per-trial state: RUNNING, TERMINATED, STOPPED (early), ERROR
TEST_FILE = "test_results.json"  # test-split evaluation of the seed and tuned-best checkpoints
SUMMARY_FILE = "sweep.json"  # size, wall time, slots, resources of the sweep
SWEEP_LOG = "sweep.log"  # the console's lines, Ray's driver and worker output (appended)
REPORT_DIR = "report"  # default output of `visiontune report`
CONFIRM_DIR = "confirm"  # `visiontune confirm`: its Ray run (trials, checkpoints, TensorBoard)
CONFIRM_PLAN_FILE = "plan.json"  # in CONFIRM_DIR: the runs it trains (resume checks it)
CONFIRM_FILE = "confirm.json"  # a row per confirmation run: role, trial, seed, metrics
EXPERIMENT_DIR_ENV = "VISIONTUNE_EXPERIMENT_DIR"  # set by the driver for its Tune callbacks


def current_experiment_dir(pickled: str | os.PathLike[str]) -> Path:
    """The driver's experiment directory: the one this run of the driver set in
    EXPERIMENT_DIR_ENV. A resumed sweep restores its callbacks and searcher as they were pickled
    when it started, possibly on another machine or with the directory since moved."""
    return Path(os.environ.get(EXPERIMENT_DIR_ENV) or pickled)
