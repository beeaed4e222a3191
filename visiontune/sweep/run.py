"""Run a sweep from a validated SweepSpec, start to end.

Flow: the spec and the dataset are validated and decoded before anything is written (by the
CLI); then the experiment directory STORAGE/NAME gets the resolved spec, the Optuna study
(SQLite) and Ray's trial directories; after the sweep the best trial's best checkpoint and the
seed configurations' checkpoints are evaluated on the test split, and a summary is written for
`visiontune report`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from visiontune.errors import SweepInterrupted
from visiontune.fileio import write_json
from visiontune.layout import (
    DATASET_FILE,
    EXPERIMENT_DIR_ENV,
    SPEC_FILE,
    SUMMARY_FILE,
    SWEEP_LOG,
    TEST_FILE,
)
from visiontune.provenance import collect_provenance
from visiontune.spec import SweepSpec
from visiontune.storage import Experiment
from visiontune.sweep.cluster import check_shared_storage, cluster_slots, start_ray
from visiontune.sweep.evaluation import evaluate_on_test
from visiontune.sweep.ledger import driver_runs, reconcile_trials, saved_trial_states
from visiontune.sweep.tuner import build_tuner, restore_tuner


def run_sweep(
    spec: SweepSpec,
    data: Any,
    experiment: Experiment,
    address: str | None = None,
    resume: bool = False,
    verbose: bool = False,
) -> Path:
    """Run (or, with `resume`, continue) the sweep; returns the local experiment directory
    (for a URI storage, the driver's mirror, uploaded to the storage). `data` is the decoded
    dataset. A new sweep claims STORAGE/NAME before Ray starts (`Experiment.claim`: of two
    sweeps started at once, one gets "already exists"), and gives the name back when it ends
    before its Tuner runs (Ray did not start, no node fits a trial, ...)."""
    import ray

    from visiontune.console import SweepLog

    if resume:
        experiment.mirror()  # the CLI checked these files (visiontune.sweep.preflight)
        created: list[Path] = []
    else:
        created = experiment.claim()
    exp_dir = experiment.local
    started_ray = tuning = False
    # The driver's own output before and after Tune runs goes to the screen and to sweep.log;
    # while Tune runs, the console callback (visiontune.console) keeps the log.
    log = SweepLog(exp_dir / SWEEP_LOG, echo=True)
    try:
        if not resume:
            (exp_dir / SPEC_FILE).write_text(spec.to_yaml())
            write_json(exp_dir / DATASET_FILE, data.summary())
        started_ray = start_ray(address)
        slots = cluster_slots(spec)
        check_shared_storage(experiment)
        runs = [*driver_runs(exp_dir, resume), {"started": time.time(), "ended": None}]
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
            "provenance": collect_provenance(data),  # versions, commit, machine, data hash
        }
        write_json(exp_dir / SUMMARY_FILE, summary)  # records the run's start if it is killed
        os.environ[EXPERIMENT_DIR_ENV] = str(exp_dir)  # for the callbacks, restored ones too
        if resume:
            tuner = restore_tuner(spec, data, experiment, verbose=verbose)
        else:
            tuner = build_tuner(spec, data, experiment, slots, verbose=verbose)
        experiment.upload()
        print(f"Experiment {experiment.location}; live curves: tensorboard --logdir {exp_dir} "
              "--host 127.0.0.1", flush=True)  # fmt: skip
        tuning = True
        log.close()
        results = tuner.fit()
        log = SweepLog(exp_dir / SWEEP_LOG, echo=True)
        runs[-1]["ended"] = time.time()
        started, unfinished = saved_trial_states(experiment)
        if unfinished or started < spec.num_samples:
            runs[-1]["interrupted"] = True
            write_json(exp_dir / SUMMARY_FILE, summary)
            experiment.upload()
            raise SweepInterrupted(
                f"{len(unfinished)} trial(s) unfinished, {started} of {spec.num_samples} started"
            )
        reconcile_trials(exp_dir, experiment.name, results, spec.epochs)
        tested = evaluate_on_test(spec, data, results)
        write_json(exp_dir / TEST_FILE, tested)
        print(f"Test split: evaluated {', '.join(row['role'] for row in tested) or 'nothing'}",
              flush=True)  # fmt: skip
        summary.update(
            wall_time_s=sum(r["ended"] - r["started"] for r in runs if r["ended"] is not None),
            elapsed_s=runs[-1]["ended"] - runs[0]["started"],
            num_trials=len(results),
            errored=sum(1 for r in results if r.error is not None),
        )
        write_json(exp_dir / SUMMARY_FILE, summary)
        experiment.upload()
    except BaseException:
        log.close()
        if not resume and not tuning:
            experiment.release(created)  # nothing ran: the name is free again
        raise
    finally:
        log.close()
        if started_ray:
            ray.shutdown()
    return exp_dir
