"""Trainables: one module per task, each exposing `TASK`, an object that satisfies the trainable
contract written down in `contract.py` (config type, metrics, data format, epoch-by-epoch training
with resume, checkpoint evaluation). `tune_edge.run_trial` is the only Ray-aware function."""

from __future__ import annotations

import importlib

from visiontune.errors import InputError
from visiontune.trainables.contract import Trainable

TASKS = {
    "classifier": "visiontune.trainables.classifier",
    "faster_rcnn": "visiontune.trainables.faster_rcnn",
    "yolo": "visiontune.trainables.yolo",
}


def load_task(name: str, where: str = "task") -> Trainable:
    """The task called `name`; InputError naming `where` when there is none."""
    if not isinstance(name, str) or name not in TASKS:
        known = ", ".join(sorted(TASKS))
        raise InputError(f"{where}: unknown task {str(name)[:80]!r} (known: {known})")
    return importlib.import_module(TASKS[name]).TASK
