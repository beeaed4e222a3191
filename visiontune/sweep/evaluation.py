"""After a sweep: which checkpoints the test table needs (each seed configuration's best, and the
tuned best's), and their evaluation on the test split as Ray tasks with a trial's resources.

"Best" is `visiontune.best.Objective`: a trial's best kept checkpoint is its best epoch (the
later one on ties, as the checkpoint retention keeps), and the tuned best is the trial whose
best epoch ranks first (ties: the smaller trial id). An errored trial is never picked, a diverged
one (`contract.DIVERGED` in its last result, trainables/tune_edge.py) included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visiontune.best import Objective
from visiontune.spec import SweepSpec
from visiontune.trainables.contract import diverged_reason


def trial_id_of(result: Any) -> str:
    """The Tune trial id of a Ray Tune result (its directory is trial_<id>)."""
    return Path(result.path).name.removeprefix("trial_")


def best_checkpoint(result: Any, objective: Objective) -> tuple[Any, dict] | None:
    """The trial's best kept (checkpoint, metrics) by `objective`; None without a scored one."""
    kept = sorted(
        result.best_checkpoints or [], key=lambda item: item[1].get("training_iteration", 0)
    )
    index = objective.best_epoch_index([metrics for _, metrics in kept])
    return None if index is None else kept[index]


def checkpoints_to_test(spec: SweepSpec, results: Any) -> list[dict[str, Any]]:
    """What the test table needs: {"role", "result", "pick": (checkpoint, metrics)} for each
    seed configuration's trial, then for the tuned best."""
    objective = Objective(spec.metric, spec.mode)
    picks: list[dict[str, Any]] = []
    candidates: dict[str, dict[str, Any]] = {}
    for result in results:
        if result.error is not None or diverged_reason(result.metrics):
            continue
        pick = best_checkpoint(result, objective)
        if pick is None:
            continue
        item = {"result": result, "pick": pick}
        name = spec.seed_name(result.config)
        if name is not None:
            picks.append({"role": name, **item})
        candidates[trial_id_of(result)] = item
    best = objective.best_trial(
        (trial_id, item["pick"][1][objective.metric]) for trial_id, item in candidates.items()
    )
    if best is not None:
        picks.append({"role": "tuned best", **candidates[best]})
    return picks


def evaluate_on_test_split(task_name: str, checkpoint: Any, data: Any) -> dict[str, Any]:
    """Runs as a Ray task: the task's test-split metrics of one checkpoint."""
    from visiontune.trainables import load_task

    with checkpoint.as_directory() as directory:
        return load_task(task_name).evaluate_checkpoint(Path(directory), data, "test")


def trial_sized_task(function: Any, num_cpus: float, num_gpus: float) -> Any:
    """`function` as a Ray task with a trial's resources. One that holds a GPU runs in a fresh
    worker process each time (max_calls=1): the CUDA context and whatever a library keeps
    cached on the GPU leave with the process. Ray gives a task that default only when
    `@ray.remote` itself declares GPUs, not for GPUs given through `.options()` (ray 2.60.0,
    remote_function.py), so it is declared here."""
    import ray

    return ray.remote(max_calls=1 if num_gpus > 0 else 0)(function).options(
        num_cpus=num_cpus, num_gpus=num_gpus
    )


def evaluate_on_test(spec: SweepSpec, data: Any, results: Any) -> list[dict[str, Any]]:
    """Evaluate the chosen checkpoints on the test split as Ray tasks with a trial's resources;
    one row per checkpoint: role, trial, epoch, its validation metrics and its test metrics."""
    import ray

    from visiontune.trainables import load_task

    metrics = [m for m in load_task(spec.task).METRICS if m != "epoch"]
    remote = trial_sized_task(evaluate_on_test_split, spec.cpus_per_trial, spec.gpus_per_trial)
    data_ref = ray.put(data)
    picks = checkpoints_to_test(spec, results)
    futures = [remote.remote(spec.task, item["pick"][0], data_ref) for item in picks]
    rows = []
    for item, test in zip(picks, ray.get(futures), strict=True):
        validation = item["pick"][1]
        row = {
            "role": item["role"],
            "trial_id": validation.get("trial_id"),
            "epoch": validation.get("epoch"),
        }
        row.update({k: validation.get(k) for k in metrics})
        row.update(test)
        rows.append(row)
    return rows
