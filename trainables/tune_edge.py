"""The Ray Tune side of a trainable, in one place: threads from the trial's resources, restore
from the trial's checkpoint, and one report (metrics + checkpoint) per epoch. Ray's API has churned
every year; the session-based trainables (classifier, Faster R-CNN) only call `run_session`."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def trial_cpus() -> int:
    """CPU cores Ray reserved for this trial (torch should use that many threads)."""
    from ray import tune

    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    return max(1, int(cpus))


def trial_device() -> str:
    """CUDA when Ray assigned this trial a GPU (it then sets CUDA_VISIBLE_DEVICES), else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_session(make_session: Callable[[str], Any], checkpoint_file: str) -> None:
    """Drive a Session (train_epoch/save/load/epoch/config.epochs) through a Tune trial."""
    from ray import tune

    torch.set_num_threads(trial_cpus())
    session = make_session(trial_device())
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            session.load(Path(directory) / checkpoint_file)
    while session.epoch < session.config.epochs:
        metrics = session.train_epoch()
        with tempfile.TemporaryDirectory() as directory:
            session.save(Path(directory) / checkpoint_file)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
