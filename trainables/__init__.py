"""Trainables: one module per task. Each exposes `Config` (typed defaults), `METRICS`,
`run(config, data)` (the only Ray-aware function) and plain-PyTorch building blocks."""

from __future__ import annotations

import importlib
from types import ModuleType

from visiontune.errors import InputError

TASKS = {
    "classifier": "visiontune.trainables.classifier",
    "faster_rcnn": "visiontune.trainables.faster_rcnn",
    "yolo": "visiontune.trainables.yolo",
}


def load_task(name: str, where: str = "task") -> ModuleType:
    if name not in TASKS:
        raise InputError(f"{where}: unknown task {name!r} (known: {', '.join(sorted(TASKS))})")
    return importlib.import_module(TASKS[name])
