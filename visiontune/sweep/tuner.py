"""Assemble the Ray Tune Tuner of a sweep from its spec: the trainable (one Ray edge for every
task, with the shared dataset and per-trial resources), the searcher and scheduler, the loggers
and the checkpoint retention; or restore the Tuner of an interrupted sweep.

Ray and Optuna are imported inside the functions (see `visiontune.sweep.compat`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visiontune.best import Objective
from visiontune.errors import InputError
from visiontune.layout import STUDY_FILE
from visiontune.spec import SweepSpec
from visiontune.storage import Experiment
from visiontune.sweep.compat import use_own_tune_loggers


@dataclass(frozen=True)
class TensorBoardView:
    """What the HParams tab is told: the fixed values and searched domains it declares, and how
    a trial's config becomes its session (visiontune.callbacks.SessionOf; None: a group per
    trial, recording its whole config)."""

    fixed: Mapping[str, Any]
    search: Mapping[str, Any]
    session_of: Any = None


def build_sampler(spec: SweepSpec) -> Any:
    """The spec's Optuna sampler, seeded by `searcher.seed`; the spec's other keys are the
    sampler's own arguments (`n_startup_trials`). Every other option stays at Optuna 5's
    defaults (TPE: multivariate, constant liar).

    `optuna_tpe`: TPE after `n_startup_trials` random ones; it learns from pruned trials too.
    `random`: independent uniform draws. `gp`: Gaussian-process BO (`GPSampler`, needs torch
    and scipy); it models COMPLETE trials only, so under an early-stopping scheduler it learns
    from the trials that ran their full budget. `qmc`: a scrambled Sobol sequence, which covers
    the space more evenly than random draws (Optuna marks `QMCSampler` experimental: its
    ExperimentalWarning is silenced here, the choice having been made in the spec). `bohb`:
    the study's sampler is never consulted (BOHB proposes every configuration, see
    visiontune.sweep.bohb); a seeded random sampler stands in.
    """
    import warnings

    import optuna

    options = {key: value for key, value in spec.searcher.items() if key != "type"}
    kind = spec.searcher["type"]
    if kind in ("random", "bohb"):
        return optuna.samplers.RandomSampler(**options)
    if kind == "gp":
        return optuna.samplers.GPSampler(**options)
    if kind == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, **options)
    return optuna.samplers.TPESampler(**options)


def build_searcher(spec: SweepSpec, study_file: Path, study_name: str) -> Any:
    """The sweep's StudySearcher over the study `study_name` in `study_file`."""
    from visiontune.sweep.searcher import StudySearcher

    proposer = None
    if spec.searcher["type"] == "bohb":
        from visiontune.sweep.bohb import BohbProposer

        proposer = BohbProposer(
            spec.search, spec.objective, spec.searcher["seed"], spec.seeds.values()
        )
    return StudySearcher(
        space={name: dist.to_optuna() for name, dist in spec.search.items()},
        objective=Objective(spec.metric, spec.mode),
        epochs=spec.epochs,
        study_file=study_file,
        study_name=study_name,
        sampler=build_sampler(spec),
        seeds=[dict(point) for point in spec.seeds.values()],
        proposer=proposer,
    )


def wrapped_trainable(spec: SweepSpec, data: Any, task: Any = None) -> Any:
    """The one Ray edge bound to the spec's task (or to `task`, a task object a benchmark
    substitutes), with the shared dataset and the per-trial resources (also what a resumed
    sweep must be given again)."""
    from ray import tune

    from visiontune.trainables.tune_edge import run_trial

    return tune.with_resources(
        tune.with_parameters(run_trial, task=task or spec.task, data=data),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial},
    )


