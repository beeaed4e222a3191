"""The tuned model in hand: the checkpoint a sweep tested as its tuned best, loaded for prediction.

    import visiontune
    from visiontune.data.imagefolder import decode_image

    best = visiontune.load_best("runs/classifier")          # the experiment directory
    with torch.no_grad():
        logits = best.model(best.preprocess(decode_image(Path("module.png"))))
    print(best.classes[int(logits.argmax(1))])

    detector = visiontune.load_best("runs/yolo")             # or a Faster R-CNN sweep
    found = detector.model(detector.preprocess(image))[0]    # {"boxes", "scores", "labels"}

`load_best` finds the checkpoint test_results.json's "tuned best" row was evaluated from (its
trial's checkpoint of that epoch, named in the trial's result.json; else the copy `visiontune
report` keeps in report/best_checkpoint/). Where `visiontune confirm` ran and picked a tuned
best (analysis/confirmation.py), it is that configuration's confirmation run with the training
seed best_config.yaml names (the sweep's own seed where that run finished; else its first
finished run): the checkpoint confirm.json's row was tested from, so the model, best_config.yaml
and `visiontune train --config` all name the same run. It is loaded through the task's own
`load_model`
(trainables/contract.py): the task's model builder and checkpoint loading, the input
preparation its training and evaluation use, and its class names. The model's input statistics
come from the training data, so the sweep's dataset is decoded again (from spec.yaml's
`data.source`; ~1 s for the embedded set) and must match the fingerprint sweep.json recorded.

`keep_best_checkpoint` is the report's half: it puts that checkpoint into report/ (hard links
where the report is on the checkpoint's filesystem, a copy elsewhere).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visiontune.errors import InputError
from visiontune.layout import REPORT_DIR

REPORT_CHECKPOINT = "best_checkpoint"  # report/<this>/: the tuned best's checkpoint files
TUNED_BEST = "tuned best"  # its role in test_results.json (visiontune.sweep.evaluation)


@dataclass(frozen=True)
class TunedModel:
    """A sweep's tuned best, ready to predict: `model(preprocess(images))` (see
    `visiontune.trainables.contract.InferenceModel` for what each gives)."""

    model: Any
    """In eval mode: logits for a classifier; boxes, scores and labels per image for a detector."""
    preprocess: Callable[[Any], Any]
    """Decoded image(s) or a uint8 N x C x H x W batch -> the model's input."""
    classes: tuple[str, ...]
    task: str
    trial_id: str
    """The sweep trial whose configuration it is."""
    epoch: int | None
    checkpoint: Path
    """The checkpoint directory it was loaded from."""
    role: str = TUNED_BEST
    """"tuned best" (the sweep's), or the confirmed configuration's role ("tuned #2", ...)."""
    seed: int | None = None
    """The confirmation run's training seed (None: the sweep's own trial)."""
    scores: dict[str, Any] = field(default_factory=dict)
    """The row it was tested in: test_results.json's tuned best, or its confirm.json row."""


@dataclass(frozen=True)
class BestRun:
    """Which run is the tuned best: its row (test_results.json's or confirm.json's) and the
    directory of the run that trained it (a sweep trial's, or a confirmation run's)."""

    role: str
    row: dict[str, Any]
    run_dir: Path
    seed: int | None = None  # a confirmation run's training seed


def best_run(experiment: Any) -> BestRun | None:
    """The confirmed tuned best's run where `visiontune confirm` picked one, else the sweep's
    tested tuned best; None when neither exists."""
    from visiontune.analysis.confirmation import load_confirmation
    from visiontune.layout import CONFIRM_DIR

    confirmation = load_confirmation(experiment)
    if confirmation is not None and confirmation.best is not None:
        runs = [
            row
            for row in sorted(confirmation.rows, key=lambda row: row["seed"])
            if row["role"] == confirmation.best and not row.get("error") and row.get("run_id")
        ]
        own = sweep_seed(experiment, confirmation.trial_of(confirmation.best))
        row = next((r for r in runs if r["seed"] == own), runs[0] if runs else None)
        if row is not None:
            run_dir = experiment.path / CONFIRM_DIR / f"trial_{row['run_id']}"
            return BestRun(confirmation.best, row, run_dir, int(row["seed"]))
    best = tuned_best(experiment)
    trials = experiment.trials
    if best is None or trials.empty:
        return None
    match = trials[trials["trial_id"] == best["trial_id"]]
    if match.empty:
        return None
    return BestRun(TUNED_BEST, best, experiment.path / match.iloc[0]["dir"])


def sweep_seed(experiment: Any, trial_id: str | None) -> int | None:
    """The training seed the sweep's trial `trial_id` ran with (its `seed` parameter)."""
    trials = experiment.trials
    if trial_id is None or trials.empty or "config/seed" not in trials:
        return None
    match = trials[trials["trial_id"] == trial_id]
    seed = match.iloc[0]["config/seed"] if not match.empty else None
    return int(seed) if seed is not None and seed == seed else None


