"""The Ray side of every trainable, in one place: `run_trial` is the one function Ray Tune calls,
for every task. It gives the task the trial's device and threads, restores from the trial's
checkpoint, reports once per epoch (metrics + checkpoint), and hands the memory back when the
trial ends however it ends. Ray's API has churned every year; the tasks never import it.

A trial whose loss becomes NaN/inf (the task raises FloatingPointError) is not raised to Ray:
Ray's FailureConfig retries every exception as if the trial's worker had died (ray 2.60.0,
`Trial.should_recover` counts failures only, with no way to mark one final), and a diverging
configuration diverges again on each retry. It reports one last result instead
(`contract.divergence_result`, the reason under `contract.DIVERGED`) and returns, so Ray ends it
once; the sweep's own records call it ERROR with that reason.

A trial that Ray gave a GPU which torch cannot use (trainables/device.py: GPUUnavailableError)
ends the same way before it builds anything: the same kind of last result, its one-line reason
(torch's CUDA build, the driver found, the node) under `contract.DIVERGED`. Retrying it would
only meet the same driver again, and it must never train on the CPU instead.

Every epoch's report also says which device trained it (`device`: the GPU's name, or "cpu"),
for trials.csv and the report.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from visiontune.trainables.contract import Trainable, TrainContext, divergence_result
from visiontune.trainables.device import (
    GPUUnavailableError,
    assigned_device,
    device_label,
    releasing_memory,
)

DEVICE = "device"  # the reported key naming the device an epoch trained on


def trial_cpus() -> int:
    """CPU cores Ray reserved for this trial (torch should use that many threads); a fractional
    share rounds down, to at least one thread."""
    from ray import tune

    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    return max(1, int(cpus))


def trial_device() -> str:
    """The device of this Ray worker's trial or task: CUDA only when Ray assigned it a GPU;
    GPUUnavailableError when that GPU is unusable (trainables/device.py: pick_device)."""
    import ray

    return assigned_device(ray.get_gpu_ids())


def run_trial(config: dict[str, Any], task: str | Trainable, data: Any) -> None:
    """Ray Tune's trainable for every task (`task`: its name, or the task object itself):
    train `config` on `data`, one `tune.report(metrics, checkpoint)` per epoch; a restored
    trial continues from its checkpoint's epoch; a diverged one reports why and ends (see the
    module docstring)."""
    import ray
    from ray import tune

    from visiontune.sweep.compat import allow_slow_trial_exit
    from visiontune.trainables import load_task

    allow_slow_trial_exit()  # read by Ray in this process when the next trial reuses it
    task = load_task(task) if isinstance(task, str) else task
    settings = task.build_config(config, "trial config")
    torch.set_num_threads(trial_cpus())
    try:
        device = trial_device()
    except GPUUnavailableError as unusable:  # final: reported, never retried (module docstring)
        tune.report(divergence_result(task.METRICS, unusable))
        return
    report = functools.partial(_report, device=device_label(device, ray.get_gpu_ids()))
    last: dict[str, Any] | None = None
    # The task's scratch files live in the trial's working directory while it runs; what
    # lasts is what it reports.
    with (
        releasing_memory(device),
        tempfile.TemporaryDirectory(prefix=f"{task.name}-", dir=Path.cwd()) as workdir,
        _restored(tune.get_checkpoint()) as restore,
    ):
        try:
            task.train(settings, data, TrainContext(device, Path(workdir), report, restore))
        except FloatingPointError as diverged:  # the traceback's frames go with the block
            last = divergence_result(task.METRICS, diverged)
    if last is not None:  # reported once the session's memory is released
        tune.report(last)


def _report(metrics: dict[str, float], checkpoint_dir: Path, device: str) -> None:
    from ray import tune

    # report() persists the checkpoint before it returns: the directory may go away after
    checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir))
    tune.report({**metrics, DEVICE: device}, checkpoint=checkpoint)


@contextmanager
def _restored(checkpoint: Any) -> Iterator[Path | None]:
    """The trial's checkpoint as a local directory while training runs, or None."""
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as directory:
        yield Path(directory)
