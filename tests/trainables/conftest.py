"""Fixtures shared by the trainables' tests."""

from __future__ import annotations

import pytest

from visiontune.trainables import device, session
from visiontune.trainables.yolo import evaluate as yolo_evaluate


@pytest.fixture
def on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluate checkpoints on the CPU even where a GPU is visible: a test that compares an
    evaluation with a float32 CPU result, or demands identical numbers twice, would otherwise
    compare bfloat16/float16/TF32 GPU arithmetic (and its nondeterminism) with it."""
    for module in (device, session, yolo_evaluate):  # each module that looks it up by name
        monkeypatch.setattr(module, "local_device", lambda: "cpu")
