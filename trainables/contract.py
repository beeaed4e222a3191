"""The trainable contract: what every task (classifier, Faster R-CNN, YOLO) gives the sweep,
`visiontune train` and the report. Written once here; `tests/trainables/test_contract.py` checks
every task against it.

A task is an object (each task module's `TASK`), found by name with `load_task`. It knows nothing
of Ray: `visiontune.trainables.tune_edge.run_trial` is the one function that drives a task inside
a Ray Tune trial, and `visiontune train` drives the same `train` without Ray.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

DIVERGED = "diverged"
"""The key of the one result a diverged Tune trial reports last: why it diverged, as
"FloatingPointError: <message>". Ray's FailureConfig retries a trial that raises, as if its
worker had died, so `tune_edge.run_trial` ends a diverged trial with this result instead; the
sweep's ledger, searcher, schedulers, TensorBoard and checkpoint choice read it (through
`diverged_reason`) as the trial's ERROR. Its metrics are NaN: none of them was measured."""


def diverged_reason(result: Mapping[str, Any] | None) -> str | None:
    """Why the trial that reported `result` diverged; None for an ordinary epoch's result."""
    reason = (result or {}).get(DIVERGED)
    return reason if isinstance(reason, str) and reason else None


def divergence_result(metrics: tuple[str, ...], error: Exception) -> dict[str, Any]:
    """The last result of a trial that must end once, not be retried: its training diverged
    (FloatingPointError) or Ray gave it a GPU torch cannot use (trainables/device.py). Every
    metric NaN (Ray requires the sweep's metric in each result) and the reason under
    DIVERGED."""
    values: dict[str, Any] = {name: math.nan for name in metrics if name != "epoch"}
    return {**values, DIVERGED: f"{type(error).__name__}: {error}"}


EpochCallback = Callable[[dict[str, float], Path], None]
"""Called once per trained epoch with the epoch's metrics (every name in METRICS, `epoch`
counting from 1) and a directory holding that epoch's complete checkpoint. The directory is
only valid during the call: copy what must outlive it."""


@dataclass(frozen=True)
class TrainContext:
    """Where and how one `train` call runs, as its caller (a Tune trial or `visiontune train`)
    decides it."""

    device: str
    """"cpu", or "cuda:N": the GPU Ray assigned the trial (trainables/device.py), the first
    visible one outside Ray."""
    workdir: Path
    """An empty scratch directory the task may use until `train` returns."""
    on_epoch: EpochCallback
    """Called after each epoch's validation with its metrics and checkpoint."""
    restore: Path | None = None
    """A directory that an earlier `on_epoch` was given (or a copy of it): training continues
    at the epoch after it, and returns at once if that was the last."""


@dataclass(frozen=True)
class InferenceModel:
    """A trained checkpoint ready to predict: `model(preprocess(images))`.

    `preprocess` takes what `visiontune.data` decodes an image file into (a uint8 array, H x W
    for grey, H x W x 3 RGB), a list of those, or a uint8 batch N x C x H x W as a decoded
    dataset split holds it, and returns the model's input: the checkpoint's own size, channels
    and pixel statistics, exactly as training and `evaluate_checkpoint` prepare images."""

    model: Any
    """In eval mode on its device. A classifier gives logits, N x len(classes); a detector one
    dict per image: "boxes" (float32 n x 4, x1 y1 x2 y2 in pixels of the image as given),
    "scores" (n,) and "labels" (int64 (n,), indices into `classes`)."""
    preprocess: Callable[[Any], Any]
    classes: tuple[str, ...]
    """The class names, in the order of the model's outputs."""


@runtime_checkable
class Trainable(Protocol):
    """One kind of training run whose hyperparameters a sweep searches."""

    name: str
    """The task's name in a spec's `task:` key."""

    Config: type
    """Its hyperparameters with defaults and bounds (a frozen pydantic model; an unknown name
    or an impossible value is a validation error)."""

    METRICS: tuple[str, ...]
    """The names every epoch reports, `epoch` included; a spec's `metric` is one of them."""

    DATA_FORMAT: str
    """The dataset format `visiontune.data.load_dataset` decodes for it: imagefolder | yolo."""

    def build_config(self, values: Mapping[str, Any], where: str) -> Any:
        """`Config` from its defaults overridden by `values`; InputError naming `where` and the
        key on an unknown name, a wrong type or a value out of bounds."""
        ...

    def train(self, config: Any, data: Any, context: TrainContext) -> None:
        """Train `config` on `data` epoch by epoch up to `config.epochs` on `context.device`,
        calling `context.on_epoch` after each epoch's validation with its metrics and
        checkpoint, continuing from `context.restore` if given. A loss that becomes NaN/inf
        raises FloatingPointError."""
        ...

    def evaluate_checkpoint(self, checkpoint_dir: Path, data: Any, split: str) -> dict[str, Any]:
        """Metrics of the checkpoint in `checkpoint_dir` on `split` of `data`, as
        `<split>_<metric>` numbers (None where undefined) plus task-specific detail such as
        `per_class`; JSON-ready. Runs on the GPU Ray assigned, or any GPU outside Ray."""
        ...

    def load_model(self, checkpoint_dir: Path, data: Any, device: str = "cpu") -> InferenceModel:
        """The model of the checkpoint in `checkpoint_dir` (a directory an `on_epoch` was
        given, or a copy of it), loaded the way `evaluate_checkpoint` loads it, ready for
        inference on `device`. `data` is the dataset it was trained on: its classes, and the
        image size and pixel statistics the model's input is prepared with, come from it."""
        ...
