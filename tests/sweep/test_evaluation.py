"""Which checkpoints a finished sweep tests (visiontune/sweep/evaluation.py: checkpoints_to_test),
over stand-ins for Ray's results: each seed point's best, and the tuned best; never an errored
or diverged trial's."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
from support import FIXTURES

from visiontune.spec import load_spec
from visiontune.sweep.evaluation import checkpoints_to_test, trial_sized_task
from visiontune.trainables.contract import divergence_result

SPEC = load_spec(FIXTURES / "diverging.yaml")  # seeds: sane (lr 1e-3), diverging (lr 1e10)


@dataclass
class FakeResult:
    """What checkpoints_to_test reads of a `ray.tune.Result`."""

    trial_id: str
    config: dict[str, Any]
    epochs_val_acc: list[float]
    metrics: dict[str, Any] = field(default_factory=dict)  # the trial's last result
    error: Exception | None = None

    @property
    def path(self) -> str:
        return f"/storage/exp/trial_{self.trial_id}"

    @property
    def best_checkpoints(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (f"checkpoint_{epoch}", {"training_iteration": epoch, "epoch": epoch, "val_acc": acc})
            for epoch, acc in enumerate(self.epochs_val_acc, start=1)
        ]


def _diverged_after(epochs: list[float]) -> dict[str, Any]:
    error = FloatingPointError("train_loss became nan (diverged; try a lower lr)")
    return {**divergence_result(("val_acc", "epoch"), error), "training_iteration": len(epochs) + 1}


def test_a_diverged_trial_is_never_tested_however_good_its_epochs_before():
    sane = FakeResult("sane", {**SPEC.fixed, "lr": 1e-3}, [0.4, 0.5])
    diverging = FakeResult("div", {**SPEC.fixed, "lr": 1e10}, [0.9])
    diverging.metrics = _diverged_after(diverging.epochs_val_acc)
    other = FakeResult("other", {**SPEC.fixed, "lr": 1.0}, [0.95])
    other.metrics = _diverged_after(other.epochs_val_acc)
    picks = checkpoints_to_test(SPEC, [sane, diverging, other])
    assert [(p["role"], p["result"].trial_id) for p in picks] == [
        ("sane", "sane"),
        ("tuned best", "sane"),
    ]
    assert picks[1]["pick"][1]["epoch"] == 2


def test_an_errored_trial_is_never_tested():
    sane = FakeResult("sane", {**SPEC.fixed, "lr": 1e-3}, [0.4])
    crashed = FakeResult("crash", {**SPEC.fixed, "lr": 0.5}, [0.9], error=RuntimeError("boom"))
    assert [p["result"].trial_id for p in checkpoints_to_test(SPEC, [sane, crashed])] == [
        "sane",
        "sane",
    ]


def _worker_pid() -> int:
    return os.getpid()


@pytest.mark.ray  # a local Ray node
def test_a_test_split_evaluation_holding_a_gpu_gets_a_fresh_worker_each_time():
    """max_calls=1, which Ray sets only for GPUs declared in @ray.remote: GPUs given through
    .options() (a trial's resources) would keep one worker, and its CUDA context, across tasks."""
    import ray

    # the task lives in this test module, which Ray's workers cannot import by name
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=1, num_gpus=1, include_dashboard=False)
    try:
        on_gpu = trial_sized_task(_worker_pid, 1, 1)
        gpu_pids = [ray.get(on_gpu.remote()) for _ in range(2)]
        on_cpu = trial_sized_task(_worker_pid, 1, 0)
        cpu_pids = [ray.get(on_cpu.remote()) for _ in range(2)]
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert gpu_pids[0] != gpu_pids[1]
    assert cpu_pids[0] == cpu_pids[1]  # CPU evaluations reuse their worker (no torch re-import)