def run_config(
    spec: SweepSpec,
    experiment: Experiment,
    verbose: bool = False,
    shown: SweepSpec | None = None,
    tensorboard: TensorBoardView | None = None,
) -> Any:
    """The RunConfig of a sweep, and of its confirmation (visiontune.confirm): Ray's CSV and
    JSON loggers, TensorBoard, the ledger, the console, the mirror to a URI storage, checkpoint
    retention by the objective and retries. `shown` is the spec the console prints trials by
    (default `spec`); `tensorboard` what the HParams tab declares and groups (default: the
    shown spec's parameters, a group per trial). Ray keeps its default verbosity: the console
    callback (visiontune.console) sends Ray's output to the sweep log, and to the terminal
    only with `verbose`."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from visiontune.callbacks import MirrorUploadCallback, TensorBoardCallback, TrialStatusCallback
    from visiontune.console import ConsoleCallback
    from visiontune.trainables import load_task

    exp_dir, shown = experiment.local, shown or spec
    view = tensorboard or TensorBoardView(shown.fixed, shown.search)
    metrics = load_task(spec.task).METRICS
    callbacks = [
        CSVLoggerCallback(),
        JsonLoggerCallback(),
        TensorBoardCallback(exp_dir, view.fixed, view.search, metrics, view.session_of),
        TrialStatusCallback(exp_dir, spec.epochs),
        ConsoleCallback(exp_dir, shown, verbose),
    ]
    if experiment.uri:
        callbacks.append(MirrorUploadCallback(experiment))
    objective = Objective(spec.metric, spec.mode)
    return tune.RunConfig(
        name=experiment.name,
        storage_path=experiment.ray_storage_path,
        storage_filesystem=experiment.filesystem,
        callbacks=callbacks,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1,  # the best by the objective; Ray also always keeps the latest (restore)
            checkpoint_score_attribute=objective.metric,
            checkpoint_score_order=objective.checkpoint_order,
        ),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
    )


def concurrent_trials(spec: SweepSpec, slots: int) -> int | None:
    """Ray's `max_concurrent_trials` for the sweep: the spec's `max_concurrent`, else every slot.

    Not for HyperBand unless the spec sets it: Ray's limit (a ConcurrencyLimiter around the
    searcher) counts PAUSED trials as live, and synchronous HyperBand parks trials at each rung
    until their bracket catches up, so a limit of `slots` would let no new trial join a bracket
    while its first trials wait and every bracket would be halved among `slots` trials. Without
    it, Ray asks the searcher for one pending trial at a time (ray 2.60.0,
    `_get_max_pending_trials` for a custom searcher) and the slots still bound what runs.
    """
    if spec.scheduler["type"] == "hyperband":
        return spec.max_concurrent
    return spec.max_concurrent or slots


def build_tuner(
    spec: SweepSpec,
    data: Any,
    experiment: Experiment,
    slots: int,
    task: Any = None,
    verbose: bool = False,
) -> Any:
    """A new sweep's Tuner; the study is created in the experiment directory. `task` replaces
    the spec's task object in the trials (benchmarks/orchestration_overhead.py times the
    sweep's own Tuner around fixed-work trials that way)."""
    from ray import tune

    from visiontune.console import set_console_verbosity
    from visiontune.sweep.schedulers import build_scheduler

    use_own_tune_loggers()
    set_console_verbosity(verbose)
    searcher = build_searcher(spec, experiment.local / STUDY_FILE, experiment.name)
    tune_config = tune.TuneConfig(
        search_alg=searcher,
        scheduler=build_scheduler(spec, searcher),
        num_samples=spec.num_samples,
        max_concurrent_trials=concurrent_trials(spec, slots),
        reuse_actors=True,
        trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
    )
    return tune.Tuner(
        wrapped_trainable(spec, data, task),
        param_space=dict(spec.fixed),
        tune_config=tune_config,
        run_config=run_config(spec, experiment, verbose),
    )


def restore_tuner(spec: SweepSpec, data: Any, experiment: Experiment, verbose: bool = False) -> Any:
    """Continue an interrupted sweep: finished trials stay as they are, unfinished ones resume
    from their last checkpoints, the searcher (and its Optuna study) from its saved state."""
    from ray import tune

    from visiontune.console import set_console_verbosity

    path, fs = experiment.ray_experiment_path, experiment.filesystem
    if not tune.Tuner.can_restore(path, storage_filesystem=fs):
        raise InputError(f"{experiment.location}: no Ray Tune state to resume from")
    use_own_tune_loggers()
    set_console_verbosity(verbose)  # the restored console callback is the pickled one
    return tune.Tuner.restore(
        path,
        trainable=wrapped_trainable(spec, data),
        resume_unfinished=True,
        resume_errored=False,
        restart_errored=False,
        storage_filesystem=fs,
    )