def load_best(
    experiment_dir: str | os.PathLike[str], device: str = "cpu", data: Any = None
) -> TunedModel:
    """The tuned best of the experiment in `experiment_dir` (STORAGE/NAME), on `device` ("cpu"
    or "cuda"). `data` is the sweep's decoded dataset if the caller has it; else it is decoded
    from the spec's data source. InputError when the sweep has no tested tuned best, its
    checkpoint is gone, or the data is not the data the sweep trained on."""
    from visiontune.analysis.results import load_experiment
    from visiontune.trainables import load_task

    experiment = load_experiment(experiment_dir)
    best = best_run(experiment)
    if best is None:
        raise InputError(
            f"{experiment.path}: no tested tuned best in test_results.json (the sweep did not "
            "finish, or every trial errored)"
        )
    checkpoint = _loadable_checkpoint(experiment)
    task = load_task(experiment.spec.task)
    if data is None:
        from visiontune.data import load_dataset

        spec = experiment.spec
        data = load_dataset(task.DATA_FORMAT, spec.data_source, spec.data_options)
    check_same_data(experiment, data)
    loaded = task.load_model(checkpoint, data, device)
    return TunedModel(
        loaded.model,
        loaded.preprocess,
        loaded.classes,
        experiment.spec.task,
        best.row["trial_id"],
        best.row.get("epoch"),
        checkpoint,
        role=best.role,
        seed=best.seed,
        scores=dict(best.row),
    )


def load_checkpoint(
    checkpoint_dir: str | os.PathLike[str], task: str, data: Any, device: str = "cpu"
) -> Any:
    """Any checkpoint of `task` (a trial's checkpoint_NNNNNN/, `visiontune train --out`'s
    directory) as the task's InferenceModel; `data` is the dataset it was trained on."""
    from visiontune.trainables import load_task

    return load_task(task).load_model(Path(checkpoint_dir), data, device)


def tuned_best(experiment: Any) -> dict[str, Any] | None:
    """test_results.json's tuned-best row; None before the sweep's test evaluation."""
    return next((row for row in experiment.test if row["role"] == TUNED_BEST), None)


def best_checkpoint_dir(experiment: Any) -> Path | None:
    """The directory of the checkpoint the tuned best (`best_run`) was tested from: its run's
    checkpoint of the row's epoch, as named in the run's result.json (the later report of an
    epoch trained twice, as the report reads it). None when there is no such run, or the
    checkpoint is not on this disk (a sweep on s3/gs keeps checkpoints in the bucket)."""
    from visiontune.analysis.results import read_result_lines

    best = best_run(experiment)
    if best is None or best.row.get("epoch") is None:
        return None
    names = [
        result.get("checkpoint_dir_name")
        for result in read_result_lines(best.run_dir / "result.json")
        if int(result.get("epoch") or result.get("training_iteration") or 0) == best.row["epoch"]
    ]
    if not names or not isinstance(names[-1], str):
        return None
    directory = best.run_dir / names[-1]
    return directory if directory.is_dir() else None


def _loadable_checkpoint(experiment: Any) -> Path:
    """The tuned best's checkpoint in its trial directory, else the report's copy."""
    found = best_checkpoint_dir(experiment)
    if found is not None:
        return found
    kept = experiment.path / REPORT_DIR / REPORT_CHECKPOINT
    if kept.is_dir() and any(kept.iterdir()):
        return kept
    raise InputError(
        f"{experiment.path}: the tuned best's checkpoint is neither in its trial directory nor "
        f"in {kept} (run `visiontune report` where the checkpoints are)"
    )


def check_same_data(experiment: Any, data: Any) -> None:
    """InputError unless `data` has the fingerprint sweep.json recorded (a sweep that recorded
    none passes): the model's input statistics and class names come from the training data."""
    from visiontune.provenance import UNKNOWN, data_fingerprint

    provenance = experiment.summary.get("provenance") or {}
    recorded = (provenance.get("data") or {}).get("sha256", UNKNOWN)
    if recorded == UNKNOWN:
        return
    found = data_fingerprint(data)["sha256"]
    if found != recorded:
        raise InputError(
            f"{getattr(data, 'source', 'data')}: not the data the sweep trained on (sha256 "
            f"{found[:12]}..., sweep.json records {recorded[:12]}...); pass the sweep's dataset "
            "as data="
        )


def keep_best_checkpoint(experiment: Any, out: Path) -> Path | None:
    """Put the tuned best's checkpoint files into `out`/best_checkpoint/, hard-linked where
    `out` is on their filesystem, copied elsewhere, replacing an older copy; returns that
    directory, or None (and removes an older copy, which would pass for this sweep's) when the
    checkpoint is not on this disk."""
    target = out / REPORT_CHECKPOINT
    source = best_checkpoint_dir(experiment)
    if source is None:
        shutil.rmtree(target, ignore_errors=True)
        return None
    staging = out / f".{REPORT_CHECKPOINT}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(source, staging, copy_function=_link_or_copy)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem (EXDEV), or one without hard links
        shutil.copy2(source, target)
